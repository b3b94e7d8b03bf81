/**
 * Channel 3's two append-only change logs — the server blacklist and per-user auth epochs —
 * from the admin write, through the node's delta pull, to compaction.
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
import { isIP } from "node:net";
import { type Kysely, sql, type Transaction } from "kysely";
import type { ServerBlacklistEntriesTable } from "../../../shared/db/control-schema.js";
import { type ControlSchema, dialectOf, precompiled } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import {
  type AuthEpochChange,
  type BlacklistChange,
  type BlacklistKind,
  DEFAULT_DELTA_PAGE,
  type DeltaStream,
  MAX_DELTA_PAGE,
} from "../../../shared/node-protocol/index.js";
import { every } from "../../../shared/time/index.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, pageOffset, toPage } from "../pagination.js";

/** pg_advisory_xact_lock keys, one per log ("ANBL", "ANEP"): writers of one log queue, the other log is unaffected. */
const ADVISORY_LOCK: Record<DeltaStream, number> = { blacklist: 0x414e424c, "auth-epochs": 0x414e4550 };
const LOG_TABLE = { blacklist: "server_blacklist_changes", "auth-epochs": "auth_epoch_changes" } as const satisfies Record<
  DeltaStream,
  keyof ControlSchema
>;

/** Longest a blacklist entry may be set to last (ms): anything longer is a typo, not a policy. */
const MAX_BLACKLIST_LIFETIME_MS = 100 * 365 * 86_400_000;
/** Device and user values: bounded printable ASCII, no spaces. */
const PRINTABLE_ID = /^[\x21-\x7E]{1,128}$/;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/;

type Db = Kysely<ControlSchema>;

/** Serialises writers of one log on PostgreSQL (no-op on SQLite, which has a single writer). */
async function lockLog(trx: Transaction<ControlSchema>, stream: DeltaStream): Promise<void> {
  if (dialectOf(trx) === "postgres") await sql`select pg_advisory_xact_lock(${ADVISORY_LOCK[stream]})`.execute(trx);
}

function invalid(message: string): AuthNexusError {
  return new AuthNexusError("VALIDATION_FAILED", { message });
}

// ---- blacklist: admin side -----------------------------------------------------------------

export interface BlacklistEntryView extends ServerBlacklistEntriesTable {
  /** "active", "expired" (past expires_at, not yet retired) or "removed". */
  state: "active" | "expired" | "removed";
}

export interface NewBlacklistEntry {
  kind: BlacklistKind;
  value: string;
  reason?: string | null | undefined;
  /** Epoch ms or an ISO-8601 time with a zone; must lie in the future. */
  expires_at?: number | string | null | undefined;
}

/**
 * IPs are stored in one canonical spelling so a duplicate cannot hide behind another one:
 * IPv4 dotted quad; IPv6 lower-case and compressed; an IPv4-mapped IPv6 address as its IPv4.
 */
export function canonicalBlacklistValue(kind: BlacklistKind, raw: string): string {
  if (kind !== "ip") {
    if (!PRINTABLE_ID.test(raw)) throw invalid(`value: a ${kind} id must be 1-128 printable characters without spaces`);
    return raw;
  }
  const family = isIP(raw);
  if (family === 4) return raw;
  if (family !== 6 || raw.includes("%")) throw invalid("value: must be an IPv4 or IPv6 address (no zone, no prefix length)");
  const compressed = new URL(`http://[${raw}]`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(compressed);
  if (!mapped) return compressed;
  const high = Number.parseInt(mapped[1] ?? "0", 16);
  const low = Number.parseInt(mapped[2] ?? "0", 16);
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join(".");
}

export function parseExpiry(raw: number | string | null | undefined, now: number): number | null {
  if (raw === undefined || raw === null) return null;
  let ms: number;
  if (typeof raw === "number") ms = raw;
  else if (ISO_TIME.test(raw)) ms = Date.parse(raw);
  else throw invalid("expires_at: must be epoch milliseconds or an ISO-8601 time with a zone (2026-07-01T00:00:00Z)");
  if (!Number.isSafeInteger(ms)) throw invalid("expires_at: not a valid time");
  if (ms <= now) throw invalid("expires_at: must be in the future");
  if (ms > now + MAX_BLACKLIST_LIFETIME_MS) throw invalid("expires_at: must be within 100 years");
  return ms;
}

function entryView(row: ServerBlacklistEntriesTable, now: number): BlacklistEntryView {
  const state = row.removed_at !== null ? "removed" : row.expires_at !== null && row.expires_at <= now ? "expired" : "active";
  return { ...row, state };
}

async function appendBlacklistChange(
  trx: Transaction<ControlSchema>,
  entry: ServerBlacklistEntriesTable,
  op: "add" | "remove",
  now: number,
): Promise<number> {
  const inserted = await trx
    .insertInto("server_blacklist_changes")
    .values({
      entry_id: entry.id,
      op,
      kind: entry.kind,
      value: entry.value,
      reason: op === "add" ? entry.reason : null,
      expires_at: entry.expires_at,
      created_at: now,
    })
    .returning("id")
    .executeTakeFirstOrThrow();
  return Number(inserted.id);
}

async function retireEntry(
  trx: Transaction<ControlSchema>,
  entry: ServerBlacklistEntriesTable,
  now: number,
): Promise<ServerBlacklistEntriesTable> {
  await trx
    .updateTable("server_blacklist_entries")
    .set({ removed_at: now })
    .where("id", "=", entry.id)
    .where("removed_at", "is", null)
    .execute();
  await appendBlacklistChange(trx, entry, "remove", now);
  return { ...entry, removed_at: now };
}

/** Adds a live entry and its "add" change; a live duplicate is a 409, an expired one is retired first. */
export async function addBlacklistEntry(ctx: CpContext, actor: Actor, input: NewBlacklistEntry): Promise<BlacklistEntryView> {
  const now = ctx.clock.now();
  const value = canonicalBlacklistValue(input.kind, input.value);
  const expiresAt = parseExpiry(input.expires_at, now);
  const entry: ServerBlacklistEntriesTable = {
    id: newId("ble"),
    kind: input.kind,
    value,
    reason: input.reason ? input.reason : null,
    expires_at: expiresAt,
    created_at: now,
    created_by: actor.agentId,
    removed_at: null,
  };
  await ctx.controlDb.transaction().execute(async (trx) => {
    await lockLog(trx, "blacklist");
    const live = await trx
      .selectFrom("server_blacklist_entries")
      .selectAll()
      .where("kind", "=", entry.kind)
      .where("value", "=", value)
      .where("removed_at", "is", null)
      .executeTakeFirst();
    if (live && (live.expires_at === null || live.expires_at > now)) {
      throw new AuthNexusError("CONFLICT", { message: `This ${entry.kind} is already blacklisted (entry ${live.id}).` });
    }
    if (live) await retireEntry(trx, live, now);
    await trx.insertInto("server_blacklist_entries").values(entry).execute();
    await appendBlacklistChange(trx, entry, "add", now);
  });
  ctx.events.publish("blacklist.changed", null);
  ctx.log
    .category("Security")
    .info("blacklist.added", { entry_id: entry.id, kind: entry.kind, expires_at: entry.expires_at, agent_id: actor.agentId });
  return entryView(entry, now);
}

/** Marks an entry removed and appends its "remove" change; an unknown id is 404, an entry already removed 409. */
export async function removeBlacklistEntry(ctx: CpContext, actor: Actor, entryId: string): Promise<BlacklistEntryView> {
  const now = ctx.clock.now();
  const removed = await ctx.controlDb.transaction().execute(async (trx) => {
    await lockLog(trx, "blacklist");
    const entry = await trx.selectFrom("server_blacklist_entries").selectAll().where("id", "=", entryId).executeTakeFirst();
    if (!entry) throw new AuthNexusError("NOT_FOUND", { message: "Blacklist entry not found." });
    if (entry.removed_at !== null) throw new AuthNexusError("BLACKLIST_ENTRY_REMOVED");
    return retireEntry(trx, entry, now);
  });
  ctx.events.publish("blacklist.changed", null);
  ctx.log.category("Security").info("blacklist.removed", { entry_id: entryId, kind: removed.kind, agent_id: actor.agentId });
  return entryView(removed, now);
}

/** Retires every entry past its expires_at (a "remove" change each), so compaction can later drop the pair. */
export async function retireExpiredBlacklistEntries(ctx: CpContext): Promise<number> {
  const now = ctx.clock.now();
  const retired = await ctx.controlDb.transaction().execute(async (trx) => {
    await lockLog(trx, "blacklist");
    const expired = await trx
      .selectFrom("server_blacklist_entries")
      .selectAll()
      .where("removed_at", "is", null)
      .where("expires_at", "<=", now)
      .orderBy("expires_at")
      .limit(1000)
      .execute();
    for (const entry of expired) await retireEntry(trx, entry, now);
    return expired.length;
  });
  if (retired > 0) {
    ctx.events.publish("blacklist.changed", null);
    ctx.log.category("Security").info("blacklist.expired_retired", { count: retired });
  }
  return retired;
}

export interface BlacklistFilter {
  kind?: BlacklistKind | undefined;
  includeRemoved: boolean;
}

export async function listBlacklistEntries(
  ctx: CpContext,
  filter: BlacklistFilter,
  request: PageRequest,
): Promise<Page<BlacklistEntryView>> {
  const base = ctx.controlDb.selectFrom("server_blacklist_entries").$call((q) => {
    let narrowed = q;
    if (filter.kind) narrowed = narrowed.where("kind", "=", filter.kind);
    if (!filter.includeRemoved) narrowed = narrowed.where("removed_at", "is", null);
    return narrowed;
  });
  const [rows, count] = await Promise.all([
    base.selectAll().orderBy("created_at", "desc").orderBy("id", "desc").limit(request.pageSize).offset(pageOffset(request)).execute(),
    base.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
  ]);
  const now = ctx.clock.now();
  return toPage(
    rows.map((row) => entryView(row, now)),
    request,
    Number(count.n),
  );
}

export async function getBlacklistEntry(ctx: CpContext, entryId: string): Promise<BlacklistEntryView> {
  const row = await ctx.controlDb.selectFrom("server_blacklist_entries").selectAll().where("id", "=", entryId).executeTakeFirst();
  if (!row) throw new AuthNexusError("NOT_FOUND", { message: "Blacklist entry not found." });
  return entryView(row, ctx.clock.now());
}

// ---- auth epochs: admin side ---------------------------------------------------------------

export interface EpochBump {
  user_id: string;
  app_id?: string | undefined;
  reason?: string | null | undefined;
}

export interface AuthEpochChangeView {
  id: number;
  user_id: string;
  app_id: string | null;
  epoch: number;
  reason: string | null;
  created_at: number;
  created_by: string | null;
  /** Whether the Runtime DB has this user (its users.auth_epoch was raised too). */
  runtime_user_updated?: boolean;
}

/**
 * Bumps one user's epoch: new = max(the newest epoch in the log, the Runtime DB's
 * users.auth_epoch when the user exists there) + 1. The Runtime DB row is raised inside the log
 * transaction, so a failure there appends nothing; a commit failure after it only leaves the
 * Runtime DB ahead, which the next bump absorbs (epochs only need to grow).
 */
export async function bumpAuthEpoch(ctx: CpContext, actor: Actor, input: EpochBump): Promise<AuthEpochChangeView> {
  const user = await ctx.runtimeDb
    .selectFrom("users")
    .select(["id", "app_id", "auth_epoch"])
    .where("id", "=", input.user_id)
    .executeTakeFirst();
  if (input.app_id !== undefined) {
    const app = await ctx.controlDb.selectFrom("applications").select("id").where("id", "=", input.app_id).executeTakeFirst();
    if (!app) throw new AuthNexusError("NOT_FOUND", { message: "Application not found." });
    if (user && user.app_id !== input.app_id) throw invalid("app_id: the user belongs to another application");
  }
  const now = ctx.clock.now();
  const change = await ctx.controlDb.transaction().execute(async (trx) => {
    await lockLog(trx, "auth-epochs");
    const logged = await trx
      .selectFrom("auth_epoch_changes")
      .select((eb) => eb.fn.max("epoch").as("epoch"))
      .where("user_id", "=", input.user_id)
      .executeTakeFirst();
    const epoch = Math.max(Number(logged?.epoch ?? 0), Number(user?.auth_epoch ?? 0)) + 1;
    const row = {
      app_id: input.app_id ?? null,
      user_id: input.user_id,
      epoch,
      reason: input.reason ? input.reason : null,
      created_at: now,
      created_by: actor.agentId,
    };
    const inserted = await trx.insertInto("auth_epoch_changes").values(row).returning("id").executeTakeFirstOrThrow();
    if (user) {
      await ctx.runtimeDb
        .updateTable("users")
        .set({ auth_epoch: epoch, updated_at: now })
        .where("id", "=", user.id)
        .where("auth_epoch", "<", epoch)
        .execute();
    }
    return { id: Number(inserted.id), ...row };
  });
  ctx.events.publish("epoch.bumped", null);
  ctx.log.category("Security").info("epoch.bumped", {
    change_id: change.id,
    user_id: change.user_id,
    app_id: change.app_id,
    epoch: change.epoch,
    agent_id: actor.agentId,
  });
  return { ...change, runtime_user_updated: user !== undefined };
}

export interface EpochFilter {
  userId?: string | undefined;
  appId?: string | undefined;
}

export async function listAuthEpochChanges(ctx: CpContext, filter: EpochFilter, request: PageRequest): Promise<Page<AuthEpochChangeView>> {
  const base = ctx.controlDb.selectFrom("auth_epoch_changes").$call((q) => {
    let narrowed = q;
    if (filter.userId) narrowed = narrowed.where("user_id", "=", filter.userId);
    if (filter.appId) narrowed = narrowed.where("app_id", "=", filter.appId);
    return narrowed;
  });
  const [rows, count] = await Promise.all([
    base.selectAll().orderBy("id", "desc").limit(request.pageSize).offset(pageOffset(request)).execute(),
    base.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
  ]);
  return toPage(
    rows.map((r) => ({ ...r, id: Number(r.id) })),
    request,
    Number(count.n),
  );
}

// ---- node side: delta pulls ----------------------------------------------------------------

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

// ---- retention -----------------------------------------------------------------------------

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

/** How often the CP runs the retention pass (ms). */
export const RETENTION_PASS_INTERVAL_MS = 10 * 60_000;

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
