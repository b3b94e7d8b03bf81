/**
 * The CP's record of node health: what a checkin reports (metrics, metadata, applied config
 * versions, delta cursors, OCSP freshness) and whether the node holds an SSE stream. These are
 * the columns the admin node views read.
 *
 * A checkin is the hottest call of the node API (every node, every few seconds; the target is
 * ≥ 2,000 per second per CP process on SQLite), so in the steady state it costs ONE statement
 * beyond the identity check: the update of the node row. What it answers comes from a small
 * per-process table (CheckinCache): the heads of the three logs and the latest version of
 * every config item, each reloaded when a local hint says it changed or at most
 * CHECKIN_CACHE_TTL_MS later (changes made by another CP process), and the delta cursors are
 * written only when they differ from what this process last wrote for the node.
 */
import { type Kysely, sql } from "kysely";
import { type ControlSchema, type Placeholders, precompiled } from "../../../shared/db/index.js";
import type { CheckinRequest, CheckinResponse, DeltaStream } from "../../../shared/node-protocol/index.js";
import { latestDeliveredVersions } from "../configs/configs.js";
import type { CpContext } from "../context.js";
import type { CallingNode } from "./identity.js";
import { NODE_ONLINE_WINDOW_MS } from "./views.js";

/** How long cached heads and config versions may be reused before a reload (ms): bounds staleness across CP processes. */
export const CHECKIN_CACHE_TTL_MS = 1000;

export interface LogHeads {
  commands: number;
  "auth-epochs": number;
  blacklist: number;
}

/** The newest id of each log a node follows, in one statement. A compacted-away tail still counts (the watermark). */
export async function readLogHeads(db: Kysely<ControlSchema>): Promise<LogHeads> {
  const row = await db
    .selectNoFrom((eb) => [
      eb
        .selectFrom("commands")
        .select((s) => s.fn.max("seq").as("m"))
        .as("commands"),
      eb
        .selectFrom("auth_epoch_changes")
        .select((s) => s.fn.max("id").as("m"))
        .as("epochs"),
      eb
        .selectFrom("server_blacklist_changes")
        .select((s) => s.fn.max("id").as("m"))
        .as("blacklist"),
      eb.selectFrom("delta_retention").select("pruned_through").where("stream", "=", "auth-epochs").as("epochs_pruned"),
      eb.selectFrom("delta_retention").select("pruned_through").where("stream", "=", "blacklist").as("blacklist_pruned"),
    ])
    .executeTakeFirstOrThrow();
  const n = (value: unknown) => Number(value ?? 0);
  return {
    commands: n(row.commands),
    "auth-epochs": Math.max(n(row.epochs), n(row.epochs_pruned)),
    blacklist: Math.max(n(row.blacklist), n(row.blacklist_pruned)),
  };
}

export async function recordCheckin(ctx: CpContext, node: CallingNode, report: CheckinRequest): Promise<CheckinResponse> {
  const now = ctx.clock.now();
  const cache = checkinCache(ctx);
  await updateNodeRow(ctx, node, report, now);
  const heads = await cache.heads(now);
  await recordReportedCursors(ctx, cache, node.id, report.cursors, heads, now);
  return {
    server_time: now,
    node_status: node.status === "disabled" ? "disabled" : "active",
    heads,
    config_pending: configPending(await cache.latestConfigVersions(now), report.app_versions),
  };
}

/**
 * One update in the steady state: it matches only while the node is still online. When it
 * matches nothing the node was offline (or never checked in), which is the one transition
 * worth a log line; the second update then writes the same values unconditionally.
 */
async function updateNodeRow(ctx: CpContext, node: CallingNode, report: CheckinRequest, now: number): Promise<void> {
  const values: CheckinRowValues = {
    nodeId: node.id,
    now,
    softwareVersion: report.software_version,
    metadata: JSON.stringify({
      ...report.node_metadata,
      ocsp: report.ocsp ?? null,
      cursors: report.cursors,
      sse_connected_reported: report.sse_connected,
    }),
    metrics: JSON.stringify(report.presence ? { ...report.metrics, presence: report.presence } : report.metrics),
    appVersions: JSON.stringify(report.app_versions),
    onlineUsers: report.metrics.online_users,
    ocspFetchedAt: report.ocsp?.fetched_at ?? null,
    onlineSince: now - NODE_ONLINE_WINDOW_MS,
  };
  const stillOnline = await updateOnlineNode(ctx.controlDb, values);
  if (Number(stillOnline.numAffectedRows ?? 0) > 0) return;
  const updated = await updateAnyNode(ctx.controlDb, values);
  if (Number(updated.numAffectedRows ?? 0) > 0) {
    ctx.log.category("CP Agent").info("node.online", { node_id: node.id, status: node.status, software_version: report.software_version });
  }
}

interface CheckinRowValues extends Record<string, unknown> {
  nodeId: string;
  now: number;
  softwareVersion: string;
  metadata: string;
  metrics: string;
  appVersions: string;
  onlineUsers: number;
  /** Kept as it was when the report carries no OCSP state. */
  ocspFetchedAt: number | null;
  onlineSince: number;
}

// Precompiled: a checkin is the node API's hottest call, and building the statement cost more than running it.
const setCheckinColumns = (db: Kysely<ControlSchema>, p: Placeholders<CheckinRowValues>) =>
  db
    .updateTable("nodes")
    .set({
      last_checkin_at: p.now,
      software_version: p.softwareVersion,
      metadata: p.metadata,
      metrics: p.metrics,
      app_versions: p.appVersions,
      online_users: p.onlineUsers,
      ocsp_last_applied_at: sql<number | null>`coalesce(${p.ocspFetchedAt}, ocsp_last_applied_at)`,
    })
    .where("id", "=", p.nodeId);
const updateOnlineNode = precompiled<CheckinRowValues, unknown>((db, p) =>
  setCheckinColumns(db, p).where("last_checkin_at", ">=", p.onlineSince),
);
const updateAnyNode = precompiled<CheckinRowValues, unknown>(setCheckinColumns);

/**
 * The cursors a node reports are what it has applied. They only ever raise the recorded
 * cursor: lowering it is the delta pull's job (since = 0 after a 410), because a node that
 * went backwards must be caught by the pull's expiry check, not silently trusted. A cursor
 * beyond the head (a node pointed at a restored CP) is clamped to the head.
 */
async function recordReportedCursors(
  ctx: CpContext,
  cache: CheckinCache,
  nodeId: string,
  cursors: CheckinRequest["cursors"],
  heads: LogHeads,
  now: number,
): Promise<void> {
  const streams: DeltaStream[] = ["auth-epochs", "blacklist"];
  const clamped = streams.map((stream) => Math.min(cursors[stream], heads[stream]));
  const written = clamped.join(",");
  if (cache.writtenCursors.get(nodeId) === written) return;
  await ctx.controlDb
    .insertInto("node_delta_cursors")
    .values(streams.map((stream, i) => ({ node_id: nodeId, stream, cursor: clamped[i] ?? 0, updated_at: now })))
    .onConflict((oc) =>
      oc.columns(["node_id", "stream"]).doUpdateSet({
        cursor: sql<number>`case when excluded.cursor > node_delta_cursors.cursor then excluded.cursor else node_delta_cursors.cursor end`,
        updated_at: now,
      }),
    )
    .execute();
  cache.writtenCursors.set(nodeId, written);
}

// ---- the per-process cache -----------------------------------------------------------------

interface Reloadable<T> {
  value: T | null;
  loadedAt: number;
  /** Bumped by every invalidation, so a load that raced with one is not kept. */
  generation: number;
}

export interface CheckinCache {
  heads(now: number): Promise<LogHeads>;
  latestConfigVersions(now: number): Promise<Map<string, number>>;
  /** node id → the clamped cursors this process last wrote for it. */
  writtenCursors: Map<string, string>;
}

const caches = new WeakMap<CpContext, CheckinCache>();
const itemKey = (type: string, scope: string) => `${type}\u0000${scope}`;

function reloading<T>(slot: Reloadable<T>, load: () => Promise<T>): (now: number) => Promise<T> {
  return async (now) => {
    if (slot.value !== null && now - slot.loadedAt < CHECKIN_CACHE_TTL_MS && now >= slot.loadedAt) return slot.value;
    const generation = slot.generation;
    const value = await load();
    if (slot.generation === generation) {
      slot.value = value;
      slot.loadedAt = now;
    }
    return value;
  };
}

function checkinCache(ctx: CpContext): CheckinCache {
  const existing = caches.get(ctx);
  if (existing) return existing;
  const heads: Reloadable<LogHeads> = { value: null, loadedAt: 0, generation: 0 };
  const configs: Reloadable<Map<string, number>> = { value: null, loadedAt: 0, generation: 0 };
  const invalidate = (slot: Reloadable<unknown>) => {
    slot.value = null;
    slot.generation += 1;
  };
  ctx.events.onHint((hint) => invalidate(hint.event === "config.pending" ? configs : heads));
  const cache: CheckinCache = {
    heads: reloading(heads, () => readLogHeads(ctx.controlDb)),
    latestConfigVersions: reloading(configs, async () => {
      // Only what a pull would deliver, or a node could never stop being told it is behind.
      const latest = await latestDeliveredVersions(ctx.controlDb);
      return new Map(latest.map((l) => [itemKey(l.type, l.scope), l.version]));
    }),
    writtenCursors: new Map(),
  };
  caches.set(ctx, cache);
  return cache;
}

/** True when some config item has a version newer than the one the node reports applied (an unreported item counts as 0). */
function configPending(latest: Map<string, number>, applied: CheckinRequest["app_versions"]): boolean {
  if (latest.size === 0) return false;
  const reported = new Map(applied.map((ref) => [itemKey(ref.type, ref.scope), ref.version]));
  for (const [key, version] of latest) {
    if ((reported.get(key) ?? 0) < version) return true;
  }
  return false;
}

// ---- SSE presence --------------------------------------------------------------------------

/** Written by the SSE hub when a node's current stream opens or closes. */
export async function recordSseState(ctx: CpContext, nodeId: string, connected: boolean): Promise<void> {
  await ctx.controlDb
    .updateTable("nodes")
    .set({ sse_connected: connected ? 1 : 0, sse_changed_at: ctx.clock.now() })
    .where("id", "=", nodeId)
    .execute();
}
