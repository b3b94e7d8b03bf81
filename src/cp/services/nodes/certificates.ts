/**
 * A node's certificates as a whole: what deleting a node and reissuing its package both do to
 * every certificate it still holds (current or previous, CP client or business server).
 */
import type { Kysely } from "kysely";
import type { ControlSchema } from "../../../shared/db/index.js";
import type { RevocationReason } from "../../../shared/pki/index.js";
import type { Clock } from "../../../shared/time/index.js";
import { writePkiAudit } from "../audit/pki-audit.js";

export interface NodeRevocation {
  reason: RevocationReason;
  /** Who asked: an agent id, or "system". */
  actor: string;
  /** Added to each PKI audit row's detail. */
  detail?: Record<string, unknown>;
}

/** Revokes every certificate the node still holds, each with its PKI audit row, inside `tx`; returns their ids. */
export async function revokeNodeCertificates(
  tx: Kysely<ControlSchema>,
  clock: Clock,
  nodeId: string,
  revocation: NodeRevocation,
): Promise<string[]> {
  const now = clock.now();
  const certs = await tx
    .selectFrom("certificates")
    .select(["id", "serial_hex", "ca_profile", "leaf_profile"])
    .where("owner_type", "=", "node")
    .where("owner_id", "=", nodeId)
    .where("status", "!=", "revoked")
    .execute();
  for (const cert of certs) {
    await tx
      .updateTable("certificates")
      .set({ status: "revoked", revoked_at: now, revocation_reason: revocation.reason })
      .where("id", "=", cert.id)
      .execute();
    await writePkiAudit(tx, clock, {
      event: "cert.revoked",
      certificateId: cert.id,
      caProfile: cert.ca_profile,
      serialHex: cert.serial_hex,
      profile: cert.leaf_profile,
      actor: revocation.actor,
      detail: { reason: revocation.reason, node_id: nodeId, ...revocation.detail },
    });
  }
  return certs.map((cert) => cert.id);
}
