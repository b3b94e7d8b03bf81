/**
 * Per-user variables (KeyAuth's getvar/setvar): a logged-in user's own small key/value store,
 * capped per application by app_policy (user_variables_max_count, user_variable_max_bytes).
 * Keyed by user and key: user ids are unique across applications, and every read and write names
 * one user, so the primary key is the only index needed. Keys compare case-sensitively (binary
 * text on both databases). Values are text: the size limit is counted in UTF-8 bytes.
 */
import type { MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await db.schema
    .createTable("user_variables")
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("key", "text", (c) => c.notNull())
    .addColumn("value", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("user_variables_pk", ["user_id", "key"])
    .execute();
}

export async function down(db: MigrationDb): Promise<void> {
  await db.schema.dropTable("user_variables").execute();
}
