/**
 * PKI jobs as the admin sees them: durable rows in pki_jobs that the job worker (src/cp/jobs)
 * runs. Enqueueing happens inside the caller's transaction so a job exists exactly when the
 * change that needs it commits. Retry and cancel are conditional updates, so they cannot race
 * the worker into an impossible state.
 */

import type { Kysely } from "kysely";
import { DEFAULT_JOB_MAX_ATTEMPTS } from "../../../shared/config/defaults.js";
import type { ControlSchema, PkiJobsTable } from "../../../shared/db/control-schema.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import type { Clock } from "../../../shared/time/index.js";
import { writePkiAudit } from "../audit/pki-audit.js";
import type { Actor, CpContext } from "../context.js";
import { parseJsonColumn } from "../json-column.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";

export const PKI_JOB_STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"] as const;
export type PkiJobStatus = (typeof PKI_JOB_STATUSES)[number];
export const PKI_JOB_KINDS = ["node_onboard", "node_cert_rotate", "node_cert_retire"] as const;
export type PkiJobKind = (typeof PKI_JOB_KINDS)[number];

export interface NewJob {
  kind: PkiJobKind;
  targetType: string | null;
  targetId: string | null;
  payload: Record<string, unknown>;
  createdBy: string | null;
  maxAttempts?: number;
  /** When it becomes due (now when absent). */
  runAfter?: number;
}

/** Event names of the PKI audit rows that record a job's state: by the worker, when queued, and by an admin. */
export const JOB_STATE_CHANGED = "job.state_changed";
export const JOB_QUEUED = "job.queued";

export interface JobStateChange {
  jobId: string;
  kind: string;
  from: PkiJobStatus | null;
  to: PkiJobStatus;
  /** The agent id, or "system" for the worker. */
  actor: string;
  /** Attempt number, error text, why the worker moved it; never payload or key material. */
  detail?: Record<string, unknown>;
  event?: string;
}

/** Records a job's state change in the PKI audit log; pass the transaction that made the change. */
export async function auditJobStateChange(db: Kysely<ControlSchema>, clock: Clock, change: JobStateChange): Promise<void> {
  await writePkiAudit(db, clock, {
    event: change.event ?? JOB_STATE_CHANGED,
    jobId: change.jobId,
    actor: change.actor,
    detail: { kind: change.kind, from: change.from, to: change.to, ...change.detail },
  });
}

/** Inserts a pending job, due now (or at runAfter). Pass the caller's transaction: the job and its audit row commit with the change that needs it. */
export async function enqueueJob(db: Kysely<ControlSchema>, now: number, job: NewJob): Promise<string> {
  const id = newId("job");
  await db
    .insertInto("pki_jobs")
    .values({
      id,
      kind: job.kind,
      status: "pending",
      target_type: job.targetType,
      target_id: job.targetId,
      payload: JSON.stringify(job.payload),
      result: null,
      attempts: 0,
      max_attempts: job.maxAttempts ?? DEFAULT_JOB_MAX_ATTEMPTS,
      last_error: null,
      run_after: job.runAfter ?? now,
      created_at: now,
      updated_at: now,
      started_at: null,
      finished_at: null,
      created_by: job.createdBy,
      claimed_by: null,
      lease_expires_at: null,
    })
    .execute();
  await auditJobStateChange(db, fixedClock(now), {
    event: JOB_QUEUED,
    jobId: id,
    kind: job.kind,
    from: null,
    to: "pending",
    actor: job.createdBy ?? "system",
    detail: { target_type: job.targetType, target_id: job.targetId },
  });
  return id;
}

/** The caller's transaction time, so the job row and its audit row carry the same instant. */
function fixedClock(now: number): Clock {
  return { now: () => now };
}

/** A job as the API shows it: the row with its JSON columns parsed. */
export type PkiJobView = Omit<PkiJobsTable, "payload" | "result"> & { payload: unknown; result: unknown };

export function toJobView(row: PkiJobsTable): PkiJobView {
  return { ...row, payload: parseJsonColumn(row.payload), result: parseJsonColumn(row.result) };
}

export interface PkiJobFilter {
  status?: PkiJobStatus | undefined;
  kind?: PkiJobKind | undefined;
  targetId?: string | undefined;
}

export async function listJobs(ctx: CpContext, filter: PkiJobFilter, request: PageRequest): Promise<Page<PkiJobView>> {
  const base = ctx.controlDb.selectFrom("pki_jobs").$call((q) => {
    let out = q;
    if (filter.status) out = out.where("status", "=", filter.status);
    if (filter.kind) out = out.where("kind", "=", filter.kind);
    if (filter.targetId) out = out.where("target_id", "=", filter.targetId);
    return out;
  });
  return paginate(base, request, (q) => q.selectAll().orderBy("created_at", "desc").orderBy("id", "desc"), toJobView);
}

export async function getJob(ctx: CpContext, id: string): Promise<PkiJobView> {
  const row = await ctx.controlDb.selectFrom("pki_jobs").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) throw jobNotFound();
  return toJobView(row);
}

/** failed or cancelled → pending with a fresh set of attempts; anything else is 409. */
export async function retryJob(ctx: CpContext, actor: Actor, id: string): Promise<PkiJobView> {
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (tx) => {
    // Read first so the audit row can say which end state (failed or cancelled) was left.
    const before = await tx.selectFrom("pki_jobs").select(["kind", "status"]).where("id", "=", id).executeTakeFirst();
    if (!before) throw jobNotFound();
    const updated = await tx
      .updateTable("pki_jobs")
      .set({
        status: "pending",
        attempts: 0,
        run_after: now,
        updated_at: now,
        finished_at: null,
        result: null,
        claimed_by: null,
        lease_expires_at: null,
      })
      .where("id", "=", id)
      .where("status", "in", ["failed", "cancelled"])
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) throw await refusal(tx, id, "PKI_JOB_NOT_RETRYABLE");
    await auditJobStateChange(tx, ctx.clock, {
      event: "job.retried",
      jobId: id,
      kind: before.kind,
      from: before.status as PkiJobStatus,
      to: "pending",
      actor: actor.agentId ?? "system",
      // Also in detail, where readers of rows older than the job_id column look for it.
      detail: { job_id: id },
    });
  });
  ctx.log.category("PKI").info("job.retried", { job_id: id, to: "pending", agent_id: actor.agentId });
  ctx.events.jobQueued();
  return getJob(ctx, id);
}

/**
 * A rotation's retire job waits for its grace period as a pending job; cancelling it would leave
 * the old certificates valid for good, so it is refused (a reissue revokes them if they must go).
 */
const NOT_CANCELLABLE_KINDS: ReadonlySet<string> = new Set(["node_cert_retire"]);

/** pending → cancelled; a running job cannot be cancelled (its transaction decides). */
export async function cancelJob(ctx: CpContext, actor: Actor, id: string): Promise<PkiJobView> {
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (tx) => {
    const kind = await tx.selectFrom("pki_jobs").select("kind").where("id", "=", id).executeTakeFirst();
    if (kind && NOT_CANCELLABLE_KINDS.has(kind.kind)) {
      throw new AuthNexusError("PKI_JOB_NOT_CANCELLABLE", {
        message:
          "A retire job revokes a rotation's old certificates after its grace period and cannot be cancelled; reissue the node's package to revoke everything now.",
        publicDetail: { kind: kind.kind },
      });
    }
    const updated = await tx
      .updateTable("pki_jobs")
      .set({ status: "cancelled", updated_at: now, finished_at: now })
      .where("id", "=", id)
      .where("status", "=", "pending")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) throw await refusal(tx, id, "PKI_JOB_NOT_CANCELLABLE");
    await auditJobStateChange(tx, ctx.clock, {
      event: "job.cancelled",
      jobId: id,
      kind: await jobKind(tx, id),
      from: "pending",
      to: "cancelled",
      actor: actor.agentId ?? "system",
      // Also in detail, where readers of rows older than the job_id column look for it.
      detail: { job_id: id },
    });
  });
  ctx.log.category("PKI").info("job.cancelled", { job_id: id, from: "pending", to: "cancelled", agent_id: actor.agentId });
  return getJob(ctx, id);
}

function jobNotFound(): AuthNexusError {
  return new AuthNexusError("NOT_FOUND", { message: "PKI job not found." });
}

async function jobKind(db: Kysely<ControlSchema>, id: string): Promise<string> {
  const row = await db.selectFrom("pki_jobs").select("kind").where("id", "=", id).executeTakeFirstOrThrow();
  return row.kind;
}

async function refusal(
  db: Kysely<ControlSchema>,
  id: string,
  code: "PKI_JOB_NOT_RETRYABLE" | "PKI_JOB_NOT_CANCELLABLE",
): Promise<AuthNexusError> {
  const row = await db.selectFrom("pki_jobs").select("status").where("id", "=", id).executeTakeFirst();
  if (!row) return jobNotFound();
  return new AuthNexusError(code, { publicDetail: { status: row.status } });
}
