/**
 * Read side of the agent trails: admin login attempts and the admin operation audit log, both
 * paginated and filtered by time range, newest first.
 */
import type { AgentAuditLogsTable } from "../../../shared/db/control-schema.js";
import type { CpContext } from "../context.js";
import { parseJsonColumn } from "../json-column.js";
import { type Page, type PageRequest, paginate, type TimeRange } from "../pagination.js";

export interface AgentLogFilter extends TimeRange {
  agentId?: string | undefined;
  result?: string | undefined;
}

export async function listAgentLoginLogs(ctx: CpContext, filter: AgentLogFilter & { username?: string | undefined }, request: PageRequest) {
  const base = ctx.controlDb.selectFrom("agent_login_logs").$call((q) => {
    let out = q;
    if (filter.from !== undefined) out = out.where("created_at", ">=", filter.from);
    if (filter.to !== undefined) out = out.where("created_at", "<=", filter.to);
    if (filter.username) out = out.where("username", "=", filter.username.toLowerCase());
    if (filter.result) out = out.where("result", "=", filter.result);
    return out;
  });
  return paginate(base, request, (q) => q.selectAll().orderBy("created_at", "desc").orderBy("id", "desc"));
}

/** An audit row as the API shows it: `detail` parsed from its JSON text. */
export type AuditLogView = Omit<AgentAuditLogsTable, "detail"> & { detail: unknown };

export async function listAgentAuditLogs(
  ctx: CpContext,
  filter: AgentLogFilter & { action?: string | undefined },
  request: PageRequest,
): Promise<Page<AuditLogView>> {
  const base = ctx.controlDb.selectFrom("agent_audit_logs").$call((q) => {
    let out = q;
    if (filter.from !== undefined) out = out.where("created_at", ">=", filter.from);
    if (filter.to !== undefined) out = out.where("created_at", "<=", filter.to);
    if (filter.agentId) out = out.where("agent_id", "=", filter.agentId);
    if (filter.action) out = out.where("action", "=", filter.action);
    if (filter.result) out = out.where("result", "=", filter.result);
    return out;
  });
  return paginate(
    base,
    request,
    (q) => q.selectAll().orderBy("created_at", "desc").orderBy("id", "desc"),
    (r) => ({ ...r, detail: parseJsonColumn(r.detail) }),
  );
}
