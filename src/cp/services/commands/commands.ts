/**
 * Commands from admins to nodes (issue 3 item 3; the seed's commands/pull and per-command
 * results). A command targets one node or every node (`target_node_id` null); `seq` orders them
 * and is the node's pull cursor. Delivery rules (BRIEF): a node receives its own targeted
 * commands and the broadcasts created at or after the node itself, never expired ones, never
 * ones it already reported a result for.
 *
 * Sequence visibility: a node advances its cursor past everything it was shown, so seq N+1 must
 * never become visible before N. On PostgreSQL (bigserial, concurrent writers) inserts take a
 * transaction advisory lock so commits happen in seq order; SQLite serialises writers anyway.
 */
import { sql } from "kysely";
import type { CommandsTable } from "../../../shared/db/control-schema.js";
import { dialectOf } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import {
  COMMAND_PAYLOADS,
  type CommandKind,
  type CommandResultRequest,
  type CommandsPullResponse,
  MAX_COMMAND_OUTPUT_BYTES,
  MAX_COMMAND_PAGE,
  type PulledCommand,
} from "../../../shared/node-protocol/index.js";
import { canonicalJson } from "../configs/configs.js";
import type { Actor, CpContext } from "../context.js";
import type { CallingNode } from "../nodes/identity.js";
import { type Page, type PageRequest, pageOffset, toPage } from "../pagination.js";

/** A command nobody picked up within this long stops being delivered (seconds). */
export const DEFAULT_COMMAND_TTL_SECONDS = 24 * 3600;
export const MAX_COMMAND_TTL_SECONDS = 30 * 86_400;
/** PostgreSQL advisory lock (two-int form: class, key) serialising command inserts. */
const COMMAND_LOG_LOCK = sql`select pg_advisory_xact_lock(${sql.lit(0x41_4e_43_4d)}, ${sql.lit(1)})`; // "ANCM"

export type CommandNodeStatus = "succeeded" | "failed" | "rejected" | "pending" | "expired";

export interface CommandView {
  id: string;
  seq: number;
  kind: CommandKind;
  payload: Record<string, unknown>;
  /** null: every node (a broadcast). */
  target_node_id: string | null;
  created_at: number;
  created_by: string | null;
  expires_at: number | null;
}

type CommandRow = Omit<CommandsTable, "seq"> & { seq: number };

/** Ids are newId("cmd"); anything else cannot name a command and is a 404 without a query. */
const COMMAND_ID = /^[A-Za-z0-9_-]{1,64}$/;

const COLUMNS = ["id", "seq", "kind", "payload", "target_node_id", "created_at", "created_by", "expires_at"] as const;

function toView(row: CommandRow): CommandView {
  return { ...row, seq: Number(row.seq), kind: row.kind as CommandKind, payload: JSON.parse(row.payload) as Record<string, unknown> };
}

// ---- admin ---------------------------------------------------------------------------------

export interface NewCommand {
  kind: CommandKind;
  payload?: unknown;
  ttlSeconds?: number | undefined;
}

/**
 * Queues a command for one node (`targetNodeId`) or every node (null), then hints the node(s).
 * The target must exist; its status does not matter (disabled and provisioning nodes keep
 * their management channels).
 */
export async function queueCommand(ctx: CpContext, actor: Actor, targetNodeId: string | null, input: NewCommand): Promise<CommandView> {
  const payload = parsePayload(input.kind, input.payload ?? {});
  const ttl = input.ttlSeconds ?? DEFAULT_COMMAND_TTL_SECONDS;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_COMMAND_TTL_SECONDS)
    throw invalidField("ttl_seconds", `must be an integer from 1 to ${MAX_COMMAND_TTL_SECONDS}`);
  if (targetNodeId !== null) await requireNode(ctx, targetNodeId);
  const now = ctx.clock.now();
  const row = {
    id: newId("cmd"),
    kind: input.kind,
    payload: canonicalJson(payload),
    target_node_id: targetNodeId,
    created_at: now,
    created_by: actor.agentId,
    expires_at: now + ttl * 1000,
  };
  const inserted = await ctx.controlDb.transaction().execute(async (trx) => {
    if (dialectOf(trx) === "postgres") await COMMAND_LOG_LOCK.execute(trx);
    return trx.insertInto("commands").values(row).returning("seq").executeTakeFirstOrThrow();
  });
  const view = toView({ ...row, seq: inserted.seq });
  ctx.log
    .category("CP Agent")
    .info("command.queued", { command_id: view.id, seq: view.seq, kind: view.kind, target_node_id: targetNodeId, agent_id: actor.agentId });
  ctx.events.publish("command.pending", targetNodeId);
  return view;
}

export interface CommandFilter {
  /** Commands this node is meant to receive: its targeted ones and the broadcasts it is eligible for. */
  nodeId?: string | undefined;
  kind?: CommandKind | undefined;
}

export interface CommandListItem extends CommandView {
  results: Record<"succeeded" | "failed" | "rejected", number>;
}

/** Newest first. */
export async function listCommands(ctx: CpContext, filter: CommandFilter, request: PageRequest): Promise<Page<CommandListItem>> {
  const db = ctx.controlDb;
  const node =
    filter.nodeId === undefined
      ? undefined
      : await db.selectFrom("nodes").select("created_at").where("id", "=", filter.nodeId).executeTakeFirst();
  const base = db
    .selectFrom("commands")
    .$if(filter.kind !== undefined, (q) => q.where("kind", "=", filter.kind as string))
    .$if(filter.nodeId !== undefined, (q) =>
      q.where((eb) =>
        eb.or([
          eb("target_node_id", "=", filter.nodeId as string),
          // A deleted node keeps only its targeted history (its eligibility died with it).
          ...(node ? [eb.and([eb("target_node_id", "is", null), eb("created_at", ">=", node.created_at)])] : []),
        ]),
      ),
    );
  const [rows, count] = await Promise.all([
    base.select(COLUMNS).orderBy("seq", "desc").limit(request.pageSize).offset(pageOffset(request)).execute(),
    base.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
  ]);
  const counts =
    rows.length === 0
      ? []
      : await db
          .selectFrom("command_results")
          .select(["command_seq", "status"])
          .select((eb) => eb.fn.countAll<number>().as("n"))
          .where(
            "command_seq",
            "in",
            rows.map((r) => r.seq),
          )
          .groupBy(["command_seq", "status"])
          .execute();
  const items = rows.map((row): CommandListItem => {
    const results = { succeeded: 0, failed: 0, rejected: 0 };
    for (const c of counts)
      if (Number(c.command_seq) === Number(row.seq) && c.status in results) results[c.status as keyof typeof results] = Number(c.n);
    return { ...toView(row), results };
  });
  return toPage(items, request, Number(count.n));
}

export interface CommandNodeResult {
  node_id: string;
  /** null when the target node has since been deleted. */
  node_name: string | null;
  status: CommandNodeStatus;
  output: unknown;
  reported_at: number | null;
}

export interface CommandDetail extends CommandView {
  results: CommandNodeResult[];
  summary: Record<CommandNodeStatus, number>;
}

/**
 * One command and where it stands on each node it is meant for: its target, or for a broadcast
 * every existing node created at or before the command. A node without a result is "pending",
 * or "expired" once expires_at has passed.
 */
export async function getCommand(ctx: CpContext, commandId: string): Promise<CommandDetail> {
  const db = ctx.controlDb;
  const row = await db.selectFrom("commands").select(COLUMNS).where("id", "=", commandId).executeTakeFirst();
  if (!row) throw new AuthNexusError("NOT_FOUND", { message: "Command not found." });
  const command = toView(row);
  const reported = await db
    .selectFrom("command_results")
    .select(["node_id", "status", "output", "reported_at"])
    .where("command_seq", "=", command.seq)
    .execute();
  const byNode = new Map(reported.map((r) => [r.node_id, r]));
  const nodes =
    command.target_node_id === null
      ? await db.selectFrom("nodes").select(["id", "name"]).where("created_at", "<=", command.created_at).orderBy("name").execute()
      : [
          {
            id: command.target_node_id,
            name: (await db.selectFrom("nodes").select("name").where("id", "=", command.target_node_id).executeTakeFirst())?.name ?? null,
          },
        ];
  const expired = command.expires_at !== null && command.expires_at <= ctx.clock.now();
  const summary: Record<CommandNodeStatus, number> = { succeeded: 0, failed: 0, rejected: 0, pending: 0, expired: 0 };
  const results = nodes.map((n): CommandNodeResult => {
    const result = byNode.get(n.id);
    const status = result ? (result.status as CommandNodeStatus) : expired ? "expired" : "pending";
    summary[status] += 1;
    return {
      node_id: n.id,
      node_name: n.name,
      status,
      output: result?.output ? (JSON.parse(result.output) as unknown) : null,
      reported_at: result?.reported_at ?? null,
    };
  });
  return { ...command, results, summary };
}

// ---- node side (Channel 1) -----------------------------------------------------------------

/**
 * `since` from the query string: a non-negative decimal integer and nothing else (no sign,
 * fraction, exponent or whitespace); the upper bound (the head) is checked against the DB.
 */
export function parseSince(raw: string | undefined): number {
  if (raw === undefined || !/^\d{1,16}$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
    throw invalidField("since", "must be a non-negative integer (the last seq this node has seen; 0 for all)");
  }
  return Number(raw);
}

/**
 * commands/pull: the commands after `since` this node should run, oldest first, one page at a
 * time. `next_since` is the last returned seq while more remain, else the head: the cursor
 * safely skips commands that are not for this node or are already done.
 */
export async function pullCommands(ctx: CpContext, node: CallingNode, since: number): Promise<CommandsPullResponse> {
  const db = ctx.controlDb;
  const head = Number(
    (
      await db
        .selectFrom("commands")
        .select((eb) => eb.fn.max("seq").as("head"))
        .executeTakeFirst()
    )?.head ?? 0,
  );
  if (since > head) throw invalidField("since", `is ahead of the newest command (head ${head})`, { since, head });
  const rows = await db
    .selectFrom("commands as c")
    .select(["c.id", "c.seq", "c.kind", "c.payload", "c.created_at", "c.expires_at"])
    .where("c.seq", ">", since)
    .where("c.seq", "<=", head)
    .where((eb) =>
      eb.or([eb("c.target_node_id", "=", node.id), eb.and([eb("c.target_node_id", "is", null), eb("c.created_at", ">=", node.createdAt)])]),
    )
    .where((eb) => eb.or([eb("c.expires_at", "is", null), eb("c.expires_at", ">", ctx.clock.now())]))
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom("command_results as r")
            .select("r.node_id")
            .whereRef("r.command_seq", "=", "c.seq")
            .where("r.node_id", "=", node.id),
        ),
      ),
    )
    .orderBy("c.seq")
    .limit(MAX_COMMAND_PAGE + 1)
    .execute();
  const hasMore = rows.length > MAX_COMMAND_PAGE;
  const page = rows.slice(0, MAX_COMMAND_PAGE);
  const commands = page.map(
    (r): PulledCommand => ({
      id: r.id,
      seq: Number(r.seq),
      kind: r.kind as CommandKind,
      payload: JSON.parse(r.payload) as Record<string, unknown>,
      created_at: r.created_at,
      expires_at: r.expires_at,
    }),
  );
  return { commands, next_since: hasMore ? (commands.at(-1)?.seq ?? since) : head, has_more: hasMore };
}

/**
 * commands/:cmd_id/result. The command must be one this node may see (its own targeted one or
 * a broadcast it is eligible for); anything else is the same 404 as an unknown id, so a node
 * learns nothing about other nodes' commands. A result for an expired command is still taken:
 * the node pulled it in time and ran it. A repeated report overwrites the earlier one (the
 * node's latest word wins, e.g. a retry after a lost response).
 */
export async function recordCommandResult(
  ctx: CpContext,
  node: CallingNode,
  commandId: string,
  result: CommandResultRequest,
): Promise<{ accepted: number }> {
  if (!COMMAND_ID.test(commandId)) throw new AuthNexusError("NOT_FOUND", { message: "Command not found." });
  const output = result.output === undefined ? null : JSON.stringify(result.output);
  if (output !== null && Buffer.byteLength(output) > MAX_COMMAND_OUTPUT_BYTES) {
    throw new AuthNexusError("BODY_TOO_LARGE", { message: `output is larger than ${MAX_COMMAND_OUTPUT_BYTES} bytes serialized.` });
  }
  const command = await ctx.controlDb
    .selectFrom("commands")
    .select(["seq", "kind", "target_node_id", "created_at"])
    .where("id", "=", commandId)
    .executeTakeFirst();
  const visible =
    command && (command.target_node_id === node.id || (command.target_node_id === null && command.created_at >= node.createdAt));
  if (!command || !visible) throw new AuthNexusError("NOT_FOUND", { message: "Command not found." });
  const now = ctx.clock.now();
  await ctx.controlDb
    .insertInto("command_results")
    .values({ command_seq: command.seq, node_id: node.id, status: result.status, output, reported_at: now })
    .onConflict((oc) =>
      oc.columns(["command_seq", "node_id"]).doUpdateSet((eb) => ({
        status: eb.ref("excluded.status"),
        output: eb.ref("excluded.output"),
        reported_at: eb.ref("excluded.reported_at"),
      })),
    )
    .execute();
  ctx.log.category("CP Agent").info("command.result", {
    node_id: node.id,
    command_id: commandId,
    seq: Number(command.seq),
    kind: command.kind,
    status: result.status,
  });
  return { accepted: 1 };
}

// ---- helpers -------------------------------------------------------------------------------

function parsePayload(kind: CommandKind, payload: unknown): Record<string, unknown> {
  const parsed = COMMAND_PAYLOADS[kind].safeParse(payload);
  if (parsed.success) return parsed.data as Record<string, unknown>;
  const problems = parsed.error.issues.map((issue) => ({
    field: ["payload", ...issue.path.map(String)].join("."),
    problem: issue.code === "unrecognized_keys" ? `unknown field(s): ${issue.keys.join(", ")}` : issue.message,
  }));
  const summary = problems.map((p) => `${p.field}: ${p.problem}`).join("; ");
  throw new AuthNexusError("VALIDATION_FAILED", { message: `Request failed validation: ${summary}`, publicDetail: problems });
}

async function requireNode(ctx: CpContext, nodeId: string): Promise<void> {
  const node = await ctx.controlDb.selectFrom("nodes").select("id").where("id", "=", nodeId).executeTakeFirst();
  if (!node) throw new AuthNexusError("NOT_FOUND", { message: "Node not found." });
}

function invalidField(field: string, problem: string, extra: Record<string, unknown> = {}): AuthNexusError {
  return new AuthNexusError("VALIDATION_FAILED", {
    message: `Request failed validation: ${field}: ${problem}`,
    publicDetail: [{ field, problem, ...extra }],
  });
}
