/**
 * The PKI audit trail: every CA created, certificate issued or revoked, package built, and PKI
 * job state change. Writers pass the transaction that makes the change, so a row exists exactly
 * when the change committed. Rows hold identifiers and public facts only, never key material.
 */
import type { Kysely } from "kysely";
import { writeChained } from "../../../shared/db/audit-chains.js";
import type { ControlSchema } from "../../../shared/db/index.js";
import { newId } from "../../../shared/ids.js";
import type { Clock } from "../../../shared/time/index.js";

export interface PkiAuditEntry {
  event: string;
  certificateId?: string;
  caProfile?: string;
  serialHex?: string;
  /** The certificate's leaf profile (or the CA profile for a CA); looked up when a certificate id comes without it. */
  profile?: string;
  jobId?: string;
  /** An agent id, a system actor name (`job:<kind>`), or "system". */
  actor: string;
  detail?: Record<string, unknown>;
}

export async function writePkiAudit(db: Kysely<ControlSchema>, clock: Clock, entry: PkiAuditEntry): Promise<void> {
  const row = {
    id: newId("pka"),
    created_at: clock.now(),
    event: entry.event,
    certificate_id: entry.certificateId ?? null,
    ca_profile: entry.caProfile ?? null,
    serial_hex: entry.serialHex ?? null,
    profile: entry.profile ?? (await certificateProfile(db, entry.certificateId)),
    job_id: entry.jobId ?? null,
    actor: entry.actor,
    detail: entry.detail ? JSON.stringify(entry.detail) : null,
  };
  await writeChained(db, "pki_audit_logs", row, (values) => db.insertInto("pki_audit_logs").values(values).compile());
}

/** Writers that only know the certificate id (a bulk revocation) still get a filterable profile. */
async function certificateProfile(db: Kysely<ControlSchema>, certificateId: string | undefined): Promise<string | null> {
  if (!certificateId) return null;
  const row = await db.selectFrom("certificates").select("leaf_profile").where("id", "=", certificateId).executeTakeFirst();
  return row?.leaf_profile ?? null;
}
