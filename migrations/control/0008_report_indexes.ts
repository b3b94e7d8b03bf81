/**
 * The index the daily agent-login report counts with (src/cp/services/reports/daily.ts): the
 * result followed by the time, so the count of one result on one day is a narrow index range.
 */
import { allowLongStatements, createIndex, type MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await allowLongStatements(db);
  await createIndex(db, "agent_login_logs_report", "agent_login_logs", ["result", "created_at"]);
}

export async function down(db: MigrationDb): Promise<void> {
  await db.schema.dropIndex("agent_login_logs_report").execute();
}
