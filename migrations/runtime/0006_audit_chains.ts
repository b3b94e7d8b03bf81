/**
 * Tamper-evident audit trails (shared/audit/chain-hash.ts, shared/db/audit-chains.ts): every row
 * of login_logs and user_audit_logs gets chain_id, chain_seq and chain_hash; rows written before
 * this version keep them null (verify counts them as legacy, unchained). (chain_id, chain_seq)
 * is how verify walks a chain. user_audit_logs gets indexes for the filters of
 * GET /admin/v1/audit-logs (its app filter has one since 0003); login_logs only the chain index: every login writes a row, and each
 * index is one more b-tree page written per login (its app and user filters are indexed
 * already, see 0001 and 0004).
 */
import {
  addAuditChainColumns,
  allowLongStatements,
  createIndex,
  dropAuditChainColumns,
  type MigrationDb,
} from "../../src/shared/db/migration-helpers.js";

const CHAINED = ["login_logs", "user_audit_logs"];

const FILTER_INDEXES: Array<[name: string, table: string, columns: string[]]> = [
  ["user_audit_logs_user_time", "user_audit_logs", ["user_id", "created_at"]],
  ["user_audit_logs_event_time", "user_audit_logs", ["event", "created_at"]],
  ["user_audit_logs_actor_time", "user_audit_logs", ["actor", "created_at"]],
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
