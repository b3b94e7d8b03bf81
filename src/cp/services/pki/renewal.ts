/**
 * Automatic renewal of node certificates: a node's business server certificate and its CP
 * client certificate are rotated (src/cp/services/nodes/rotation.ts, reason "renewal") once
 * either is past its renewal instant,
 *
 *   not_before + lifetime × (renewAtFraction + jitter),
 *
 * the jitter a fixed value in [−renewJitterFraction, +renewJitterFraction] derived from the
 * certificate's serial. Fixed, so every CP process and every restart agree on the instant;
 * derived from a random serial, so a fleet onboarded on one day does not renew on one day
 * (SPIRE rotates at half-life ±10%, kubelet at 70–90%).
 *
 * A pass looks at the nodes (not provisioning, disabled included) with one query and asks for
 * a rotation of each one that is due. A disabled node is renewed like an active one: it is held,
 * not retired, keeps its management channels (its config pull delivers the new certificates,
 * which are on hold like the old ones) and must come back with working certificates when it is
 * enabled again, without a new package.
 */
import { createHash } from "node:crypto";
import { sql } from "kysely";
import { CERT_RENEW_FIRST_CHECK_DELAY_MS } from "../../../shared/config/defaults.js";
import { isAuthNexusError } from "../../../shared/errors/index.js";
import { type CancelTimer, every } from "../../../shared/time/index.js";
import type { CpContext, PkiSettings } from "../context.js";
import { requestNodeRotation } from "../nodes/rotation.js";

/** Who asks for a renewal's rotation (node and PKI audit trails, the rotation's created_by). */
export const RENEWAL_ACTOR = "system:renewal";

export type RenewalSettings = Pick<PkiSettings, "renewAtFraction" | "renewJitterFraction">;

export interface RenewableCertificate {
  not_before: number;
  not_after: number;
  serial_hex: string;
}

/** 2^48: the hash prefix read as a 48-bit integer, divided by this, is uniform in [0, 1). */
const HASH_RANGE = 2 ** 48;

/**
 * The certificate's fixed jitter, in [−jitterFraction, +jitterFraction): SHA-256 of its serial
 * (colons and case ignored) read as a uniform number.
 */
export function renewalJitter(serialHex: string, jitterFraction: number): number {
  const serial = serialHex.replace(/:/g, "").toLowerCase();
  const digest = createHash("sha256").update(`authnexus-renewal:${serial}`).digest();
  const uniform = digest.readUIntBE(0, 6) / HASH_RANGE;
  return jitterFraction * (2 * uniform - 1);
}

/** When the certificate is due for renewal (epoch ms): not_before + lifetime × (fraction + its jitter). */
export function renewalDueAt(cert: RenewableCertificate, settings: RenewalSettings): number {
  const lifetime = cert.not_after - cert.not_before;
  const fraction = settings.renewAtFraction + renewalJitter(cert.serial_hex, settings.renewJitterFraction);
  return cert.not_before + Math.floor(lifetime * fraction);
}

/** After a renewal's issue job failed for good, how long renewal leaves the node alone (a manual rotate still works). */
export const RENEWAL_FAILURE_BACKOFF_MS = 6 * 60 * 60_000;

/** When the node's newest renewal rotation failed for good, if that was less than the back-off ago; else null. */
async function recentRenewalFailure(ctx: CpContext, nodeId: string, now: number): Promise<number | null> {
  const newest = await ctx.controlDb
    .selectFrom("node_cert_rotations as r")
    .innerJoin("pki_jobs as j", "j.id", "r.issue_job_id")
    .select(["r.reason", "r.issued_at", "j.status", "j.finished_at"])
    .where("r.node_id", "=", nodeId)
    .orderBy("r.created_at", "desc")
    .orderBy("r.id", "desc")
    .executeTakeFirst();
  if (newest?.reason !== "renewal" || newest.issued_at !== null || newest.status !== "failed") return null;
  const failedAt = newest.finished_at ?? now;
  return now - failedAt < RENEWAL_FAILURE_BACKOFF_MS ? failedAt : null;
}

export interface RenewalPassReport {
  /** Nodes with a certificate past its renewal instant. */
  due: number;
  /** Rotations queued by this pass. */
  queued: Array<{
    nodeId: string;
    rotationId: string;
  }>;
  /** Due nodes left alone: a rotation is already under way (this pass or another CP's). */
  inProgress: number;
  /** Due nodes left alone: their package job has not finished (a reissue is under way). */
  notProvisioned: number;
  /** Due nodes whose CP client certificate has expired: they cannot receive new ones (reissue their package). */
  expired: number;
  /** Due nodes whose rotation could not be queued for another reason (logged). */
  failed: number;
  /** Due nodes left alone because their last renewal failed for good less than RENEWAL_FAILURE_BACKOFF_MS ago. */
  backingOff: number;
}

interface DueNode {
  nodeId: string;
  cert: "server" | "client";
  certificateId: string;
  notAfter: number;
  dueAt: number;
  clientExpired: boolean;
}

/**
 * Queues a renewal rotation for every node whose current server or client certificate is past
 * its renewal instant. Refusals that mean "nothing to do now" (a rotation already under way, the
 * node's package job still running) are skipped quietly; any other failure is logged and the
 * pass goes on with the next node.
 *
 * Several CP processes sharing the Control DB may run passes at the same time. That is safe:
 * requestNodeRotation first updates the node's row inside its transaction, which takes the row's
 * lock (PostgreSQL) or the database's write lock (SQLite), and only then checks for an
 * unfinished rotation; so two requests for one node are serialised, the second sees the first's
 * committed rotation and is refused with NODE_ROTATION_IN_PROGRESS, skipped here like any
 * rotation already under way.
 */
export async function runRenewalPass(ctx: CpContext, options: { stopped?: () => boolean } = {}): Promise<RenewalPassReport> {
  const log = ctx.log.category("PKI");
  const now = ctx.clock.now();
  const report: RenewalPassReport = { due: 0, queued: [], inProgress: 0, notProvisioned: 0, expired: 0, failed: 0, backingOff: 0 };
  for (const due of await findDueNodes(ctx, now)) {
    if (options.stopped?.()) break;
    report.due += 1;
    const fields = {
      node_id: due.nodeId,
      cert: due.cert,
      certificate_id: due.certificateId,
      not_after: due.notAfter,
      due_at: due.dueAt,
    };
    if (due.clientExpired) {
      // The node can no longer call the CP, so a rotation could never be delivered.
      report.expired += 1;
      log.warn("renewal.too_late", { ...fields, remedy: "POST /admin/v1/nodes/:nid/reissue-package" });
      continue;
    }
    const failedAt = await recentRenewalFailure(ctx, due.nodeId, now);
    if (failedAt !== null) {
      // A renewal whose job failed for good would fail again now: an operator looks first.
      report.backingOff += 1;
      log.warn("renewal.backing_off", { ...fields, failed_at: failedAt, retry_after: failedAt + RENEWAL_FAILURE_BACKOFF_MS });
      continue;
    }
    try {
      const rotation = await requestNodeRotation(ctx, RENEWAL_ACTOR, due.nodeId, "renewal");
      report.queued.push({ nodeId: due.nodeId, rotationId: rotation.id });
      log.info("renewal.queued", { ...fields, rotation_id: rotation.id });
    } catch (error) {
      if (isAuthNexusError(error, "NODE_ROTATION_IN_PROGRESS")) {
        report.inProgress += 1;
        log.debug("renewal.skipped", { ...fields, reason: "rotation_in_progress" });
      } else if (isAuthNexusError(error, "NODE_NOT_PROVISIONED")) {
        report.notProvisioned += 1;
        log.debug("renewal.skipped", { ...fields, reason: "not_provisioned" });
      } else if (isAuthNexusError(error, "NOT_FOUND")) {
        log.debug("renewal.skipped", { ...fields, reason: "node_deleted" });
      } else {
        report.failed += 1;
        log.warn("renewal.failed", { ...fields, error: (error as Error).message });
      }
    }
  }
  if (report.due > 0) {
    log.info("renewal.pass_completed", {
      due: report.due,
      queued: report.queued.length,
      in_progress: report.inProgress,
      not_provisioned: report.notProvisioned,
      expired: report.expired,
      failed: report.failed,
      backing_off: report.backingOff,
    });
  }
  return report;
}

/**
 * One query: each node's current certificates (not revoked) that may be due. The SQL filter uses
 * the earliest instant any jitter allows, plus a second's slack for float rounding; the exact
 * instant is computed here. The most urgent nodes come first.
 */
async function findDueNodes(ctx: CpContext, now: number): Promise<DueNode[]> {
  const settings = ctx.pki;
  const earliestFraction = Math.max(0, settings.renewAtFraction - settings.renewJitterFraction);
  const rows = await ctx.controlDb
    .selectFrom("nodes as n")
    .innerJoin("certificates as c", (join) =>
      join.on((eb) => eb.or([eb("c.id", "=", eb.ref("n.server_cert_id")), eb("c.id", "=", eb.ref("n.client_cert_id"))])),
    )
    .select(["n.id as node_id", "n.server_cert_id", "c.id as cert_id", "c.serial_hex", "c.not_before", "c.not_after"])
    .where("n.status", "!=", "provisioning")
    .where("c.status", "!=", "revoked")
    .where(sql<boolean>`c.not_before + (c.not_after - c.not_before) * cast(${earliestFraction} as double precision) <= ${now + 1000}`)
    .execute();
  const byNode = new Map<string, DueNode>();
  for (const row of rows) {
    const cert = { not_before: Number(row.not_before), not_after: Number(row.not_after), serial_hex: row.serial_hex };
    const dueAt = renewalDueAt(cert, settings);
    if (dueAt > now) continue;
    const kind = row.cert_id === row.server_cert_id ? "server" : "client";
    const clientExpired = kind === "client" && cert.not_after <= now;
    const seen = byNode.get(row.node_id);
    if (seen && seen.dueAt <= dueAt) {
      seen.clientExpired ||= clientExpired;
      continue;
    }
    byNode.set(row.node_id, {
      nodeId: row.node_id,
      cert: kind,
      certificateId: row.cert_id,
      notAfter: cert.not_after,
      dueAt,
      clientExpired: clientExpired || (seen?.clientExpired ?? false),
    });
  }
  return [...byNode.values()].sort((a, b) => a.dueAt - b.dueAt || a.nodeId.localeCompare(b.nodeId));
}

/**
 * Runs a renewal pass `firstDelayMs` after it is called (capped at the interval), then every
 * `ctx.pki.renewCheckIntervalMs`, in the background (never keeps the process alive); a pass
 * still running when the next one is due is not doubled. An interval of 0 turns renewal off
 * (logged once). Returns the stop function: it cancels the timers and ends a running pass after
 * the node it is on.
 */
export function scheduleRenewal(ctx: CpContext, firstDelayMs = CERT_RENEW_FIRST_CHECK_DELAY_MS): () => void {
  const log = ctx.log.category("PKI");
  const { renewCheckIntervalMs: intervalMs, renewAtFraction, renewJitterFraction } = ctx.pki;
  if (intervalMs <= 0) {
    log.info("renewal.off", { reason: "--cert-renew-check is 0: node certificates are not renewed automatically" });
    return () => {};
  }
  log.info("renewal.scheduled", { at_fraction: renewAtFraction, jitter_fraction: renewJitterFraction, check_interval_ms: intervalMs });
  let stopped = false;
  let running = false;
  const pass = () => {
    if (running || stopped) return;
    running = true;
    runRenewalPass(ctx, { stopped: () => stopped })
      .catch((error: unknown) => {
        if (!stopped) log.error("renewal.pass_failed", { error: (error as Error).message });
      })
      .finally(() => {
        running = false;
      });
  };
  let stopEvery: CancelTimer = () => {};
  const cancelFirst = ctx.scheduler.setTimer(
    Math.min(firstDelayMs, intervalMs),
    () => {
      if (stopped) return;
      stopEvery = every(ctx.scheduler, intervalMs, pass, { background: true });
      pass();
    },
    { background: true },
  );
  return () => {
    stopped = true;
    cancelFirst();
    stopEvery();
  };
}
