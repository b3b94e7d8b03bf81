/**
 * Read side of node lifecycle: the node list, one node in detail (everything the operations
 * manual tells operators to watch) and the fleet overview; the node trails are in audit/. The
 * displayed status adds presence to the stored lifecycle status: an active node is "online"
 * when it checked in within NODE_ONLINE_WINDOW_MS, else "offline".
 */

import { sql } from "kysely";
import { NODE_ONLINE_WINDOW_MS, OCSP_STALE_AFTER_MS } from "../../../shared/config/defaults.js";
import type { NodesTable } from "../../../shared/db/control-schema.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { fleetConfigHealth, nodeConfigStatusByType, type StateCounts } from "../configs/admin-read.js";
import type { CpContext } from "../context.js";
import { parseJsonColumn } from "../json-column.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { type PkiJobView, toJobView } from "../pki/jobs.js";

/** At most this many stale nodes are named in the overview (the count is exact). */
const OVERVIEW_STALE_LIST_LIMIT = 100;

/** Stored in nodes.status. */
export type NodeLifecycleStatus = "provisioning" | "active" | "disabled";
/** What operators see. */
export const DISPLAYED_NODE_STATUSES = ["provisioning", "online", "offline", "disabled"] as const;
export type DisplayedNodeStatus = (typeof DISPLAYED_NODE_STATUSES)[number];

export function displayedStatus(row: Pick<NodesTable, "status" | "last_checkin_at">, now: number): DisplayedNodeStatus {
  if (row.status === "disabled") return "disabled";
  if (row.status !== "active") return "provisioning";
  return row.last_checkin_at !== null && row.last_checkin_at >= now - NODE_ONLINE_WINDOW_MS ? "online" : "offline";
}

export interface NodeView {
  id: string;
  name: string;
  host: string;
  business_port: number;
  status: DisplayedNodeStatus;
  lifecycle_status: string;
  created_at: number;
  updated_at: number;
  created_by: string | null;
  disabled_at: number | null;
  last_checkin_at: number | null;
  sse_connected: boolean;
  sse_changed_at: number | null;
  ocsp_last_applied_at: number | null;
  software_version: string | null;
  online_users: number;
}

const LIST_COLUMNS = [
  "id",
  "name",
  "host",
  "business_port",
  "status",
  "created_at",
  "updated_at",
  "created_by",
  "disabled_at",
  "last_checkin_at",
  "sse_connected",
  "sse_changed_at",
  "ocsp_last_applied_at",
  "software_version",
  "online_users",
] as const;

type NodeListRow = Pick<NodesTable, (typeof LIST_COLUMNS)[number]>;

function toNodeView(row: NodeListRow, now: number): NodeView {
  return {
    id: row.id,
    name: row.name,
    host: row.host,
    business_port: row.business_port,
    status: displayedStatus(row, now),
    lifecycle_status: row.status,
    created_at: row.created_at,
    updated_at: row.updated_at,
    created_by: row.created_by,
    disabled_at: row.disabled_at,
    last_checkin_at: row.last_checkin_at,
    sse_connected: sseConnected(row, now),
    sse_changed_at: row.sse_changed_at,
    ocsp_last_applied_at: row.ocsp_last_applied_at,
    software_version: row.software_version,
    online_users: row.online_users,
  };
}

/**
 * The stream flag is written when a stream opens or closes on this CP; a CP that died with
 * streams open never cleared it. A node whose stream is really up checks in too, so the flag
 * counts only while the node is checking in.
 */
function sseConnected(row: Pick<NodeListRow, "sse_connected" | "last_checkin_at">, now: number): boolean {
  return row.sse_connected === 1 && row.last_checkin_at !== null && row.last_checkin_at >= now - NODE_ONLINE_WINDOW_MS;
}

export async function listNodes(
  ctx: CpContext,
  filter: { status?: DisplayedNodeStatus | undefined },
  request: PageRequest,
): Promise<Page<NodeView>> {
  const now = ctx.clock.now();
  const cutoff = now - NODE_ONLINE_WINDOW_MS;
  const base = ctx.controlDb.selectFrom("nodes").$call((q) => {
    switch (filter.status) {
      case "provisioning":
        return q.where("status", "=", "provisioning");
      case "disabled":
        return q.where("status", "=", "disabled");
      case "online":
        return q.where("status", "=", "active").where("last_checkin_at", ">=", cutoff);
      case "offline":
        return q
          .where("status", "=", "active")
          .where((eb) => eb.or([eb("last_checkin_at", "is", null), eb("last_checkin_at", "<", cutoff)]));
      default:
        return q;
    }
  });
  return paginate(
    base,
    request,
    (q) => q.select(LIST_COLUMNS).orderBy("created_at", "desc").orderBy("id"),
    (r) => toNodeView(r, now),
  );
}

export interface NodeCertificateSummary {
  id: string;
  serial: string;
  purpose: string;
  status: "valid" | "revoked" | "expired";
  not_before: number;
  not_after: number;
  revoked_at: number | null;
}

export interface NodeDetail extends NodeView {
  metadata: unknown;
  metrics: unknown;
  app_versions: unknown;
  certificates: {
    server: NodeCertificateSummary | null;
    client: NodeCertificateSummary | null;
    previous_client: NodeCertificateSummary | null;
  };
  onboarding_job: PkiJobView | null;
  current_package: { id: string; created_at: number; sha256: string; size_bytes: number; downloaded_at: number | null } | null;
  /** Per config type, the node's delivered items by state (GET /nodes/:nid/configs lists them). */
  config_status: Record<string, StateCounts & { total: number }>;
  /** The manual's "key fields to watch", each with whether it is healthy and what to do when not. */
  health: NodeHealthCheck[];
}

export interface NodeHealthCheck {
  field: "status" | "last_checkin" | "sse_connected" | "ocsp_last_applied" | "config_sync";
  value: unknown;
  healthy: boolean;
  /** What the manual says to check when it is not healthy; null when healthy. */
  action: string | null;
}

/** The manual's table, applied to one node (a disabled or provisioning node is not "unhealthy": it is not meant to serve). */
function healthChecks(view: NodeView, configs: Record<string, StateCounts & { total: number }>, now: number): NodeHealthCheck[] {
  const serving = view.lifecycle_status === "active";
  const counts = Object.values(configs);
  const errors = counts.reduce((n, c) => n + c.error, 0);
  const behind = counts.reduce((n, c) => n + c.pending + c.not_sent, 0);
  const check = (field: NodeHealthCheck["field"], value: unknown, healthy: boolean, action: string): NodeHealthCheck => ({
    field,
    value,
    healthy: healthy || !serving,
    action: healthy || !serving ? null : action,
  });
  return [
    check(
      "status",
      view.status,
      view.status === "online",
      "Check network, certificates, CP connectivity ([CP Agent] log lines on the node)",
    ),
    check(
      "last_checkin",
      view.last_checkin_at,
      view.last_checkin_at !== null && view.last_checkin_at >= now - NODE_ONLINE_WINDOW_MS,
      "Investigate Channel 1 connectivity (the node's [CP Agent] checkin.failed lines; GET /nodes/auth-events)",
    ),
    check(
      "sse_connected",
      view.sse_connected,
      view.sse_connected,
      "Check Channel 2: SSE may have degraded to polling ([SSE] lines on both sides)",
    ),
    check(
      "ocsp_last_applied",
      view.ocsp_last_applied_at,
      view.ocsp_last_applied_at !== null && view.ocsp_last_applied_at >= now - OCSP_STALE_AFTER_MS,
      "Check Channel 4: the node's [TLS] ocsp.fetch_failed lines and the CP's OCSP listener",
    ),
    check(
      "config_sync",
      { error: errors, behind },
      errors === 0 && behind === 0,
      errors > 0
        ? "A config failed to apply: GET /admin/v1/nodes/:nid/configs?state=ERROR names it and the node's reason"
        : "Configs have not reached the node yet: check Channel 1 (config pulls) and SSE hints",
    ),
  ];
}

export async function getNode(ctx: CpContext, nodeId: string): Promise<NodeDetail> {
  const now = ctx.clock.now();
  const row = await ctx.controlDb
    .selectFrom("nodes")
    .select([...LIST_COLUMNS, "metadata", "metrics", "app_versions", "server_cert_id", "client_cert_id", "previous_client_cert_id"])
    .where("id", "=", nodeId)
    .executeTakeFirst();
  if (!row) throw nodeNotFound();
  const certIds = [row.server_cert_id, row.client_cert_id, row.previous_client_cert_id].filter((id): id is string => id !== null);
  const [certs, job, pkg, configStatus] = await Promise.all([
    certIds.length === 0
      ? Promise.resolve([])
      : ctx.controlDb
          .selectFrom("certificates")
          .select(["id", "serial_hex", "purpose", "status", "not_before", "not_after", "revoked_at"])
          .where("id", "in", certIds)
          .execute(),
    ctx.controlDb
      .selectFrom("pki_jobs")
      .selectAll()
      .where("kind", "=", "node_onboard")
      .where("target_type", "=", "node")
      .where("target_id", "=", nodeId)
      .orderBy("created_at", "desc")
      .orderBy("id", "desc")
      .executeTakeFirst(),
    ctx.controlDb
      .selectFrom("deploy_packages")
      .select(["id", "created_at", "sha256", "size_bytes", "downloaded_at"])
      .where("node_id", "=", nodeId)
      .where("superseded_at", "is", null)
      .orderBy("created_at", "desc")
      .executeTakeFirst(),
    nodeConfigStatusByType(ctx, nodeId),
  ]);
  const summary = (id: string | null): NodeCertificateSummary | null => {
    const cert = certs.find((c) => c.id === id);
    if (!cert) return null;
    const status = cert.status === "revoked" ? "revoked" : cert.not_after <= now ? "expired" : "valid";
    return {
      id: cert.id,
      serial: cert.serial_hex,
      purpose: cert.purpose,
      status,
      not_before: cert.not_before,
      not_after: cert.not_after,
      revoked_at: cert.revoked_at,
    };
  };
  const view = toNodeView(row, now);
  return {
    ...view,
    metadata: parseJsonColumn(row.metadata),
    metrics: parseJsonColumn(row.metrics),
    app_versions: parseJsonColumn(row.app_versions),
    certificates: {
      server: summary(row.server_cert_id),
      client: summary(row.client_cert_id),
      previous_client: summary(row.previous_client_cert_id),
    },
    onboarding_job: job ? toJobView(job) : null,
    current_package: pkg ?? null,
    config_status: configStatus,
    health: healthChecks(view, configStatus, now),
  };
}

export interface NodesOverview {
  total: number;
  by_status: Record<DisplayedNodeStatus, number>;
  /** Summed over online nodes only: an offline node's last report is stale. */
  online_users: number;
  sse_connected: number;
  ocsp_stale: { threshold_ms: number; count: number; nodes: Array<{ id: string; name: string; ocsp_last_applied_at: number | null }> };
  /** Online nodes whose event stream is down (they poll at the degraded intervals). */
  sse_degraded: number;
  /** Nodes (not provisioning) by config state: in sync, some item not applied yet, some item failed. */
  config_sync: { in_sync: number; pending: number; error: number };
  /** Nodes by the software version of their last checkin (null: never checked in). */
  software_versions: Array<{ version: string | null; nodes: number }>;
  generated_at: number;
}

export async function nodesOverview(ctx: CpContext): Promise<NodesOverview> {
  const now = ctx.clock.now();
  const cutoff = now - NODE_ONLINE_WINDOW_MS;
  const staleBefore = now - OCSP_STALE_AFTER_MS;
  const isOnline = sql<boolean>`status = 'active' and last_checkin_at >= ${cutoff}`;
  const counts = await ctx.controlDb
    .selectFrom("nodes")
    .select([
      sql<number>`count(*)`.as("total"),
      sql<number>`coalesce(sum(case when status = 'provisioning' then 1 else 0 end), 0)`.as("provisioning"),
      sql<number>`coalesce(sum(case when status = 'disabled' then 1 else 0 end), 0)`.as("disabled"),
      sql<number>`coalesce(sum(case when ${isOnline} then 1 else 0 end), 0)`.as("online"),
      sql<number>`coalesce(sum(case when ${isOnline} then online_users else 0 end), 0)`.as("online_users"),
      sql<number>`coalesce(sum(case when sse_connected = 1 and last_checkin_at >= ${cutoff} then 1 else 0 end), 0)`.as("sse_connected"),
    ])
    .executeTakeFirstOrThrow();
  const staleQuery = ctx.controlDb
    .selectFrom("nodes")
    .where("status", "=", "active")
    .where((eb) => eb.or([eb("ocsp_last_applied_at", "is", null), eb("ocsp_last_applied_at", "<", staleBefore)]));
  const [staleCount, staleNodes, configSync, versions] = await Promise.all([
    staleQuery.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
    staleQuery.select(["id", "name", "ocsp_last_applied_at"]).orderBy("name").limit(OVERVIEW_STALE_LIST_LIMIT).execute(),
    fleetConfigHealth(ctx),
    ctx.controlDb
      .selectFrom("nodes")
      .select(["software_version", (eb) => eb.fn.countAll<number>().as("n")])
      .where("status", "!=", "provisioning")
      .groupBy("software_version")
      .orderBy("software_version")
      .execute(),
  ]);
  const total = Number(counts.total);
  const provisioning = Number(counts.provisioning);
  const disabled = Number(counts.disabled);
  const online = Number(counts.online);
  return {
    total,
    by_status: { provisioning, online, offline: total - provisioning - disabled - online, disabled },
    online_users: Number(counts.online_users),
    sse_connected: Number(counts.sse_connected),
    sse_degraded: online - Number(counts.sse_connected),
    config_sync: configSync,
    software_versions: versions.map((v) => ({ version: v.software_version, nodes: Number(v.n) })),
    ocsp_stale: { threshold_ms: OCSP_STALE_AFTER_MS, count: Number(staleCount.n), nodes: staleNodes },
    generated_at: now,
  };
}

export function nodeNotFound(): AuthNexusError {
  return new AuthNexusError("NOT_FOUND", { message: "Node not found." });
}
