/**
 * The read side of the seven audit trails, one way for all of them: newest first, paginated,
 * from/to on created_at, and equality filters on the columns the route allows (actor, target,
 * action, result and each log's own). `detail` is parsed from its JSON text; the chain columns
 * are shown as stored.
 */
import type { Kysely } from "kysely";
import { AUDIT_LOGS, type AuditLogName } from "../../../shared/audit/logs.js";
import type { CpContext } from "../context.js";
import { parseJsonColumn } from "../json-column.js";
import { type Page, type PageRequest, paginate, type TimeRange } from "../pagination.js";

export interface AuditLogFilter extends TimeRange {
  /** Column = value conditions, all of which must hold. */
  equals: Array<[column: string, value: string]>;
}

export type AuditLogItem = Record<string, unknown>;

export async function listAuditLog(
  ctx: CpContext,
  name: AuditLogName,
  filter: AuditLogFilter,
  request: PageRequest,
): Promise<Page<AuditLogItem>> {
  const { table, database } = AUDIT_LOGS[name];
  // The seven tables share created_at and id; the filter columns were picked by the route from a fixed list.
  // biome-ignore lint/suspicious/noExplicitAny: one query shape over seven tables
  const db = (database === "control" ? ctx.controlDb : ctx.runtimeDb) as unknown as Kysely<any>;
  const base = db.selectFrom(table).$call((q) => {
    let out = q;
    if (filter.from !== undefined) out = out.where("created_at", ">=", filter.from);
    if (filter.to !== undefined) out = out.where("created_at", "<=", filter.to);
    for (const [column, value] of filter.equals) out = out.where(column, "=", value);
    return out;
  });
  return paginate(
    base,
    request,
    (q) => q.selectAll().orderBy("created_at", "desc").orderBy("id", "desc"),
    (row: AuditLogItem) => ("detail" in row ? { ...row, detail: parseJsonColumn(row.detail as string | null) } : row),
  );
}
