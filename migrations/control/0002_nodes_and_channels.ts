/**
 * Nodes and the four channels: PKI job leases (so a job whose CP died is reclaimed instead of
 * staying "running"), the node's disable time (OCSP answers revoked from then on), and the
 * retention watermark of the two Channel 3 change logs.
 */
import type { MigrationDb } from "../../src/shared/db/migration-helpers.js";
import { createIndex } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await db.schema.alterTable("pki_jobs").addColumn("claimed_by", "text").execute();
  await db.schema.alterTable("pki_jobs").addColumn("lease_expires_at", "bigint").execute();
  await db.schema.alterTable("nodes").addColumn("disabled_at", "bigint").execute();
  await createIndex(db, "pki_jobs_target", "pki_jobs", ["target_type", "target_id"]);
  await createIndex(db, "command_results_node", "command_results", ["node_id"]);

  // Everything with id <= pruned_through may have been compacted away (see services/delta-log).
  await db.schema
    .createTable("delta_retention")
    .addColumn("stream", "text", (c) => c.primaryKey())
    .addColumn("pruned_through", "bigint", (c) => c.notNull())
    .addColumn("pruned_at", "bigint", (c) => c.notNull())
    .execute();
  await createIndex(db, "server_blacklist_changes_entry", "server_blacklist_changes", ["entry_id"]);
  await createIndex(db, "auth_epoch_changes_user_app", "auth_epoch_changes", ["user_id", "app_id", "id"]);
}

export async function down(db: MigrationDb): Promise<void> {
  await db.schema.dropTable("delta_retention").execute();
}
