/**
 * The node_cert_retire job (the last step of a rotation): due when the grace period after the
 * node's ack ends. It revokes the certificates the rotation replaced (reason superseded: the
 * business server certificate no longer staples anywhere, the CP client certificate is already
 * refused by its retire instant), stops naming the old client certificate as the node's previous
 * one, and marks the rotation completed, all with the job's success.
 */
import { z } from "zod";
import { writePkiAudit } from "../services/audit/pki-audit.js";
import type { CpContext } from "../services/context.js";
import { type JobHandler, type JobRun, PermanentJobError } from "./worker.js";

const JOB_ACTOR = "job:node_cert_retire";
const id = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
const payloadSchema = z.object({ node_id: id, rotation_id: id });

export function nodeCertRetireHandler(ctx: CpContext): JobHandler {
  return (run) => retireOldCertificates(ctx, run);
}

async function retireOldCertificates(ctx: CpContext, run: JobRun): Promise<void> {
  const payload = payloadSchema.safeParse(run.job.payload);
  if (!payload.success) throw new PermanentJobError("job payload does not name a node and a rotation");
  const { node_id: nodeId, rotation_id: rotationId } = payload.data;
  const revoked = await ctx.controlDb.transaction().execute(async (tx) => {
    const now = ctx.clock.now();
    const rotation = await tx.selectFrom("node_cert_rotations").selectAll().where("id", "=", rotationId).executeTakeFirst();
    if (!rotation) throw new PermanentJobError("the rotation no longer exists (node deleted?)");
    const oldIds = [rotation.old_server_cert_id, rotation.old_client_cert_id].filter((c): c is string => c !== null);
    const certs =
      oldIds.length === 0
        ? []
        : await tx
            .selectFrom("certificates")
            .select(["id", "serial_hex", "ca_profile", "leaf_profile"])
            .where("id", "in", oldIds)
            .where("status", "!=", "revoked")
            .execute();
    for (const cert of certs) {
      await tx
        .updateTable("certificates")
        .set({ status: "revoked", revoked_at: now, revocation_reason: "superseded" })
        .where("id", "=", cert.id)
        .execute();
      await writePkiAudit(tx, ctx.clock, {
        event: "cert.revoked",
        certificateId: cert.id,
        caProfile: cert.ca_profile,
        serialHex: cert.serial_hex,
        profile: cert.leaf_profile,
        jobId: run.job.id,
        actor: JOB_ACTOR,
        detail: { reason: "superseded", node_id: nodeId, rotation_id: rotationId },
      });
    }
    await tx
      .updateTable("nodes")
      .set({ previous_client_cert_id: null, previous_client_cert_retire_at: null })
      .where("id", "=", nodeId)
      .where("previous_client_cert_id", "=", rotation.old_client_cert_id)
      .execute();
    await tx.updateTable("node_cert_rotations").set({ completed_at: now, updated_at: now }).where("id", "=", rotationId).execute();
    await writePkiAudit(tx, ctx.clock, {
      event: "rotation.completed",
      jobId: run.job.id,
      actor: JOB_ACTOR,
      detail: { node_id: nodeId, rotation_id: rotationId, revoked_certificate_ids: certs.map((c) => c.id) },
    });
    await run.complete(tx, { node_id: nodeId, rotation_id: rotationId, revoked_certificate_ids: certs.map((c) => c.id) });
    return certs;
  });
  const log = ctx.log.category("PKI");
  for (const cert of revoked)
    log.info("cert.revoked", { certificate_id: cert.id, serial: cert.serial_hex, reason: "superseded", node_id: nodeId });
  log.info("rotation.completed", { node_id: nodeId, rotation_id: rotationId });
  // An event stream opened with the old client certificate ends; the node reconnects with the new one.
  ctx.events.notice({ kind: "node.credentials_changed", nodeId });
}
