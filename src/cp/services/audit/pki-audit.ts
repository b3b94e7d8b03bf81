/** The PKI audit trail: every CA created, certificate issued or revoked, and PKI job retried or cancelled. */
import type { Kysely } from "kysely";
import type { ControlSchema } from "../../../shared/db/index.js";
import { newId } from "../../../shared/ids.js";
import type { Clock } from "../../../shared/time/index.js";

export interface PkiAuditEntry {
  event: string;
  certificateId?: string;
  caProfile?: string;
  serialHex?: string;
  actor: string;
  detail?: Record<string, unknown>;
}

export async function writePkiAudit(db: Kysely<ControlSchema>, clock: Clock, entry: PkiAuditEntry): Promise<void> {
  await db
    .insertInto("pki_audit_logs")
    .values({
      id: newId("pka"),
      created_at: clock.now(),
      event: entry.event,
      certificate_id: entry.certificateId ?? null,
      ca_profile: entry.caProfile ?? null,
      serial_hex: entry.serialHex ?? null,
      actor: entry.actor,
      detail: entry.detail ? JSON.stringify(entry.detail) : null,
    })
    .execute();
}
