/**
 * Node lifecycle on the Control Plane: create (the node row and its NodeOnboard PKI job in one
 * transaction), disable / enable (OCSP answers revoked for a disabled node's certificates, see
 * ocsp-status.ts, and the node is hinted to refresh its staple at once) and hard delete (certificates revoked, the row and everything hanging off it
 * removed). The onboarding itself runs in the job worker (src/cp/jobs/node-onboard.ts).
 */
import { sql } from "kysely";
import { isUniqueViolation } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import { canonicalDnsName, canonicalIp } from "../../../shared/pki/names.js";
import { writeNodeAudit } from "../audit/node-audit.js";
import type { Actor, CpContext } from "../context.js";
import { enqueueJob } from "../pki/jobs.js";
import { revokeNodeCertificates } from "./certificates.js";
import { getNode, type NodeDetail, nodeNotFound } from "./views.js";

export const NODE_ONBOARD_JOB_KIND = "node_onboard";

export interface NodeHost {
  /** Canonical form (lower-case DNS name, compressed IPv6), as it goes into the certificate. */
  value: string;
  kind: "dns" | "ip";
}

/**
 * The business host as a certificate SAN: an IP literal, or a DNS name SDK clients can match
 * (no wildcard, no trailing dot, and not all-numeric in its last label, which would read as a
 * malformed IPv4 address). Null when it is neither.
 */
export function canonicalNodeHost(host: string): NodeHost | null {
  const ip = canonicalIp(host);
  if (ip !== null) return { value: ip, kind: "ip" };
  const dns = canonicalDnsName(host);
  if (dns === null || dns.startsWith("*") || /^[0-9]+$/.test(dns.split(".").at(-1) ?? "")) return null;
  return { value: dns, kind: "dns" };
}

export interface NewNode {
  name: string;
  host: string;
  businessPort: number;
}

export interface CreatedNode extends NodeDetail {
  job_id: string;
}

export async function createNode(ctx: CpContext, actor: Actor, input: NewNode): Promise<CreatedNode> {
  const host = canonicalNodeHost(input.host);
  if (!host)
    throw new AuthNexusError("VALIDATION_FAILED", { message: "host must be a DNS name or an IP address usable in a certificate." });
  if (!Number.isInteger(input.businessPort) || input.businessPort < 1 || input.businessPort > 65535) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: "business_port must be an integer from 1 to 65535." });
  }
  const now = ctx.clock.now();
  const nodeId = newId("nod");
  let jobId: string;
  try {
    jobId = await ctx.controlDb.transaction().execute(async (tx) => {
      await tx
        .insertInto("nodes")
        .values({
          id: nodeId,
          name: input.name,
          host: host.value,
          business_port: input.businessPort,
          status: "provisioning",
          created_at: now,
          updated_at: now,
          created_by: actor.agentId,
          server_cert_id: null,
          client_cert_id: null,
          previous_client_cert_id: null,
          last_checkin_at: null,
          sse_connected: 0,
          sse_changed_at: null,
          ocsp_last_applied_at: null,
          software_version: null,
          metadata: null,
          metrics: null,
          app_versions: null,
          online_users: 0,
          disabled_at: null,
        })
        .execute();
      const job = await enqueueJob(tx, now, {
        kind: NODE_ONBOARD_JOB_KIND,
        targetType: "node",
        targetId: nodeId,
        payload: { node_id: nodeId },
        createdBy: actor.agentId,
      });
      await writeNodeAudit(tx, ctx.clock, {
        nodeId,
        event: "node.created",
        actor,
        detail: { name: input.name, host: host.value, business_port: input.businessPort, job_id: job },
      });
      return job;
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw new AuthNexusError("CONFLICT", { message: `A node named "${input.name}" already exists.` });
    throw error;
  }
  ctx.log
    .category("PKI")
    .info("node.created", { node_id: nodeId, job_id: jobId, host: host.value, business_port: input.businessPort, agent_id: actor.agentId });
  ctx.events.jobQueued();
  return { ...(await getNode(ctx, nodeId)), job_id: jobId };
}

/** Idempotent: disabling a disabled node changes nothing (its disabled_at stays the first one). */
export async function disableNode(ctx: CpContext, actor: Actor, nodeId: string): Promise<NodeDetail> {
  const now = ctx.clock.now();
  const changed = await ctx.controlDb.transaction().execute(async (tx) => {
    const updated = await tx
      .updateTable("nodes")
      .set({ status: "disabled", disabled_at: now, updated_at: now })
      .where("id", "=", nodeId)
      .where("status", "!=", "disabled")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) return false;
    await writeNodeAudit(tx, ctx.clock, { nodeId, event: "node.disabled", actor });
    return true;
  });
  const node = await getNode(ctx, nodeId);
  // Its certificates answer OCSP "revoked" (certificateHold) from the next request on.
  if (changed) ctx.log.category("PKI").info("node.disabled", { node_id: nodeId, agent_id: actor.agentId });
  askForOcspRefresh(ctx, nodeId);
  return node;
}

/** Idempotent. Back to active, or to provisioning when the onboarding job has not finished. */
export async function enableNode(ctx: CpContext, actor: Actor, nodeId: string): Promise<NodeDetail> {
  const now = ctx.clock.now();
  const changed = await ctx.controlDb.transaction().execute(async (tx) => {
    const updated = await tx
      .updateTable("nodes")
      .set({
        status: sql<string>`case when server_cert_id is null then 'provisioning' else 'active' end`,
        disabled_at: null,
        updated_at: now,
      })
      .where("id", "=", nodeId)
      .where("status", "=", "disabled")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) return false;
    await writeNodeAudit(tx, ctx.clock, { nodeId, event: "node.enabled", actor });
    return true;
  });
  const node = await getNode(ctx, nodeId);
  if (changed) ctx.log.category("PKI").info("node.enabled", { node_id: nodeId, agent_id: actor.agentId });
  askForOcspRefresh(ctx, nodeId);
  return node;
}

/**
 * Tells the node to fetch its OCSP response now rather than on its ~15-minute timer, so its
 * staple (and with it every new SDK handshake) follows a disable or enable within seconds.
 * Sent on every call, changed or not: repeating the call re-asks a node that missed the hint.
 * A node streaming from another CP process learns the change from its next checkin instead.
 */
function askForOcspRefresh(ctx: CpContext, nodeId: string): void {
  ctx.events.publish("ocsp.refresh", nodeId);
  ctx.log.category("PKI").info("ocsp.refresh_hinted", { node_id: nodeId });
}

export interface DeletedNode {
  node_id: string;
  revoked_certificate_ids: string[];
  cancelled_job_ids: string[];
}

/**
 * Hard delete. Touching the node row first takes its row lock, so a concurrent onboarding
 * commit either lands before (and its certificates are revoked here) or finds the node gone
 * (and rolls back). Deploy packages, config states, cursors and command results cascade.
 */
export async function deleteNode(ctx: CpContext, actor: Actor, nodeId: string): Promise<DeletedNode> {
  const now = ctx.clock.now();
  const actorName = actor.agentId ?? "system";
  const outcome = await ctx.controlDb.transaction().execute(async (tx) => {
    const touched = await tx.updateTable("nodes").set({ updated_at: now }).where("id", "=", nodeId).executeTakeFirst();
    if (Number(touched.numUpdatedRows) !== 1) throw nodeNotFound();
    const revokedIds = await revokeNodeCertificates(tx, ctx.clock, nodeId, { reason: "cessationOfOperation", actor: actorName });
    const jobs = await tx
      .selectFrom("pki_jobs")
      .select("id")
      .where("target_type", "=", "node")
      .where("target_id", "=", nodeId)
      .where("status", "=", "pending")
      .execute();
    if (jobs.length > 0) {
      await tx
        .updateTable("pki_jobs")
        .set({ status: "cancelled", last_error: "node deleted", finished_at: now, updated_at: now })
        .where(
          "id",
          "in",
          jobs.map((j) => j.id),
        )
        .where("status", "=", "pending")
        .execute();
    }
    // Rotations hold sealed keys for the node: they go with it.
    await tx.deleteFrom("node_cert_rotations").where("node_id", "=", nodeId).execute();
    await tx.deleteFrom("nodes").where("id", "=", nodeId).execute();
    await writeNodeAudit(tx, ctx.clock, {
      nodeId,
      event: "node.deleted",
      actor,
      detail: { revoked_certificate_ids: revokedIds },
    });
    return { node_id: nodeId, revoked_certificate_ids: revokedIds, cancelled_job_ids: jobs.map((j) => j.id) };
  });
  ctx.events.notice({ kind: "node.deleted", nodeId });
  ctx.log
    .category("PKI")
    .info("node.deleted", { node_id: nodeId, revoked_certificates: outcome.revoked_certificate_ids.length, agent_id: actor.agentId });
  return outcome;
}
