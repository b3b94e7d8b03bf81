/**
 * Removed blacklist entries leave a tombstone (removed_at + the remove's change id) instead of
 * vanishing: nodes sharing one Runtime DB apply the log at their own pace, and without the
 * tombstone a node still behind would re-insert an entry another node had already removed.
 */
import type { MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await db.schema.alterTable("applied_blacklist").addColumn("removed_at", "bigint").execute();
}

export async function down(db: MigrationDb): Promise<void> {
  await db.deleteFrom("applied_blacklist").where("removed_at", "is not", null).execute();
  await db.schema.alterTable("applied_blacklist").dropColumn("removed_at").execute();
}
