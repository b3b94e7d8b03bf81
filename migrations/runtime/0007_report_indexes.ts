/**
 * The index the daily login report counts with (src/cp/services/reports/daily.ts): its key
 * (app, method, result) followed by the time, so the count of one key on one day is a narrow
 * index range and the report visits each row in its range once. The card reports need no new
 * index: card_keys_app_created and card_keys_app_activated (0001) are already key + time.
 *
 * The cost: one more b-tree written per login log row. Its entries are appended at the end of
 * each key's range (created_at grows), so that write stays on a few hot pages.
 */
import { allowLongStatements, createIndex, type MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await allowLongStatements(db);
  await createIndex(db, "login_logs_report", "login_logs", ["app_id", "method", "result", "created_at"]);
}

export async function down(db: MigrationDb): Promise<void> {
  await db.schema.dropIndex("login_logs_report").execute();
}
