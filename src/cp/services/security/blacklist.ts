/** The server blacklist, admin side: add, remove, expire, list and show entries; every change appends to its log and hints the nodes. */

import { isIP } from "node:net";
import type { Transaction } from "kysely";
import { MAX_BLACKLIST_LIFETIME_MS } from "../../../shared/config/defaults.js";
import type { ServerBlacklistEntriesTable } from "../../../shared/db/control-schema.js";
import type { ControlSchema } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import type { BlacklistKind } from "../../../shared/node-protocol/index.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { lockLog } from "./change-log.js";

/** Device and user values: bounded printable ASCII, no spaces. */
const PRINTABLE_ID = /^[\x21-\x7E]{1,128}$/;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/;

function invalid(message: string): AuthNexusError {
  return new AuthNexusError("VALIDATION_FAILED", { message });
}

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
  const now = ctx.clock.now();
  return paginate(
    base,
    request,
    (q) => q.selectAll().orderBy("created_at", "desc").orderBy("id", "desc"),
    (row) => entryView(row, now),
  );
}

export async function getBlacklistEntry(ctx: CpContext, entryId: string): Promise<BlacklistEntryView> {
  const row = await ctx.controlDb.selectFrom("server_blacklist_entries").selectAll().where("id", "=", entryId).executeTakeFirst();
  if (!row) throw new AuthNexusError("NOT_FOUND", { message: "Blacklist entry not found." });
  return entryView(row, ctx.clock.now());
}
