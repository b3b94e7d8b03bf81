/**
 * Node certificate rotation (the manual's "Node Server Certificate Rotation"; docs/pki.md):
 *
 *   1. requestNodeRotation: a rotation row and its issue job (node_cert_rotate), in one
 *      transaction;
 *   2. the issue job (src/cp/jobs/node-cert-rotate.ts) issues a new business server certificate
 *      and a new CP client certificate, rebuilds the deploy package, makes the new client
 *      certificate the node's current one (the old one stays accepted as the previous one) and
 *      seals the new credentials for delivery;
 *   3. the node's next config pull carries them (credentialsForPull); the node checks them,
 *      fetches the new certificate's OCSP response, swaps its listener's and its CP client's
 *      certificates, persists them, and acks with the NEW client certificate (ackCredentials);
 *   4. the ack starts the grace period: the old client certificate is refused once it ends, and
 *      the retire job (node_cert_retire) then revokes the old certificates.
 *
 * A rotation's status is derived from its timestamps and its issue job, so the jobs endpoints
 * (retry, cancel) and this view can never disagree.
 */
import { createHash, X509Certificate } from "node:crypto";
import type { Kysely } from "kysely";
import type { ControlSchema, NodeCertRotationsTable } from "../../../shared/db/control-schema.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import type { CredentialsAckRequest, CredentialsAckResponse, NodeCredentialsDelivery } from "../../../shared/node-protocol/index.js";
import { openSecret, sealSecret } from "../../../shared/pki/index.js";
import { writeNodeAudit } from "../audit/node-audit.js";
import { writePkiAudit } from "../audit/pki-audit.js";
import type { Actor, CpContext } from "../context.js";
import { enqueueJob, type PkiJobView, toJobView } from "../pki/jobs.js";
import type { CallingNode } from "./identity.js";
import { NODE_ONBOARD_JOB_KIND } from "./lifecycle.js";
import { nodeNotFound } from "./views.js";

export const NODE_CERT_ROTATE_JOB_KIND = "node_cert_rotate";
export const NODE_CERT_RETIRE_JOB_KIND = "node_cert_retire";

export const ROTATION_STATUSES = [
  "issuing",
  "delivering",
  "delivered",
  "applied",
  "completed",
  "failed",
  "cancelled",
  "superseded",
] as const;
export type RotationStatus = (typeof ROTATION_STATUSES)[number];
/** The statuses in which a rotation still waits for something before the node runs on its new certificates. */
const UNFINISHED: readonly RotationStatus[] = ["issuing", "delivering", "delivered"];

export type RotationReason = "manual" | "renewal" | "ca_rotation";

export interface RotationView {
  id: string;
  node_id: string;
  reason: string;
  status: RotationStatus;
  created_at: number;
  created_by: string | null;
  issued_at: number | null;
  /** When the node's config pull first carried the new credentials. */
  delivered_at: number | null;
  /** When the node confirmed it serves and presents them. */
  acked_at: number | null;
  /** When the old CP client certificate stops being accepted (set by the ack). */
  retire_at: number | null;
  completed_at: number | null;
  superseded_at: number | null;
  old_server_cert_id: string | null;
  old_client_cert_id: string | null;
  new_server_cert_id: string | null;
  new_client_cert_id: string | null;
  /** The cp_server_ca ids of the CP trust bundle the delivery carries (null until issued). */
  cp_ca_ids: string[] | null;
  /** The new server certificate's SPKI pin (base64 SHA-256, as SDK spki_pins take it): programs that pin add it. */
  new_server_spki_pin: string | null;
  package_id: string | null;
  /** The issue job, then the retire job once the node acked. */
  jobs: PkiJobView[];
}

/** Queues a rotation of the node's certificates; refused while an earlier one is not applied yet. */
export async function requestNodeRotation(
  ctx: CpContext,
  actor: Actor | string,
  nodeId: string,
  reason: RotationReason,
): Promise<RotationView> {
  const now = ctx.clock.now();
  const actorId = typeof actor === "string" ? actor : (actor.agentId ?? "system");
  const rotationId = await ctx.controlDb.transaction().execute(async (tx) => {
    // Touching the row first takes its lock: two rotate requests, or a rotate and a reissue,
    // are ordered, never interleaved.
    const touched = await tx.updateTable("nodes").set({ updated_at: now }).where("id", "=", nodeId).executeTakeFirst();
    if (Number(touched.numUpdatedRows) !== 1) throw nodeNotFound();
    await refuseUnlessRotatable(tx, nodeId, now);
    // Earlier rotations that never issued (their job failed or was cancelled) are over: retrying
    // their job now finds them superseded instead of racing this one.
    await tx
      .updateTable("node_cert_rotations")
      .set({ superseded_at: now, updated_at: now })
      .where("node_id", "=", nodeId)
      .where("issued_at", "is", null)
      .where("superseded_at", "is", null)
      .execute();
    const id = newId("rot");
    const jobId = await enqueueJob(tx, now, {
      kind: NODE_CERT_ROTATE_JOB_KIND,
      targetType: "node",
      targetId: nodeId,
      payload: { node_id: nodeId, rotation_id: id, reason },
      createdBy: actorId,
    });
    await tx
      .insertInto("node_cert_rotations")
      .values({ id, node_id: nodeId, reason, created_by: actorId, created_at: now, updated_at: now, issue_job_id: jobId })
      .execute();
    await writePkiAudit(tx, ctx.clock, {
      event: "rotation.requested",
      jobId,
      actor: actorId,
      detail: { node_id: nodeId, rotation_id: id, reason },
    });
    await writeNodeAudit(tx, ctx.clock, {
      nodeId,
      event: "node.rotation_requested",
      actor,
      detail: { rotation_id: id, job_id: jobId, reason },
    });
    return id;
  });
  ctx.log.category("PKI").info("rotation.requested", { node_id: nodeId, rotation_id: rotationId, reason, actor: actorId });
  ctx.events.jobQueued();
  return getRotation(ctx, nodeId, rotationId);
}

async function refuseUnlessRotatable(tx: Kysely<ControlSchema>, nodeId: string, now: number): Promise<void> {
  const node = await tx
    .selectFrom("nodes")
    .select(["status", "client_cert_id", "server_cert_id"])
    .where("id", "=", nodeId)
    .executeTakeFirstOrThrow();
  const onboarding = await tx
    .selectFrom("pki_jobs")
    .select("id")
    .where("target_type", "=", "node")
    .where("target_id", "=", nodeId)
    .where("kind", "=", NODE_ONBOARD_JOB_KIND)
    .where("status", "in", ["pending", "running"])
    .executeTakeFirst();
  if (onboarding || node.client_cert_id === null || node.server_cert_id === null) {
    throw new AuthNexusError("NODE_NOT_PROVISIONED", {
      message: onboarding
        ? `The node's package job ${onboarding.id} has not finished yet; follow it at /admin/v1/pki/jobs/${onboarding.id}.`
        : "The node has no certificates to rotate yet.",
    });
  }
  const client = await tx
    .selectFrom("certificates")
    .select(["status", "not_after"])
    .where("id", "=", node.client_cert_id)
    .executeTakeFirst();
  const unusable = !client || client.status === "revoked" ? "revoked" : client.not_after <= now ? "expired" : null;
  if (unusable) {
    // The new credentials travel over the node's CP channel, which this certificate no longer opens.
    throw new AuthNexusError("CONFLICT", {
      message: `The node's CP client certificate is ${unusable}, so it cannot receive new certificates; reissue its package instead (POST /admin/v1/nodes/${nodeId}/reissue-package).`,
    });
  }
  for (const open of await loadRotations(tx, nodeId, { unfinishedOnly: true })) {
    if (!UNFINISHED.includes(open.status)) continue;
    throw new AuthNexusError("NODE_ROTATION_IN_PROGRESS", {
      message: `Rotation ${open.id} is ${open.status}; follow it at /admin/v1/nodes/${nodeId}/certs/rotations/${open.id}.`,
      publicDetail: { rotation_id: open.id, status: open.status },
    });
  }
}

export async function getRotation(ctx: CpContext, nodeId: string, rotationId: string): Promise<RotationView> {
  const [view] = await loadRotations(ctx.controlDb, nodeId, { id: rotationId });
  if (!view) throw new AuthNexusError("NOT_FOUND", { message: "No such rotation of this node." });
  return view;
}

/** The node's rotations, newest first. */
export async function listRotations(ctx: CpContext, nodeId: string): Promise<{ items: RotationView[] }> {
  const node = await ctx.controlDb.selectFrom("nodes").select("id").where("id", "=", nodeId).executeTakeFirst();
  if (!node) throw nodeNotFound();
  return { items: await loadRotations(ctx.controlDb, nodeId, {}) };
}

async function loadRotations(
  db: Kysely<ControlSchema>,
  nodeId: string,
  filter: { id?: string; unfinishedOnly?: boolean },
): Promise<RotationView[]> {
  let query = db.selectFrom("node_cert_rotations").selectAll().where("node_id", "=", nodeId);
  if (filter.id !== undefined) query = query.where("id", "=", filter.id);
  if (filter.unfinishedOnly) query = query.where("acked_at", "is", null).where("superseded_at", "is", null);
  const rows = await query.orderBy("created_at", "desc").orderBy("id", "desc").limit(100).execute();
  const jobIds = rows.flatMap((r) => [r.issue_job_id, r.retire_job_id].filter((id): id is string => id !== null));
  const jobs = jobIds.length === 0 ? [] : await db.selectFrom("pki_jobs").selectAll().where("id", "in", jobIds).execute();
  const byId = new Map(jobs.map((j) => [j.id, toJobView(j)]));
  const serverIds = rows.map((r) => r.new_server_cert_id).filter((id): id is string => id !== null);
  const servers =
    serverIds.length === 0 ? [] : await db.selectFrom("certificates").select(["id", "cert_pem"]).where("id", "in", serverIds).execute();
  const pins = new Map(servers.map((c) => [c.id, spkiPin(c.cert_pem)]));
  return rows.map((row) => toView(row, byId, pins));
}

/** base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (the form HPKP, curl and the SDK use). */
function spkiPin(pem: string): string {
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

function toView(row: NodeCertRotationsTable, jobs: Map<string, PkiJobView>, pins: Map<string, string>): RotationView {
  const issueJob = jobs.get(row.issue_job_id);
  const retireJob = row.retire_job_id === null ? undefined : jobs.get(row.retire_job_id);
  const {
    credentials_ciphertext: _sealed,
    updated_at: _updated,
    issue_job_id: _issue,
    retire_job_id: _retire,
    cp_ca_ids: caIds,
    ...rest
  } = row;
  return {
    ...rest,
    status: rotationStatus(row, issueJob?.status ?? "pending"),
    cp_ca_ids: caIds === null ? null : (JSON.parse(caIds) as string[]),
    new_server_spki_pin: row.new_server_cert_id === null ? null : (pins.get(row.new_server_cert_id) ?? null),
    jobs: [issueJob, retireJob].filter((job): job is PkiJobView => job !== undefined),
  };
}

export function rotationStatus(row: NodeCertRotationsTable, issueJobStatus: string): RotationStatus {
  if (row.superseded_at !== null) return "superseded";
  if (row.completed_at !== null) return "completed";
  if (row.acked_at !== null) return "applied";
  if (row.issued_at !== null) return row.delivered_at !== null ? "delivered" : "delivering";
  if (issueJobStatus === "failed") return "failed";
  if (issueJobStatus === "cancelled") return "cancelled";
  return "issuing";
}

// ---- delivery (the node's config pull) and the node's ack ------------------------------------

/** The sealed credentials' associated data: they open only as this rotation's. */
export function rotationCredentialsAad(rotationId: string): string {
  return `node-rotation:${rotationId}`;
}

export function sealRotationCredentials(masterKey: Buffer, delivery: NodeCredentialsDelivery): Buffer {
  return sealSecret(masterKey, Buffer.from(JSON.stringify(delivery)), rotationCredentialsAad(delivery.rotation_id));
}

/**
 * The new credentials for a config pull, when a rotation waits for this node; the first pull
 * that carries them records the delivery. A node that already runs on them simply acks again.
 */
export async function credentialsForPull(ctx: CpContext, node: CallingNode): Promise<NodeCredentialsDelivery | undefined> {
  if (node.pendingRotationId === null) return undefined;
  const row = await ctx.controlDb
    .selectFrom("node_cert_rotations")
    .select(["id", "credentials_ciphertext", "delivered_at"])
    .where("id", "=", node.pendingRotationId)
    .where("node_id", "=", node.id)
    .executeTakeFirst();
  if (!row?.credentials_ciphertext) return undefined;
  const delivery = JSON.parse(
    openSecret(ctx.masterKey, Buffer.from(row.credentials_ciphertext), rotationCredentialsAad(row.id)).toString("utf8"),
  ) as NodeCredentialsDelivery;
  if (row.delivered_at === null) {
    const now = ctx.clock.now();
    const first = await ctx.controlDb.transaction().execute(async (tx) => {
      const marked = await tx
        .updateTable("node_cert_rotations")
        .set({ delivered_at: now, updated_at: now })
        .where("id", "=", row.id)
        .where("delivered_at", "is", null)
        .executeTakeFirst();
      if (Number(marked.numUpdatedRows) !== 1) return false;
      await writePkiAudit(tx, ctx.clock, {
        event: "rotation.delivered",
        actor: `node:${node.id}`,
        detail: { node_id: node.id, rotation_id: row.id },
      });
      return true;
    });
    if (first) ctx.log.category("PKI").info("rotation.delivered", { node_id: node.id, rotation_id: row.id });
  }
  return delivery;
}

/**
 * The node serves the new server certificate and called with the new client certificate: the
 * rotation is applied. The sealed keys are dropped, the old client certificate gets its retire
 * instant and the retire job is queued for then. Acking twice answers the same.
 */
export async function ackCredentials(
  ctx: CpContext,
  node: CallingNode,
  rotationId: string,
  ack: CredentialsAckRequest,
): Promise<CredentialsAckResponse> {
  const now = ctx.clock.now();
  const outcome = await ctx.controlDb.transaction().execute(async (tx) => {
    await tx.updateTable("nodes").set({ updated_at: now }).where("id", "=", node.id).execute();
    const row = await tx
      .selectFrom("node_cert_rotations")
      .selectAll()
      .where("id", "=", rotationId)
      .where("node_id", "=", node.id)
      .executeTakeFirst();
    if (!row || row.issued_at === null || row.superseded_at !== null) {
      throw new AuthNexusError("CREDENTIALS_ACK_REFUSED", { message: "No rotation with new credentials for this node has that id." });
    }
    if (row.acked_at !== null && row.retire_at !== null) return { row, retireAt: row.retire_at, first: false };
    await checkAckMatches(tx, node, row, ack);
    const retireAt = now + ctx.pki.rotationGraceMs;
    const retireJobId = await enqueueJob(tx, now, {
      kind: NODE_CERT_RETIRE_JOB_KIND,
      targetType: "node",
      targetId: node.id,
      payload: { node_id: node.id, rotation_id: row.id },
      createdBy: "system",
      runAfter: retireAt,
    });
    await tx
      .updateTable("node_cert_rotations")
      .set({ acked_at: now, retire_at: retireAt, retire_job_id: retireJobId, credentials_ciphertext: null, updated_at: now })
      .where("id", "=", row.id)
      .execute();
    await tx
      .updateTable("nodes")
      .set({ pending_rotation_id: null })
      .where("id", "=", node.id)
      .where("pending_rotation_id", "=", row.id)
      .execute();
    await tx
      .updateTable("nodes")
      .set({ previous_client_cert_retire_at: retireAt })
      .where("id", "=", node.id)
      .where("previous_client_cert_id", "=", row.old_client_cert_id)
      .execute();
    await writePkiAudit(tx, ctx.clock, {
      event: "rotation.applied",
      jobId: row.issue_job_id,
      actor: `node:${node.id}`,
      detail: { node_id: node.id, rotation_id: row.id, retire_at: retireAt, retire_job_id: retireJobId },
    });
    await writeNodeAudit(tx, ctx.clock, {
      nodeId: node.id,
      event: "node.rotation_applied",
      actor: `node:${node.id}`,
      detail: { rotation_id: row.id },
    });
    return { row, retireAt, first: true };
  });
  if (outcome.first) {
    ctx.log.category("PKI").info("rotation.applied", { node_id: node.id, rotation_id: rotationId, retire_at: outcome.retireAt });
    ctx.events.jobQueued();
  }
  return { rotation_id: rotationId, acked_at: outcome.row.acked_at ?? now, previous_client_cert_retire_at: outcome.retireAt };
}

/** The ack must come over the new client certificate and name the two new certificates. */
async function checkAckMatches(
  tx: Kysely<ControlSchema>,
  node: CallingNode,
  row: NodeCertRotationsTable,
  ack: CredentialsAckRequest,
): Promise<void> {
  if (node.certificateId !== row.new_client_cert_id) {
    throw new AuthNexusError("CREDENTIALS_ACK_REFUSED", {
      message: "Acknowledge a rotation over the new client certificate: the call came with another one.",
    });
  }
  const certs = await tx
    .selectFrom("certificates")
    .select(["id", "cert_pem"])
    .where("id", "in", [row.new_server_cert_id ?? "", row.new_client_cert_id ?? ""])
    .execute();
  const fingerprintOf = (id: string | null) => {
    const pem = certs.find((c) => c.id === id)?.cert_pem;
    return pem === undefined ? null : pemFingerprint(pem);
  };
  if (
    fingerprintOf(row.new_server_cert_id) !== ack.server_cert_sha256 ||
    fingerprintOf(row.new_client_cert_id) !== ack.client_cert_sha256
  ) {
    throw new AuthNexusError("CREDENTIALS_ACK_REFUSED", {
      message: "The acknowledged certificates are not the ones this rotation issued.",
    });
  }
}

/** SHA-256 of a PEM certificate's DER, lower-case hex (what the node reports it holds). */
export function pemFingerprint(pem: string): string {
  const der = Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, ""), "base64");
  return createHash("sha256").update(der).digest("hex");
}
