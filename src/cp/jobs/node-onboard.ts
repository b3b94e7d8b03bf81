/**
 * The NodeOnboard job: issues the node's two certificates and builds its deploy package
 * (./node-credentials.ts), then records everything in ONE transaction together with the job's
 * success. Signing happens before that transaction and leaves no trace, so a crash anywhere
 * before commit leaves nothing behind and a retry simply starts over.
 */
import type { Kysely } from "kysely";
import { z } from "zod";
import type { ControlSchema } from "../../shared/db/control-schema.js";
import { newId } from "../../shared/ids.js";
import { writeNodeAudit } from "../services/audit/node-audit.js";
import { writePkiAudit } from "../services/audit/pki-audit.js";
import type { CpContext } from "../services/context.js";
import { storeDeployPackage } from "../services/nodes/deploy-packages.js";
import { buildNodePackage, issueNodeCredentials, logNodeCredentialsIssued, recordNodeCredentials } from "./node-credentials.js";
import { type JobHandler, type JobRun, PermanentJobError } from "./worker.js";

const JOB_ACTOR = "job:node_onboard";
const payloadSchema = z.object({ node_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/) });

export function nodeOnboardHandler(ctx: CpContext): JobHandler {
  return (run) => onboardNode(ctx, run);
}

async function onboardNode(ctx: CpContext, run: JobRun): Promise<void> {
  const payload = payloadSchema.safeParse(run.job.payload);
  if (!payload.success) throw new PermanentJobError("job payload does not name a node");
  const nodeId = payload.data.node_id;
  const node = await ctx.controlDb.selectFrom("nodes").selectAll().where("id", "=", nodeId).executeTakeFirst();
  if (!node) throw new PermanentJobError("node no longer exists");

  const certs = await issueNodeCredentials(ctx, node);
  const packageId = newId("pkg");
  const pkg = await buildNodePackage(ctx, node, certs, packageId);

  const recorded = await ctx.controlDb.transaction().execute(async (tx) => {
    // Touching the node first takes its row lock: a concurrent delete either ran first (we
    // stop here) or waits and then revokes what this transaction recorded.
    const touched = await tx.updateTable("nodes").set({ updated_at: ctx.clock.now() }).where("id", "=", nodeId).executeTakeFirst();
    if (Number(touched.numUpdatedRows) !== 1) throw new PermanentJobError("node was deleted while its onboarding job ran");
    const ids = await recordNodeCredentials(tx, ctx, nodeId, certs, { actor: JOB_ACTOR, jobId: run.job.id });
    const status = await attachCertificates(tx, ctx, nodeId, ids.serverCertId, ids.clientCertId);
    await storeDeployPackage(tx, ctx, { id: packageId, nodeId, jobId: run.job.id, archive: pkg.archive, sha256: pkg.sha256 });
    await writePkiAudit(tx, ctx.clock, {
      event: "package.built",
      jobId: run.job.id,
      actor: JOB_ACTOR,
      detail: { node_id: nodeId, package_id: packageId, sha256: pkg.sha256, job_id: run.job.id },
    });
    await writeNodeAudit(tx, ctx.clock, {
      nodeId,
      event: "node.provisioned",
      actor: JOB_ACTOR,
      detail: { job_id: run.job.id, package_id: packageId, server_cert_id: ids.serverCertId, client_cert_id: ids.clientCertId, status },
    });
    const result = {
      node_id: nodeId,
      server_cert_id: ids.serverCertId,
      client_cert_id: ids.clientCertId,
      package_id: packageId,
      package_sha256: pkg.sha256,
      node_status: status,
    };
    await run.complete(tx, result);
    return ids;
  });

  logNodeCredentialsIssued(ctx, nodeId, certs, recorded);
  ctx.log.category("PKI").info("package.built", {
    node_id: nodeId,
    package_id: packageId,
    sha256: pkg.sha256,
    size_bytes: pkg.archive.length,
    job_id: run.job.id,
  });
}

/**
 * Sets the node's certificates; provisioning → active, but a node disabled meanwhile stays
 * disabled. A rotation still waiting for the node is over: the new package replaces it.
 */
async function attachCertificates(
  tx: Kysely<ControlSchema>,
  ctx: CpContext,
  nodeId: string,
  serverCertId: string,
  clientCertId: string,
): Promise<string> {
  const now = ctx.clock.now();
  const current = await tx.selectFrom("nodes").select(["status", "client_cert_id"]).where("id", "=", nodeId).executeTakeFirstOrThrow();
  const status = current.status === "disabled" ? "disabled" : "active";
  await tx
    .updateTable("nodes")
    .set({
      server_cert_id: serverCertId,
      client_cert_id: clientCertId,
      previous_client_cert_id: current.client_cert_id,
      previous_client_cert_retire_at: null,
      pending_rotation_id: null,
      status,
      updated_at: now,
    })
    .where("id", "=", nodeId)
    .execute();
  await tx
    .updateTable("node_cert_rotations")
    .set({ superseded_at: now, updated_at: now, credentials_ciphertext: null })
    .where("node_id", "=", nodeId)
    .where("superseded_at", "is", null)
    .where("completed_at", "is", null)
    .where("acked_at", "is", null)
    .execute();
  return status;
}
