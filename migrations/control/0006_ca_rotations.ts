/**
 * CA rotations: one row per rotation of a CA profile (prepare → publish → switch → retire, or
 * rollback before retire), naming the CA being replaced and its successor, the config versions
 * its last publication created (what nodes must apply before the switch), and when it ended. At
 * most one rotation per profile is open (finished_at null), which a partial unique index
 * enforces on both databases.
 */
import { createIndex, type MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await db.schema
    .createTable("ca_rotations")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("ca_profile", "text", (c) => c.notNull())
    .addColumn("phase", "text", (c) => c.notNull())
    .addColumn("old_ca_id", "text", (c) => c.notNull().references("certificate_authorities.id"))
    .addColumn("new_ca_id", "text", (c) => c.notNull().references("certificate_authorities.id"))
    // JSON [{type, scope, version}]: the versions the last publication wrote; null before the first.
    .addColumn("published_versions", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("finished_at", "bigint")
    .addColumn("created_by", "text")
    // JSON: what each phase reported (a forced switch and the nodes it did not wait for, leaves revoked…).
    .addColumn("detail", "text")
    .execute();
  await createIndex(db, "ca_rotations_open", "ca_rotations", ["ca_profile"], { unique: true, where: "finished_at is null" });
  await createIndex(db, "ca_rotations_created", "ca_rotations", ["created_at"]);
}

export async function down(db: MigrationDb): Promise<void> {
  await db.schema.dropTable("ca_rotations").execute();
}
