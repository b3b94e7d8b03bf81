/**
 * The seven audit trails: where each lives and which of its columns the chain covers (in the
 * order they are hashed). Names are the admin API's (`GET /admin/v1/<name>`, except the PKI and
 * node trails, which live under /pki and /nodes), used by `authnexus ops audit <log>` and by
 * `POST /admin/v1/audit/verify`.
 */
import type { AuditDatabase } from "./chain-hash.js";

export interface AuditLogDefinition {
  table: AuditTable;
  database: AuditDatabase;
  /** Every column but chain_id/chain_seq/chain_hash, in hashing order. */
  columns: readonly string[];
  /** The admin API path that lists it. */
  path: string;
}

export const AUDIT_TABLE_COLUMNS = {
  agent_audit_logs: [
    "id",
    "created_at",
    "agent_id",
    "agent_username",
    "action",
    "target_type",
    "target_id",
    "result",
    "error_code",
    "request_id",
    "ip",
    "detail",
  ],
  pki_audit_logs: ["id", "created_at", "event", "certificate_id", "ca_profile", "serial_hex", "actor", "detail", "job_id", "profile"],
  node_audit_logs: ["id", "created_at", "node_id", "event", "actor", "detail"],
  node_auth_events: ["id", "created_at", "node_id", "event", "peer", "cert_serial", "detail"],
  agent_login_logs: ["id", "created_at", "username", "agent_id", "ip", "user_agent", "result", "reason"],
  user_audit_logs: ["id", "created_at", "app_id", "user_id", "event", "actor", "detail"],
  login_logs: ["id", "created_at", "app_id", "user_id", "username", "method", "result", "reason", "ip", "device_id", "node_id"],
} as const;

export type AuditTable = keyof typeof AUDIT_TABLE_COLUMNS;

export const AUDIT_LOGS = {
  "audit-logs": { table: "user_audit_logs", database: "runtime", path: "/admin/v1/audit-logs" },
  "login-logs": { table: "login_logs", database: "runtime", path: "/admin/v1/login-logs" },
  "agent-audit-logs": { table: "agent_audit_logs", database: "control", path: "/admin/v1/agent-audit-logs" },
  "agent-login-logs": { table: "agent_login_logs", database: "control", path: "/admin/v1/agent-login-logs" },
  "pki-audit-logs": { table: "pki_audit_logs", database: "control", path: "/admin/v1/pki/audit-logs" },
  "node-audit-logs": { table: "node_audit_logs", database: "control", path: "/admin/v1/nodes/audit-logs" },
  "node-auth-events": { table: "node_auth_events", database: "control", path: "/admin/v1/nodes/auth-events" },
} as const satisfies Record<string, Omit<AuditLogDefinition, "columns">>;

export type AuditLogName = keyof typeof AUDIT_LOGS;

export const AUDIT_LOG_NAMES = Object.keys(AUDIT_LOGS) as [AuditLogName, ...AuditLogName[]];

export function auditLog(name: AuditLogName): AuditLogDefinition {
  const log = AUDIT_LOGS[name];
  return { ...log, columns: AUDIT_TABLE_COLUMNS[log.table] };
}

export function isAuditTable(table: string): table is AuditTable {
  return Object.hasOwn(AUDIT_TABLE_COLUMNS, table);
}
