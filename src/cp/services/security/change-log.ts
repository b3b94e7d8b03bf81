/**
 * Channel 3's two append-only change logs — the server blacklist and per-user auth epochs —
 * and what every writer and reader of them shares. The admin side writes them (blacklist.ts,
 * auth-epochs.ts), nodes read them (deltas.ts) and the retention pass compacts them
 * (retention.ts).
 *
 * Ordering: ids are the nodes' cursors, so a reader must never see id N+1 before N has
 * committed. SQLite has one writer at a time; on PostgreSQL every writer of a log takes that
 * log's transaction-scoped advisory lock before it draws an id, so ids commit in order.
 *
 * Retention is compaction, never truncation: a change is deleted only when every node's cursor
 * has passed it AND it is superseded (an epoch change with a newer one for the same user+app; a
 * blacklist entry's add+remove pair once it is removed). Replaying the retained log from 0 thus
 * always rebuilds the current state. `delta_retention.pruned_through` is the highest id ever
 * pruned; a node asking from inside the pruned range with a cursor it could not have reached by
 * a compacted replay is told so (410 DELTA_CURSOR_EXPIRED) and replays from 0.
 */
import { type Kysely, sql, type Transaction } from "kysely";
import { type ControlSchema, dialectOf } from "../../../shared/db/index.js";
import type { DeltaStream } from "../../../shared/node-protocol/index.js";

/** pg_advisory_xact_lock keys, one per log ("ANBL", "ANEP"): writers of one log queue, the other log is unaffected. */
const ADVISORY_LOCK: Record<DeltaStream, number> = { blacklist: 0x414e424c, "auth-epochs": 0x414e4550 };
export const LOG_TABLE = { blacklist: "server_blacklist_changes", "auth-epochs": "auth_epoch_changes" } as const satisfies Record<
  DeltaStream,
  keyof ControlSchema
>;

export type Db = Kysely<ControlSchema>;

/** Serialises writers of one log on PostgreSQL (no-op on SQLite, which has a single writer). */
export async function lockLog(trx: Transaction<ControlSchema>, stream: DeltaStream): Promise<void> {
  if (dialectOf(trx) === "postgres") await sql`select pg_advisory_xact_lock(${ADVISORY_LOCK[stream]})`.execute(trx);
}
