/**
 * Node certificate rotation: one row per rotation (what was replaced by what, the sealed new
 * credentials until the node has them, the cp_server_ca ids of the CP trust bundle it delivers,
 * and when each step happened), and two node columns the
 * node API reads on every call at no extra cost: the rotation waiting for the node (its checkin
 * then says configs are pending) and the instant after which the previous CP client
 * certificate is refused.
 */
import { sql } from "kysely";
import { binaryType, createIndex, type MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await db.schema
    .createTable("node_cert_rotations")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("node_id", "text", (c) => c.notNull())
    .addColumn("reason", "text", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("issue_job_id", "text", (c) => c.notNull())
    .addColumn("retire_job_id", "text")
    .addColumn("old_server_cert_id", "text")
    .addColumn("old_client_cert_id", "text")
    .addColumn("new_server_cert_id", "text")
    .addColumn("new_client_cert_id", "text")
    .addColumn("package_id", "text")
    .addColumn("credentials_ciphertext", binaryType(db))
    .addColumn("cp_ca_ids", "text")
    .addColumn("issued_at", "bigint")
    .addColumn("delivered_at", "bigint")
    .addColumn("acked_at", "bigint")
    .addColumn("retire_at", "bigint")
    .addColumn("completed_at", "bigint")
    .addColumn("superseded_at", "bigint")
    .execute();
  await createIndex(db, "node_cert_rotations_node", "node_cert_rotations", ["node_id", "created_at"]);
  await db.schema.alterTable("nodes").addColumn("pending_rotation_id", "text").execute();
  await db.schema.alterTable("nodes").addColumn("previous_client_cert_retire_at", "bigint").execute();
}

export async function down(db: MigrationDb): Promise<void> {
  await sql`alter table nodes drop column previous_client_cert_retire_at`.execute(db);
  await sql`alter table nodes drop column pending_rotation_id`.execute(db);
  await db.schema.dropTable("node_cert_rotations").execute();
}
