/**
 * Read side of the PKI audit log (written by services/audit/pki-audit.ts inside the transaction
 * of each change): paginated, newest first, filtered by time range, event, certificate and job.
 */
import type { PkiAuditLogsTable } from "../../../shared/db/control-schema.js";
import type { CpContext } from "../context.js";
import { parseJsonColumn } from "../json-column.js";
import { type Page, type PageRequest, paginate, type TimeRange } from "../pagination.js";

export interface PkiAuditFilter extends TimeRange {
  event?: string | undefined;
  certificateId?: string | undefined;
  serial?: string | undefined;
  jobId?: string | undefined;
}

/** A PKI audit row as the API shows it: `detail` parsed from its JSON text. */
export type PkiAuditLogView = Omit<PkiAuditLogsTable, "detail"> & { detail: unknown };

export async function listPkiAuditLogs(ctx: CpContext, filter: PkiAuditFilter, request: PageRequest): Promise<Page<PkiAuditLogView>> {
  const base = ctx.controlDb.selectFrom("pki_audit_logs").$call((q) => {
    let out = q;
    if (filter.from !== undefined) out = out.where("created_at", ">=", filter.from);
    if (filter.to !== undefined) out = out.where("created_at", "<=", filter.to);
    if (filter.event) out = out.where("event", "=", filter.event);
    if (filter.certificateId) out = out.where("certificate_id", "=", filter.certificateId);
    // Serials are stored as lower-case hex; accept what openssl prints (upper case, colons).
    if (filter.serial) out = out.where("serial_hex", "=", filter.serial.replace(/:/g, "").toLowerCase());
    if (filter.jobId) out = out.where("job_id", "=", filter.jobId);
    return out;
  });
  return paginate(
    base,
    request,
    (q) => q.selectAll().orderBy("created_at", "desc").orderBy("id", "desc"),
    (r) => ({ ...r, detail: parseJsonColumn(r.detail) }),
  );
}
