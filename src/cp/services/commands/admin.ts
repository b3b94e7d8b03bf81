/**
 * Commands from admins to nodes, admin side: queue one for a node or for every node
 * (`target_node_id` null), list them, and show where one stands on each node it is meant for.
 * `seq` orders commands and is the node's pull cursor (node side: ./node-channel.ts).
 *
 * Sequence visibility: a node advances its cursor past everything it was shown, so seq N+1 must
 * never become visible before N. On PostgreSQL (bigserial, concurrent writers) inserts take a
 * transaction advisory lock so commits happen in seq order; SQLite serialises writers anyway.
 */

import { sql } from "kysely";
import { DEFAULT_COMMAND_TTL_SECONDS, MAX_COMMAND_TTL_SECONDS } from "../../../shared/config/defaults.js";
import type { CommandsTable } from "../../../shared/db/control-schema.js";
import { dialectOf } from "../../../shared/db/index.js";
import { AuthNexusError, fieldInvalid, parseOrThrow } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import { canonicalJson } from "../../../shared/json/index.js";
import { COMMAND_PAYLOADS, type CommandKind } from "../../../shared/node-protocol/index.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";

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

const COLUMNS = ["id", "seq", "kind", "payload", "target_node_id", "created_at", "created_by", "expires_at"] as const;

function toView(row: CommandRow): CommandView {
  return { ...row, seq: Number(row.seq), kind: row.kind as CommandKind, payload: JSON.parse(row.payload) as Record<string, unknown> };
}

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
    throw fieldInvalid("ttl_seconds", `must be an integer from 1 to ${MAX_COMMAND_TTL_SECONDS}`);
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
  const page = await paginate(base, request, (q) => q.select(COLUMNS).orderBy("seq", "desc"), toView);
  const counts =
    page.items.length === 0
      ? []
      : await db
          .selectFrom("command_results")
          .select(["command_seq", "status"])
          .select((eb) => eb.fn.countAll<number>().as("n"))
          .where(
            "command_seq",
            "in",
            page.items.map((c) => c.seq),
          )
          .groupBy(["command_seq", "status"])
          .execute();
  const items = page.items.map((command): CommandListItem => {
    const results = { succeeded: 0, failed: 0, rejected: 0 };
    for (const c of counts)
      if (Number(c.command_seq) === command.seq && c.status in results) results[c.status as keyof typeof results] = Number(c.n);
    return { ...command, results };
  });
  return { ...page, items };
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

async function requireNode(ctx: CpContext, nodeId: string): Promise<void> {
  const node = await ctx.controlDb.selectFrom("nodes").select("id").where("id", "=", nodeId).executeTakeFirst();
  if (!node) throw new AuthNexusError("NOT_FOUND", { message: "Node not found." });
}

function parsePayload(kind: CommandKind, payload: unknown): Record<string, unknown> {
  return parseOrThrow(COMMAND_PAYLOADS[kind], payload, ["payload"]) as Record<string, unknown>;
}
