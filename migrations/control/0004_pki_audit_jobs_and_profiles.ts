/**
 * The PKI audit log gains the two things operators filter on besides the certificate: the job a
 * row belongs to (job state changes, packages built by a job) and the certificate's profile
 * (node_server, app_client, … or the CA profile for a CA). Existing rows are filled in from the
 * inventory and from the job id their detail already carried, so old and new rows filter alike.
 */
import { sql } from "kysely";
import type { MigrationDb } from "../../src/shared/db/migration-helpers.js";
import { createIndex } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await db.schema.alterTable("pki_audit_logs").addColumn("job_id", "text").execute();
  await db.schema.alterTable("pki_audit_logs").addColumn("profile", "text").execute();
  await createIndex(db, "pki_audit_logs_certificate", "pki_audit_logs", ["certificate_id", "created_at"]);
  await createIndex(db, "pki_audit_logs_job", "pki_audit_logs", ["job_id", "created_at"]);
  await createIndex(db, "pki_audit_logs_event", "pki_audit_logs", ["event", "created_at"]);
  await backfillProfiles(db);
  await backfillJobIds(db);
}

export async function down(db: MigrationDb): Promise<void> {
  for (const index of ["pki_audit_logs_certificate", "pki_audit_logs_job", "pki_audit_logs_event"])
    await db.schema.dropIndex(index).execute();
  await sql`alter table pki_audit_logs drop column profile`.execute(db);
  await sql`alter table pki_audit_logs drop column job_id`.execute(db);
}

async function backfillProfiles(db: MigrationDb): Promise<void> {
  await sql`update pki_audit_logs set profile = (
      select c.leaf_profile from certificates c where c.id = pki_audit_logs.certificate_id)
    where certificate_id is not null`.execute(db);
  await sql`update pki_audit_logs set profile = ca_profile where event = 'ca.created'`.execute(db);
}

/** JSON functions differ between the two databases, so the detail is read here rather than in SQL. */
async function backfillJobIds(db: MigrationDb): Promise<void> {
  const rows: { id: string; detail: string }[] = await db
    .selectFrom("pki_audit_logs")
    .select(["id", "detail"])
    .where("detail", "like", '%"job_id"%')
    .execute();
  for (const row of rows) {
    const jobId = jobIdOf(row.detail);
    if (jobId) await db.updateTable("pki_audit_logs").set({ job_id: jobId }).where("id", "=", row.id).execute();
  }
}

function jobIdOf(detail: string): string | null {
  try {
    const parsed = JSON.parse(detail) as { job_id?: unknown };
    return typeof parsed.job_id === "string" ? parsed.job_id : null;
  } catch {
    return null;
  }
}
