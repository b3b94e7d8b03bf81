/**
 * Tamper-evident audit trails (shared/audit/chain-hash.ts, shared/db/audit-chains.ts): every row
 * of the five Control DB trails gets chain_id, chain_seq and chain_hash; rows written before
 * this version keep them null (verify counts them as legacy, unchained). (chain_id, chain_seq)
 * is how verify walks a chain; the other indexes serve the filters of the log endpoints
 * (actor, target, action) in their newest-first time order.
 */
import {
  addAuditChainColumns,
  allowLongStatements,
  createIndex,
  dropAuditChainColumns,
  type MigrationDb,
} from "../../src/shared/db/migration-helpers.js";

const CHAINED = ["agent_audit_logs", "pki_audit_logs", "node_audit_logs", "node_auth_events", "agent_login_logs"];

const FILTER_INDEXES: Array<[name: string, table: string, columns: string[]]> = [
  ["agent_audit_logs_agent_time", "agent_audit_logs", ["agent_id", "created_at"]],
  ["agent_audit_logs_action_time", "agent_audit_logs", ["action", "created_at"]],
  ["agent_audit_logs_target_time", "agent_audit_logs", ["target_id", "created_at"]],
  ["pki_audit_logs_actor_time", "pki_audit_logs", ["actor", "created_at"]],
  ["node_audit_logs_node_time", "node_audit_logs", ["node_id", "created_at"]],
  ["node_audit_logs_event_time", "node_audit_logs", ["event", "created_at"]],
  ["node_audit_logs_actor_time", "node_audit_logs", ["actor", "created_at"]],
  ["node_auth_events_node_time", "node_auth_events", ["node_id", "created_at"]],
  ["node_auth_events_event_time", "node_auth_events", ["event", "created_at"]],
  ["agent_login_logs_username_time", "agent_login_logs", ["username", "created_at"]],
  ["agent_login_logs_agent_time", "agent_login_logs", ["agent_id", "created_at"]],
];

export async function up(db: MigrationDb): Promise<void> {
  await allowLongStatements(db);
  for (const table of CHAINED) await addAuditChainColumns(db, table);
  for (const [name, table, columns] of FILTER_INDEXES) await createIndex(db, name, table, columns);
}

export async function down(db: MigrationDb): Promise<void> {
  for (const [name] of FILTER_INDEXES) await db.schema.dropIndex(name).execute();
  for (const table of CHAINED) await dropAuditChainColumns(db, table);
}
