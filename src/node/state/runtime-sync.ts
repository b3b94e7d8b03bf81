/**
 * What Channel 3 writes to the Runtime DB: the applied blacklist, the applied auth epochs and
 * this node's cursors (sync_cursors, keyed by node id and stream). A page of changes and the
 * cursor that follows it commit in ONE transaction, so a crash can never leave the cursor past
 * changes that were not applied (or the reverse). Applying a page again changes nothing: every
 * node of a deployment may share one Runtime DB, so another node may already have applied it.
 */
import type { Kysely, Transaction } from "kysely";
import type { RuntimeSchema } from "../../shared/db/index.js";
import type { AuthEpochChange, BlacklistChange, BlacklistKind, DeltaStream } from "../../shared/node-protocol/index.js";
import type { BlacklistEntry } from "./blacklist-cache.js";

/** The three logs a node follows by cursor. */
export type CursorStream = "commands" | DeltaStream;

type Db = Kysely<RuntimeSchema> | Transaction<RuntimeSchema>;

/** Rows per multi-row statement: well inside SQLite's and PostgreSQL's parameter limits. */
const ROWS_PER_STATEMENT = 200;

export async function readCursor(db: Db, nodeId: string, stream: CursorStream): Promise<number> {
  const row = await db
    .selectFrom("sync_cursors")
    .select("cursor")
    .where("node_id", "=", nodeId)
    .where("stream", "=", stream)
    .executeTakeFirst();
  return row?.cursor ?? 0;
}

export async function writeCursor(
  db: Db,
  nodeId: string,
  stream: CursorStream | typeof BLACKLIST_REPLAY_MARKER,
  cursor: number,
  now: number,
): Promise<void> {
  await db
    .insertInto("sync_cursors")
    .values({ node_id: nodeId, stream, cursor, updated_at: now })
    .onConflict((oc) => oc.columns(["node_id", "stream"]).doUpdateSet({ cursor, updated_at: now }))
    .execute();
}

/** The net effect of a blacklist page: the last change per entry wins. */
export interface BlacklistPageEffect {
  added: BlacklistEntry[];
  removed: string[];
}

export function netBlacklistEffect(changes: readonly BlacklistChange[]): BlacklistPageEffect {
  const added: BlacklistEntry[] = [];
  const removed: string[] = [];
  for (const change of lastChangePerEntry(changes)) {
    if (change.op === "remove") removed.push(change.entry_id);
    else
      added.push({
        entryId: change.entry_id,
        kind: change.kind,
        value: change.value,
        reason: change.reason,
        expiresAt: change.expires_at,
        changeId: change.id,
      });
  }
  return { added, removed };
}

/** The highest epoch per user in a page. */
export function netEpochEffect(changes: readonly AuthEpochChange[]): AuthEpochChange[] {
  const best = new Map<string, AuthEpochChange>();
  for (const change of changes) {
    const current = best.get(change.user_id);
    if (!current || change.epoch > current.epoch || (change.epoch === current.epoch && change.id > current.id))
      best.set(change.user_id, change);
  }
  return [...best.values()];
}

/**
 * The last page of a blacklist replay from 0: every entry the retained log still mentions, and
 * the id the replay reached. A live row of the shared table at or below that id which the
 * replay never mentioned belongs to an entry whose add and remove were both compacted away: it
 * was removed, and the sweep says so.
 */
export interface BlacklistReplayEnd {
  seen: ReadonlySet<string>;
  through: number;
}

export async function applyBlacklistPage(
  db: Kysely<RuntimeSchema>,
  nodeId: string,
  changes: readonly BlacklistChange[],
  nextSince: number,
  now: number,
  replayEnd?: BlacklistReplayEnd,
): Promise<BlacklistPageEffect> {
  const effect = netBlacklistEffect(changes);
  const removals = lastChangePerEntry(changes).filter((c) => c.op === "remove");
  await db.transaction().execute(async (tx) => {
    // Removes become tombstones and adds revive an entry only when they are newer than what
    // the row holds, so nodes applying the shared table at different paces converge.
    const upsert = async (rows: AppliedBlacklistRow[]) => {
      await tx
        .insertInto("applied_blacklist")
        .values(rows)
        .onConflict((oc) =>
          oc
            .column("entry_id")
            .doUpdateSet((eb) => ({
              kind: eb.ref("excluded.kind"),
              value: eb.ref("excluded.value"),
              reason: eb.ref("excluded.reason"),
              expires_at: eb.ref("excluded.expires_at"),
              change_id: eb.ref("excluded.change_id"),
              applied_at: eb.ref("excluded.applied_at"),
              removed_at: eb.ref("excluded.removed_at"),
            }))
            .where("applied_blacklist.change_id", "<", (eb) => eb.ref("excluded.change_id")),
        )
        .execute();
    };
    for (const rows of chunks(removals)) await upsert(rows.map((c) => ({ ...rowOf(c, now), removed_at: now })));
    for (const entries of chunks(effect.added)) {
      await upsert(
        entries.map((e) => ({
          entry_id: e.entryId,
          kind: e.kind,
          value: e.value,
          reason: e.reason,
          expires_at: e.expiresAt,
          change_id: e.changeId,
          applied_at: now,
          removed_at: null,
        })),
      );
    }
    if (replayEnd) effect.removed.push(...(await sweepUnmentioned(tx, replayEnd, now)));
    await writeCursor(tx, nodeId, "blacklist", nextSince, now);
    if (replayEnd)
      await tx.deleteFrom("sync_cursors").where("node_id", "=", nodeId).where("stream", "=", BLACKLIST_REPLAY_MARKER).execute();
    await pruneTombstones(tx);
  });
  return effect;
}

/** Tombstones (same change id, so a slower node's old add cannot revive them) the live rows a finished replay never mentioned. */
async function sweepUnmentioned(tx: Transaction<RuntimeSchema>, end: BlacklistReplayEnd, now: number): Promise<string[]> {
  const live = await tx
    .selectFrom("applied_blacklist")
    .select("entry_id")
    .where("removed_at", "is", null)
    .where("change_id", "<=", end.through)
    .execute();
  const stale = live.map((r) => r.entry_id).filter((id) => !end.seen.has(id));
  for (const ids of chunks(stale)) {
    await tx
      .updateTable("applied_blacklist")
      .set({ removed_at: now })
      .where("entry_id", "in", ids)
      .where("removed_at", "is", null)
      .where("change_id", "<=", end.through)
      .execute();
  }
  return stale;
}

type AppliedBlacklistRow = Omit<RuntimeSchema["applied_blacklist"], never>;

function rowOf(change: BlacklistChange, now: number): Omit<AppliedBlacklistRow, "removed_at"> {
  return {
    entry_id: change.entry_id,
    kind: change.kind,
    value: change.value,
    reason: change.reason,
    expires_at: change.expires_at,
    change_id: change.id,
    applied_at: now,
  };
}

function lastChangePerEntry(changes: readonly BlacklistChange[]): BlacklistChange[] {
  const last = new Map<string, BlacklistChange>();
  for (const change of [...changes].sort((a, b) => a.id - b.id)) last.set(change.entry_id, change);
  return [...last.values()];
}

/** A tombstone is needed only until every node sharing this DB has moved past its change. */
async function pruneTombstones(tx: Transaction<RuntimeSchema>): Promise<void> {
  const slowest = await tx
    .selectFrom("sync_cursors")
    .select((eb) => eb.fn.min("cursor").as("cursor"))
    .where("stream", "=", "blacklist")
    .executeTakeFirst();
  const floor = Number(slowest?.cursor ?? 0);
  if (floor > 0) await tx.deleteFrom("applied_blacklist").where("removed_at", "is not", null).where("change_id", "<=", floor).execute();
}

export async function applyEpochPage(
  db: Kysely<RuntimeSchema>,
  nodeId: string,
  changes: readonly AuthEpochChange[],
  nextSince: number,
  now: number,
): Promise<AuthEpochChange[]> {
  const effect = netEpochEffect(changes);
  await db.transaction().execute(async (tx) => {
    for (const rows of chunks(effect)) {
      await tx
        .insertInto("applied_auth_epochs")
        .values(rows.map((c) => ({ user_id: c.user_id, app_id: c.app_id, epoch: c.epoch, change_id: c.id, applied_at: now })))
        .onConflict((oc) =>
          oc
            .column("user_id")
            .doUpdateSet((eb) => ({
              app_id: eb.ref("excluded.app_id"),
              epoch: eb.ref("excluded.epoch"),
              change_id: eb.ref("excluded.change_id"),
              applied_at: eb.ref("excluded.applied_at"),
            }))
            // Epochs only move forward: keep the maximum, whatever order pages arrive in.
            .where("applied_auth_epochs.epoch", "<", (eb) => eb.ref("excluded.epoch")),
        )
        .execute();
    }
    await writeCursor(tx, nodeId, "auth-epochs", nextSince, now);
  });
  return effect;
}

/**
 * sync_cursors row (stream name) marking a blacklist replay in progress for a node: a replay cut
 * short by a restart must start again from 0, or the sweep at its end would not know every entry.
 */
export const BLACKLIST_REPLAY_MARKER = "blacklist:replay";

/**
 * After DELTA_CURSOR_EXPIRED: rewind this node's cursor to 0, in one transaction. The rows
 * stay: every node of the deployment may share this Runtime DB and load its blacklist from
 * them, so wiping them would open a window in which a restarting node blocks nothing. Replays
 * are idempotent; for the blacklist, a marker row records that a replay is under way, and its
 * last page sweeps the entries the retained log no longer mentions (applyBlacklistPage).
 * Epochs need no sweep: the max-merge makes a replay safe.
 */
export async function resetStream(db: Kysely<RuntimeSchema>, nodeId: string, stream: DeltaStream, now: number): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await writeCursor(tx, nodeId, stream, 0, now);
    if (stream === "blacklist") await writeCursor(tx, nodeId, BLACKLIST_REPLAY_MARKER, 1, now);
  });
}

/** True while a blacklist replay of this node has not reached its last page. */
export async function blacklistReplayPending(db: Db, nodeId: string): Promise<boolean> {
  const row = await db
    .selectFrom("sync_cursors")
    .select("cursor")
    .where("node_id", "=", nodeId)
    .where("stream", "=", BLACKLIST_REPLAY_MARKER)
    .executeTakeFirst();
  return row !== undefined;
}

export async function loadBlacklist(db: Db): Promise<BlacklistEntry[]> {
  const rows = await db.selectFrom("applied_blacklist").selectAll().where("removed_at", "is", null).execute();
  return rows.map((r) => ({
    entryId: r.entry_id,
    kind: r.kind as BlacklistKind,
    value: r.value,
    reason: r.reason,
    expiresAt: r.expires_at,
    changeId: r.change_id,
  }));
}

export async function loadEpochs(db: Db): Promise<[string, number][]> {
  const rows = await db.selectFrom("applied_auth_epochs").select(["user_id", "epoch"]).execute();
  return rows.map((r) => [r.user_id, r.epoch]);
}

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += ROWS_PER_STATEMENT) out.push(items.slice(i, i + ROWS_PER_STATEMENT));
  return out;
}
