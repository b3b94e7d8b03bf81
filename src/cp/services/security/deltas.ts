/**
 * Channel 3, node side: one page of a change log after the node's cursor, or 410
 * DELTA_CURSOR_EXPIRED when the node must replay from 0 (see change-log.ts for the rules).
 */

import { precompiled } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import {
  type AuthEpochChange,
  type BlacklistChange,
  type BlacklistKind,
  DEFAULT_DELTA_PAGE,
  type DeltaStream,
  MAX_DELTA_PAGE,
} from "../../../shared/node-protocol/index.js";
import type { CpContext } from "../context.js";
import { type Db, LOG_TABLE } from "./change-log.js";

function invalid(message: string): AuthNexusError {
  return new AuthNexusError("VALIDATION_FAILED", { message });
}

export interface DeltaQuery {
  since: number;
  limit: number;
}

/** `since` (required) and `limit` from query strings: plain decimal integers only (no 1e3, 1.5, -1). */
export function parseDeltaQuery(raw: { since?: string | undefined; limit?: string | undefined }): DeltaQuery {
  if (raw.since === undefined || !/^\d{1,16}$/.test(raw.since) || !Number.isSafeInteger(Number(raw.since))) {
    throw invalid("since: must be a non-negative integer (the last change id applied, 0 for everything)");
  }
  let limit = DEFAULT_DELTA_PAGE;
  if (raw.limit !== undefined) {
    if (!/^\d{1,7}$/.test(raw.limit) || Number(raw.limit) < 1 || Number(raw.limit) > MAX_DELTA_PAGE)
      throw invalid(`limit: must be an integer from 1 to ${MAX_DELTA_PAGE}`);
    limit = Number(raw.limit);
  }
  return { since: Number(raw.since), limit };
}

/** Newest id a log has ever issued: max(id), or the retention watermark when compaction emptied the tail. */
export async function readHead(db: Db, stream: DeltaStream): Promise<number> {
  const row = (await HEAD_QUERY[stream](db, {})).rows[0];
  return Math.max(Number(row?.max_id ?? 0), Number(row?.pruned_through ?? 0));
}

export interface DeltaPage<T> {
  changes: T[];
  next_since: number;
  has_more: boolean;
  head: number;
}

async function readChanges(
  db: Db,
  stream: DeltaStream,
  since: number,
  through: number,
  limit: number,
): Promise<Array<AuthEpochChange | BlacklistChange>> {
  const range = { since, through, limit };
  if (stream === "auth-epochs") {
    const { rows } = await EPOCH_PAGE_QUERY(db, range);
    return rows.map((r) => ({ ...r, id: Number(r.id) }));
  }
  const { rows } = await BLACKLIST_PAGE_QUERY(db, range);
  return rows.map((r) => ({ ...r, id: Number(r.id), op: r.op as BlacklistChange["op"], kind: r.kind as BlacklistKind }));
}

/**
 * One page of a log after `since`, for the calling node. Order of reads matters: the head
 * first (the page never reaches past it, so a change committing meanwhile cannot open a gap),
 * then the page, then the retention watermark (a compaction that committed before the page was
 * read is seen, and answered with 410 rather than a page with a hole).
 *
 * `next_since` is the last change's id while more follow, and the head once the page is the
 * last one: everything between was either returned or compacted away as superseded.
 *
 * Every node pulls after every hint, so the statements are precompiled (shared/db/precompiled):
 * building them cost more than running them.
 */
export async function readDeltaPage(
  ctx: CpContext,
  nodeId: string,
  stream: DeltaStream,
  query: DeltaQuery,
): Promise<DeltaPage<AuthEpochChange | BlacklistChange>> {
  const db = ctx.controlDb;
  const head = await readHead(db, stream);
  // A cursor ahead of the log belongs to another history (a Control DB restored from an older
  // backup): the node must rebuild from 0 rather than skip the ids this log will reuse.
  if (query.since > head) {
    const { prunedThrough } = await readRetentionAndCursor(db, stream, nodeId);
    throw cursorExpiredError(ctx, nodeId, stream, query.since, prunedThrough, head, "is ahead of the log");
  }
  const rows = await readChanges(db, stream, query.since, head, query.limit + 1);
  const hasMore = rows.length > query.limit;
  const changes = hasMore ? rows.slice(0, query.limit) : rows;
  const { prunedThrough, recorded } = await readRetentionAndCursor(db, stream, nodeId);
  if (cursorExpired(query.since, prunedThrough, recorded)) {
    throw cursorExpiredError(ctx, nodeId, stream, query.since, prunedThrough, head, "is in the compacted part of the log");
  }
  // Polls mostly repeat the cursor they reported last time: no write then.
  if (recorded !== query.since) await RECORD_CURSOR_QUERY(db, { nodeId, stream, cursor: query.since, now: ctx.clock.now() });
  const last = changes.at(-1);
  return { changes, next_since: hasMore && last ? last.id : head, has_more: hasMore, head };
}

function cursorExpiredError(
  ctx: CpContext,
  nodeId: string,
  stream: DeltaStream,
  since: number,
  prunedThrough: number,
  head: number,
  why: string,
): AuthNexusError {
  ctx.log.category("CP Agent").warn("delta.cursor_expired", { node_id: nodeId, stream, since, pruned_through: prunedThrough, head, why });
  return new AuthNexusError("DELTA_CURSOR_EXPIRED", {
    message: `Cursor ${since} ${why} (head ${head}); clear what was applied from this stream and replay from since=0.`,
    publicDetail: { since, oldest_available: prunedThrough, head },
  });
}

/** The log's retention watermark and the cursor the CP last recorded for the node (null: none yet), in one statement. */
async function readRetentionAndCursor(
  db: Db,
  stream: DeltaStream,
  nodeId: string,
): Promise<{ prunedThrough: number; recorded: number | null }> {
  const row = (await RETENTION_AND_CURSOR_QUERY(db, { stream, nodeId })).rows[0];
  const recorded = row?.cursor;
  return {
    prunedThrough: Number(row?.pruned_through ?? 0),
    recorded: recorded === null || recorded === undefined ? null : Number(recorded),
  };
}

const headQuery = (stream: DeltaStream) =>
  precompiled<Record<string, never>, { max_id: number | null; pruned_through: number | null }>((db: Db) =>
    db.selectNoFrom((eb) => [
      eb
        .selectFrom(LOG_TABLE[stream])
        .select((s) => s.fn.max("id").as("m"))
        .as("max_id"),
      eb.selectFrom("delta_retention").select("pruned_through").where("stream", "=", stream).as("pruned_through"),
    ]),
  );
const HEAD_QUERY = { "auth-epochs": headQuery("auth-epochs"), blacklist: headQuery("blacklist") } satisfies Record<DeltaStream, unknown>;

type PageRange = { since: number; through: number; limit: number };
const EPOCH_PAGE_QUERY = precompiled<PageRange, Omit<AuthEpochChange, "id"> & { id: number | string }>((db: Db, p) =>
  db
    .selectFrom("auth_epoch_changes")
    .select(["id", "user_id", "app_id", "epoch", "created_at"])
    .where("id", ">", p.since)
    .where("id", "<=", p.through)
    .orderBy("id")
    .limit(p.limit),
);
const BLACKLIST_PAGE_QUERY = precompiled<
  PageRange,
  {
    id: number | string;
    entry_id: string;
    op: string;
    kind: string;
    value: string;
    reason: string | null;
    expires_at: number | null;
    created_at: number;
  }
>((db: Db, p) =>
  db
    .selectFrom("server_blacklist_changes")
    .select(["id", "entry_id", "op", "kind", "value", "reason", "expires_at", "created_at"])
    .where("id", ">", p.since)
    .where("id", "<=", p.through)
    .orderBy("id")
    .limit(p.limit),
);

const RETENTION_AND_CURSOR_QUERY = precompiled<
  { stream: DeltaStream; nodeId: string },
  { pruned_through: number | null; cursor: number | null }
>((db: Db, p) =>
  db.selectNoFrom((eb) => [
    eb.selectFrom("delta_retention").select("pruned_through").where("stream", "=", p.stream).as("pruned_through"),
    eb.selectFrom("node_delta_cursors").select("cursor").where("node_id", "=", p.nodeId).where("stream", "=", p.stream).as("cursor"),
  ]),
);

/** The node has applied everything ≤ cursor: compaction may prune superseded changes up to the minimum over nodes. */
const RECORD_CURSOR_QUERY = precompiled<{ nodeId: string; stream: DeltaStream; cursor: number; now: number }, unknown>((db: Db, p) =>
  db
    .insertInto("node_delta_cursors")
    .values({ node_id: p.nodeId, stream: p.stream, cursor: p.cursor, updated_at: p.now })
    .onConflict((oc) => oc.columns(["node_id", "stream"]).doUpdateSet({ cursor: p.cursor, updated_at: p.now })),
);

/**
 * A cursor inside the pruned range is trustworthy only when the node reached it by replaying
 * the compacted log (then nothing it needs was pruned). The CP knows the cursor it last
 * recorded for the node: a pull at or beyond it continues a compacted replay; a pull below it
 * (a node restored from an old backup) or from a node with no recorded cursor may have applied
 * an "add" whose "remove" is gone, so it must replay from 0. since = 0 is always valid.
 */
export function cursorExpired(since: number, prunedThrough: number, recorded: number | null): boolean {
  if (since === 0 || since >= prunedThrough) return false;
  return recorded === null || since < recorded;
}
