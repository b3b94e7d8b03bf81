/**
 * A cloud function can be switched off without deleting it: a disabled function stays in the
 * Control DB (script, version, history) but leaves the manifest nodes pull, so nodes stop
 * serving it. Existing functions stay enabled.
 */
import { sql } from "kysely";
import type { MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await db.schema
    .alterTable("cloud_functions")
    .addColumn("enabled", "integer", (c) => c.notNull().defaultTo(1))
    .execute();
}

export async function down(db: MigrationDb): Promise<void> {
  await sql`alter table cloud_functions drop column enabled`.execute(db);
}
