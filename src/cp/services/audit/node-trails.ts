/** The two node trails, read side: the node management audit log and the node authentication events. */
import type { CpContext } from "../context.js";
import { parseJsonColumn } from "../json-column.js";
import { type PageRequest, paginate, type TimeRange } from "../pagination.js";

export interface NodeTrailFilter extends TimeRange {
  nodeId?: string | undefined;
  event?: string | undefined;
}

export function listNodeAuditLogs(ctx: CpContext, filter: NodeTrailFilter, request: PageRequest) {
  return listNodeTrail(ctx, "node_audit_logs", filter, request);
}

export function listNodeAuthEvents(ctx: CpContext, filter: NodeTrailFilter, request: PageRequest) {
  return listNodeTrail(ctx, "node_auth_events", filter, request);
}

/** The two node trails share their shape: time, node, event, JSON detail. */
async function listNodeTrail(ctx: CpContext, table: "node_audit_logs" | "node_auth_events", filter: NodeTrailFilter, request: PageRequest) {
  const base = ctx.controlDb.selectFrom(table).$call((q) => {
    let out = q;
    if (filter.from !== undefined) out = out.where("created_at", ">=", filter.from);
    if (filter.to !== undefined) out = out.where("created_at", "<=", filter.to);
    if (filter.nodeId) out = out.where("node_id", "=", filter.nodeId);
    if (filter.event) out = out.where("event", "=", filter.event);
    return out;
  });
  return paginate(
    base,
    request,
    (q) => q.selectAll().orderBy("created_at", "desc").orderBy("id", "desc"),
    (r) => ({ ...r, detail: parseJsonColumn(r.detail) }),
  );
}
