/**
 * Reissuing a node's deploy package (the manual's "Node Certificate Reissuance"): for a node
 * whose certificates are compromised or must be replaced. In one transaction every certificate
 * the node still holds is revoked (its CP client certificate, so the old package can no longer
 * reach the node API, and its business server certificate, so OCSP tells SDK clients to stop
 * trusting it) and the NodeOnboard job is queued again; that job issues new certificates and
 * builds the new package (src/cp/jobs/node-onboard.ts). The node row stays: its id, name,
 * configuration and status carry over, so a disabled node stays disabled.
 */
import type { Kysely } from "kysely";
import type { ControlSchema } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import type { RevocationReason } from "../../../shared/pki/index.js";
import { writeNodeAudit } from "../audit/node-audit.js";
import type { Actor, CpContext } from "../context.js";
import { enqueueJob } from "../pki/jobs.js";
import { revokeNodeCertificates } from "./certificates.js";
import { NODE_ONBOARD_JOB_KIND } from "./lifecycle.js";
import { nodeNotFound } from "./views.js";

/** The old credentials are replaced, not (necessarily) compromised; OCSP reports this reason. */
const REISSUE_REVOCATION_REASON: RevocationReason = "superseded";

export interface ReissuedPackage {
  node_id: string;
  /** Follow it at GET /admin/v1/pki/jobs/:id; its result names the new package. */
  job_id: string;
  revoked_certificate_ids: string[];
  job_url: string;
  /** Where the new package appears (current: true) once the job has succeeded. */
  deploy_packages_url: string;
}

export async function reissueNodePackage(ctx: CpContext, actor: Actor, nodeId: string): Promise<ReissuedPackage> {
  const now = ctx.clock.now();
  const outcome = await ctx.controlDb.transaction().execute(async (tx) => {
    // Touching the row first takes its lock: a concurrent delete or onboarding commit is ordered
    // before or after this transaction, never interleaved with it.
    const touched = await tx.updateTable("nodes").set({ updated_at: now }).where("id", "=", nodeId).executeTakeFirst();
    if (Number(touched.numUpdatedRows) !== 1) throw nodeNotFound();
    await refuseWhileOnboarding(tx, nodeId);
    // Every certificate the node still holds, current or previous: no old credential stays valid.
    const revoked = await revokeNodeCertificates(tx, ctx.clock, nodeId, {
      reason: REISSUE_REVOCATION_REASON,
      actor: actor.agentId ?? "system",
      detail: { action: "reissue-package" },
    });
    // A rotation not applied yet would deliver certificates this reissue just revoked.
    await tx.updateTable("nodes").set({ pending_rotation_id: null }).where("id", "=", nodeId).execute();
    await tx
      .updateTable("node_cert_rotations")
      .set({ superseded_at: now, updated_at: now, credentials_ciphertext: null })
      .where("node_id", "=", nodeId)
      .where("superseded_at", "is", null)
      .where("acked_at", "is", null)
      .execute();
    const jobId = await enqueueJob(tx, now, {
      kind: NODE_ONBOARD_JOB_KIND,
      targetType: "node",
      targetId: nodeId,
      payload: { node_id: nodeId, reason: "reissue" },
      createdBy: actor.agentId,
    });
    await writeNodeAudit(tx, ctx.clock, {
      nodeId,
      event: "node.package_reissued",
      actor,
      detail: { job_id: jobId, revoked_certificate_ids: revoked },
    });
    return { jobId, revoked };
  });
  ctx.log.category("PKI").info("node.package_reissued", {
    node_id: nodeId,
    job_id: outcome.jobId,
    revoked_certificates: outcome.revoked.length,
    agent_id: actor.agentId,
  });
  ctx.events.jobQueued();
  // The node's open event stream was admitted with the old client certificate: end it now.
  ctx.events.notice({ kind: "node.credentials_changed", nodeId });
  return {
    node_id: nodeId,
    job_id: outcome.jobId,
    revoked_certificate_ids: outcome.revoked,
    job_url: `/admin/v1/pki/jobs/${outcome.jobId}`,
    deploy_packages_url: `/admin/v1/nodes/${nodeId}/deploy-packages`,
  };
}

/**
 * An onboarding (or an earlier reissue) still pending or running would attach certificates this
 * reissue cannot revoke, leaving a valid package behind; the operator waits for it instead.
 */
async function refuseWhileOnboarding(tx: Kysely<ControlSchema>, nodeId: string): Promise<void> {
  const open = await tx
    .selectFrom("pki_jobs")
    .select("id")
    .where("target_type", "=", "node")
    .where("target_id", "=", nodeId)
    .where("kind", "=", NODE_ONBOARD_JOB_KIND)
    .where("status", "in", ["pending", "running"])
    .executeTakeFirst();
  if (open) {
    throw new AuthNexusError("NODE_NOT_PROVISIONED", {
      message: `The node's package job ${open.id} has not finished yet; follow it at /admin/v1/pki/jobs/${open.id}.`,
    });
  }
}
