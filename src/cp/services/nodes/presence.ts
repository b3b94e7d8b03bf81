/**
 * Online user presence (the operations manual's "Online User Presence"): what each node last
 * reported in its checkin — logged-in connections per application, kept in nodes.metrics
 * (`presence`) by checkin.ts — summed per application across the fleet.
 *
 * Only online nodes count (active, checked in within NODE_ONLINE_WINDOW_MS): a node that
 * stopped checking in may be gone with its users, so its last report is listed as stale, with
 * the time it was made, and left out of every total. Disabled nodes are listed stale too, as in
 * the nodes overview.
 */

import { NODE_ONLINE_WINDOW_MS } from "../../../shared/config/defaults.js";
import type { CpContext } from "../context.js";
import { parseJsonColumn } from "../json-column.js";
import { type DisplayedNodeStatus, displayedStatus } from "./views.js";

export interface PresenceNode {
  node_id: string;
  name: string;
  status: DisplayedNodeStatus;
  /** True when this node's report is not counted (offline or disabled). */
  stale: boolean;
  /** When the node reported these counts (its last checkin). */
  reported_at: number;
  online_users: number;
  /** app_id → logged-in users on this node. */
  apps: Record<string, number>;
}

export interface PresenceApp {
  app_id: string;
  /** Summed over online nodes. */
  online_users: number;
  /** The online nodes that reported users of this application. */
  nodes: Array<{ node_id: string; name: string; online_users: number; reported_at: number }>;
}

export interface Presence {
  /** Summed over online nodes only. */
  online_users: number;
  apps: PresenceApp[];
  /** Every node that ever checked in, counted ones and stale ones. */
  nodes: PresenceNode[];
  online_window_ms: number;
  generated_at: number;
}

/** The per-application counts a checkin stored, or {} when there are none (or they are malformed). */
function reportedApps(metrics: string | null): Record<string, number> {
  const parsed = parseJsonColumn(metrics) as { presence?: unknown } | null;
  const presence = parsed && typeof parsed === "object" ? parsed.presence : undefined;
  if (!presence || typeof presence !== "object") return {};
  const out: Record<string, number> = {};
  for (const [app, n] of Object.entries(presence as Record<string, unknown>))
    if (typeof n === "number" && Number.isSafeInteger(n) && n >= 0) out[app] = n;
  return out;
}

export async function readPresence(ctx: CpContext): Promise<Presence> {
  const now = ctx.clock.now();
  const rows = await ctx.controlDb
    .selectFrom("nodes")
    .select(["id", "name", "status", "last_checkin_at", "online_users", "metrics"])
    .where("last_checkin_at", "is not", null)
    .orderBy("name")
    .orderBy("id")
    .execute();
  const nodes: PresenceNode[] = [];
  const apps = new Map<string, PresenceApp>();
  let total = 0;
  for (const row of rows) {
    const reportedAt = row.last_checkin_at as number;
    const status = displayedStatus(row, now);
    const stale = status !== "online";
    const perApp = reportedApps(row.metrics);
    nodes.push({ node_id: row.id, name: row.name, status, stale, reported_at: reportedAt, online_users: row.online_users, apps: perApp });
    if (stale) continue;
    total += row.online_users;
    for (const [appId, n] of Object.entries(perApp)) {
      let app = apps.get(appId);
      if (!app) {
        app = { app_id: appId, online_users: 0, nodes: [] };
        apps.set(appId, app);
      }
      app.online_users += n;
      app.nodes.push({ node_id: row.id, name: row.name, online_users: n, reported_at: reportedAt });
    }
  }
  return {
    online_users: total,
    apps: [...apps.values()].sort((a, b) => b.online_users - a.online_users || (a.app_id < b.app_id ? -1 : 1)),
    nodes,
    online_window_ms: NODE_ONLINE_WINDOW_MS,
    generated_at: now,
  };
}
