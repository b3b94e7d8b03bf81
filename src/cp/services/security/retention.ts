/**
 * The retention pass: retire expired blacklist entries, then compact both change logs up to the
 * lowest cursor over all nodes (see change-log.ts for what may be pruned).
 */

import { sql, type Transaction } from "kysely";
import { RETENTION_PASS_INTERVAL_MS } from "../../../shared/config/defaults.js";
import type { ControlSchema } from "../../../shared/db/index.js";
import type { DeltaStream } from "../../../shared/node-protocol/index.js";
import { every } from "../../../shared/time/index.js";
import type { CpContext } from "../context.js";
import { retireExpiredBlacklistEntries } from "./blacklist.js";
import { type Db, lockLog } from "./change-log.js";

export interface CompactionReport {
  stream: DeltaStream;
  /** Lowest cursor over all nodes (null: no nodes, nothing pruned). */
  floor: number | null;
  pruned: number;
  prunedThrough: number;
}

/** min(cursor) over every existing node, a node without a cursor row counting as 0; null when there are no nodes. */
async function cursorFloor(db: Db, stream: DeltaStream): Promise<number | null> {
  const row = await db
    .selectFrom("nodes as n")
    .leftJoin("node_delta_cursors as c", (join) => join.onRef("c.node_id", "=", "n.id").on("c.stream", "=", stream))
    .select((eb) => [eb.fn.countAll<number>().as("nodes"), eb.fn.min(eb.fn.coalesce("c.cursor", sql<number>`0`)).as("floor")])
    .executeTakeFirstOrThrow();
  return Number(row.nodes) === 0 ? null : Number(row.floor ?? 0);
}

async function pruneEpochs(trx: Transaction<ControlSchema>, floor: number): Promise<number[]> {
  const rows = await trx
    .deleteFrom("auth_epoch_changes as e")
    .where("e.id", "<=", floor)
    .where(({ exists, selectFrom }) =>
      exists(
        selectFrom("auth_epoch_changes as newer")
          .select("newer.id")
          .whereRef("newer.user_id", "=", "e.user_id")
          .where(sql<boolean>`(newer.app_id = e.app_id or (newer.app_id is null and e.app_id is null))`)
          .whereRef("newer.id", ">", "e.id"),
      ),
    )
    .returning("id")
    .execute();
  return rows.map((r) => Number(r.id));
}

async function pruneBlacklist(trx: Transaction<ControlSchema>, floor: number): Promise<number[]> {
  const rows = await trx
    .deleteFrom("server_blacklist_changes")
    .where("entry_id", "in", (eb) =>
      eb.selectFrom("server_blacklist_changes as r").select("r.entry_id").where("r.op", "=", "remove").where("r.id", "<=", floor),
    )
    .returning("id")
    .execute();
  return rows.map((r) => Number(r.id));
}

async function compactLog(ctx: CpContext, stream: DeltaStream): Promise<CompactionReport> {
  return ctx.controlDb.transaction().execute(async (trx) => {
    await lockLog(trx, stream);
    const floor = await cursorFloor(trx, stream);
    const retention = await trx.selectFrom("delta_retention").select("pruned_through").where("stream", "=", stream).executeTakeFirst();
    const previous = Number(retention?.pruned_through ?? 0);
    if (floor === null || floor === 0) return { stream, floor, pruned: 0, prunedThrough: previous };
    const ids = stream === "auth-epochs" ? await pruneEpochs(trx, floor) : await pruneBlacklist(trx, floor);
    const prunedThrough = ids.reduce((max, id) => Math.max(max, id), previous);
    if (prunedThrough > previous) {
      const now = ctx.clock.now();
      await trx
        .insertInto("delta_retention")
        .values({ stream, pruned_through: prunedThrough, pruned_at: now })
        .onConflict((oc) => oc.column("stream").doUpdateSet({ pruned_through: prunedThrough, pruned_at: now }))
        .execute();
    }
    return { stream, floor, pruned: ids.length, prunedThrough };
  });
}

/** The periodic retention pass: retire expired blacklist entries, then compact both logs. */
export async function compactChangeLogs(ctx: CpContext): Promise<CompactionReport[]> {
  await retireExpiredBlacklistEntries(ctx);
  const reports = [await compactLog(ctx, "auth-epochs"), await compactLog(ctx, "blacklist")];
  for (const report of reports) {
    if (report.pruned > 0)
      ctx.log.category("CP Agent").info("delta.compacted", {
        stream: report.stream,
        floor: report.floor,
        pruned: report.pruned,
        pruned_through: report.prunedThrough,
      });
  }
  return reports;
}

/** Runs compactChangeLogs every `intervalMs` (background: never keeps the process alive); returns the stop function. */
export function scheduleRetentionPass(ctx: CpContext, intervalMs = RETENTION_PASS_INTERVAL_MS): () => void {
  let running = false;
  return every(
    ctx.scheduler,
    intervalMs,
    () => {
      if (running) return;
      running = true;
      compactChangeLogs(ctx)
        .catch((error: unknown) => ctx.log.category("CP Agent").error("delta.compaction_failed", { error: (error as Error).message }))
        .finally(() => {
          running = false;
        });
    },
    { background: true },
  );
}
