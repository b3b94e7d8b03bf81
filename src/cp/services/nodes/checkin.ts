/**
 * The CP's record of node health: what a checkin reports (metrics, metadata, applied config
 * versions, delta cursors, OCSP freshness) and whether the node holds an SSE stream. These are
 * the columns the admin node views read.
 *
 * A checkin is the hottest call of the node API (every node, every few seconds; the target is
 * ≥ 2,000 per second per CP process on SQLite), so in the steady state it costs ONE statement
 * beyond the identity check: the update of the node row. What it answers comes from the CP's
 * CheckinCache (./checkin-cache.ts, part of the CP context), and the delta cursors are written
 * only when they differ from what this process last wrote for the node.
 */

import { type Kysely, sql } from "kysely";
import { NODE_ONLINE_WINDOW_MS } from "../../../shared/config/defaults.js";
import { type ControlSchema, type Placeholders, precompiled } from "../../../shared/db/index.js";
import type { CheckinRequest, CheckinResponse, DeltaStream } from "../../../shared/node-protocol/index.js";
import type { CpContext } from "../context.js";
import { type CheckinCache, configItemKey, type LogHeads } from "./checkin-cache.js";
import type { CallingNode } from "./identity.js";

export async function recordCheckin(ctx: CpContext, node: CallingNode, report: CheckinRequest): Promise<CheckinResponse> {
  const now = ctx.clock.now();
  const cache = ctx.checkinCache;
  await updateNodeRow(ctx, node, report, now);
  const heads = await cache.heads(now);
  await recordReportedCursors(ctx, cache, node.id, report.cursors, heads, now);
  return {
    server_time: now,
    node_status: node.status === "disabled" ? "disabled" : "active",
    heads,
    // New credentials waiting for the node count as a pending config: they come with the pull.
    config_pending: node.pendingRotationId !== null || configPending(await cache.latestConfigVersions(now), report.app_versions),
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

/** True when some config item has a version newer than the one the node reports applied (an unreported item counts as 0). */
function configPending(latest: Map<string, number>, applied: CheckinRequest["app_versions"]): boolean {
  if (latest.size === 0) return false;
  const reported = new Map(applied.map((ref) => [configItemKey(ref.type, ref.scope), ref.version]));
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
