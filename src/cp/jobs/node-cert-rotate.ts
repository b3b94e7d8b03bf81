/**
 * The node_cert_rotate job (step 2 of a rotation, src/cp/services/nodes/rotation.ts): new
 * business server and CP client certificates, a rebuilt deploy package, and in ONE transaction
 * with the job's success: both certificates recorded, the new client certificate made the
 * node's current one (the old one stays accepted as the previous one until the node's ack plus
 * the grace period), the package stored, and the new credentials sealed for the node's next
 * config pull. After commit the node is hinted to pull at once.
 */
import { z } from "zod";
import { newId } from "../../shared/ids.js";
import { writeNodeAudit } from "../services/audit/node-audit.js";
import { writePkiAudit } from "../services/audit/pki-audit.js";
import type { CpContext } from "../services/context.js";
import { storeDeployPackage } from "../services/nodes/deploy-packages.js";
import { sealRotationCredentials } from "../services/nodes/rotation.js";
import { trustedCas } from "../services/pki/inventory.js";
import { buildNodePackage, issueNodeCredentials, logNodeCredentialsIssued, recordNodeCredentials } from "./node-credentials.js";
import { type JobHandler, type JobRun, PermanentJobError } from "./worker.js";

const JOB_ACTOR = "job:node_cert_rotate";
const id = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
const payloadSchema = z.object({ node_id: id, rotation_id: id });

export function nodeCertRotateHandler(ctx: CpContext): JobHandler {
  return (run) => rotateNodeCertificates(ctx, run);
}

async function rotateNodeCertificates(ctx: CpContext, run: JobRun): Promise<void> {
  const payload = payloadSchema.safeParse(run.job.payload);
  if (!payload.success) throw new PermanentJobError("job payload does not name a node and a rotation");
  const { node_id: nodeId, rotation_id: rotationId } = payload.data;
  const node = await ctx.controlDb.selectFrom("nodes").selectAll().where("id", "=", nodeId).executeTakeFirst();
  if (!node) throw new PermanentJobError("node no longer exists");
  if (node.server_cert_id === null || node.client_cert_id === null) throw new PermanentJobError("the node has no certificates to rotate");

  const credentials = await issueNodeCredentials(ctx, node);
  const packageId = newId("pkg");
  const pkg = await buildNodePackage(ctx, node, credentials, packageId);

  const ids = await ctx.controlDb.transaction().execute(async (tx) => {
    const now = ctx.clock.now();
    const touched = await tx.updateTable("nodes").set({ updated_at: now }).where("id", "=", nodeId).executeTakeFirst();
    if (Number(touched.numUpdatedRows) !== 1) throw new PermanentJobError("node was deleted while its rotation job ran");
    const current = await tx
      .selectFrom("nodes")
      .select(["server_cert_id", "client_cert_id"])
      .where("id", "=", nodeId)
      .executeTakeFirstOrThrow();
    const rotation = await tx.selectFrom("node_cert_rotations").selectAll().where("id", "=", rotationId).executeTakeFirst();
    if (!rotation || rotation.superseded_at !== null)
      throw new PermanentJobError("the rotation was superseded (by a newer rotation, or the node's package was reissued)");
    // Only the node's newest live rotation may issue (same order as the rotation list: time, then id).
    const newest = await tx
      .selectFrom("node_cert_rotations")
      .select("id")
      .where("node_id", "=", nodeId)
      .where("superseded_at", "is", null)
      .orderBy("created_at", "desc")
      .orderBy("id", "desc")
      .executeTakeFirstOrThrow();
    if (newest.id !== rotationId) throw new PermanentJobError(`a newer rotation (${newest.id}) of this node was requested`);
    const recorded = await recordNodeCredentials(tx, ctx, nodeId, credentials, { actor: JOB_ACTOR, jobId: run.job.id });
    // The CP trust read in this transaction: a cp_server_ca rotation's publish commits before or after it, never in between.
    const cpTrust = await trustedCas(tx, "cp_server_ca");
    const sealed = sealRotationCredentials(ctx.masterKey, {
      rotation_id: rotationId,
      server_cert_pem: credentials.server.certPem,
      server_key_pem: credentials.server.keyPem,
      server_issuer_pem: credentials.serverCa.certPem,
      client_cert_pem: credentials.client.certPem,
      client_key_pem: credentials.client.keyPem,
      cp_ca_pem: cpTrust.bundle,
    });
    await tx
      .updateTable("nodes")
      .set({
        server_cert_id: recorded.serverCertId,
        client_cert_id: recorded.clientCertId,
        previous_client_cert_id: current.client_cert_id,
        previous_client_cert_retire_at: null,
        pending_rotation_id: rotationId,
        updated_at: now,
      })
      .where("id", "=", nodeId)
      .execute();
    await storeDeployPackage(tx, ctx, { id: packageId, nodeId, jobId: run.job.id, archive: pkg.archive, sha256: pkg.sha256 });
    await tx
      .updateTable("node_cert_rotations")
      .set({
        old_server_cert_id: current.server_cert_id,
        old_client_cert_id: current.client_cert_id,
        new_server_cert_id: recorded.serverCertId,
        new_client_cert_id: recorded.clientCertId,
        package_id: packageId,
        credentials_ciphertext: sealed,
        cp_ca_ids: JSON.stringify(cpTrust.ids),
        issued_at: now,
        updated_at: now,
      })
      .where("id", "=", rotationId)
      .execute();
    const detail = { node_id: nodeId, rotation_id: rotationId, package_id: packageId, job_id: run.job.id };
    await writePkiAudit(tx, ctx.clock, {
      event: "package.built",
      jobId: run.job.id,
      actor: JOB_ACTOR,
      detail: { ...detail, sha256: pkg.sha256 },
    });
    await writePkiAudit(tx, ctx.clock, {
      event: "rotation.issued",
      jobId: run.job.id,
      actor: JOB_ACTOR,
      detail: { ...detail, server_cert_id: recorded.serverCertId, client_cert_id: recorded.clientCertId },
    });
    await writeNodeAudit(tx, ctx.clock, { nodeId, event: "node.rotation_issued", actor: JOB_ACTOR, detail });
    await run.complete(tx, {
      node_id: nodeId,
      rotation_id: rotationId,
      server_cert_id: recorded.serverCertId,
      client_cert_id: recorded.clientCertId,
      package_id: packageId,
      package_sha256: pkg.sha256,
    });
    return recorded;
  });
  logNodeCredentialsIssued(ctx, nodeId, credentials, ids);
  ctx.log.category("PKI").info("rotation.issued", { node_id: nodeId, rotation_id: rotationId, package_id: packageId, job_id: run.job.id });
  ctx.events.publish("config.pending", nodeId);
}
