/**
 * Channel 1 commands, node side: commands/pull and per-command results. A node
 * receives its own targeted commands and the broadcasts created at or after the node itself,
 * never expired ones, never ones it already reported a result for (docs/node-api.md).
 */
import { AuthNexusError, fieldInvalid } from "../../../shared/errors/index.js";
import {
  type CommandKind,
  type CommandResultRequest,
  type CommandsPullResponse,
  MAX_COMMAND_OUTPUT_BYTES,
  MAX_COMMAND_PAGE,
  type PulledCommand,
} from "../../../shared/node-protocol/index.js";
import type { CpContext } from "../context.js";
import type { CallingNode } from "../nodes/identity.js";

/** Ids are newId("cmd"); anything else cannot name a command and is a 404 without a query. */
const COMMAND_ID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * `since` from the query string: a non-negative decimal integer and nothing else (no sign,
 * fraction, exponent or whitespace); the upper bound (the head) is checked against the DB.
 */
export function parseSince(raw: string | undefined): number {
  if (raw === undefined || !/^\d{1,16}$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
    throw fieldInvalid("since", "must be a non-negative integer (the last seq this node has seen; 0 for all)");
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
  if (since > head) throw fieldInvalid("since", `is ahead of the newest command (head ${head})`, { since, head });
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
