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
import { writePkiAudit } from "../audit/pki-audit.js";
import type { Actor, CpContext } from "../context.js";
import { parseJsonColumn } from "../json-column.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";

export const PKI_JOB_STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"] as const;
export type PkiJobStatus = (typeof PKI_JOB_STATUSES)[number];
export const PKI_JOB_KINDS = ["node_onboard"] as const;
export type PkiJobKind = (typeof PKI_JOB_KINDS)[number];

export interface NewJob {
  kind: PkiJobKind;
  targetType: string | null;
  targetId: string | null;
  payload: Record<string, unknown>;
  createdBy: string | null;
  maxAttempts?: number;
}

/** Inserts a pending job, due now. Pass the caller's transaction. */
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
      run_after: now,
      created_at: now,
      updated_at: now,
      started_at: null,
      finished_at: null,
      created_by: job.createdBy,
      claimed_by: null,
      lease_expires_at: null,
    })
    .execute();
  return id;
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
  if (!row) throw new AuthNexusError("NOT_FOUND", { message: "PKI job not found." });
  return toJobView(row);
}

/** failed or cancelled → pending with a fresh set of attempts; anything else is 409. */
export async function retryJob(ctx: CpContext, actor: Actor, id: string): Promise<PkiJobView> {
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (tx) => {
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
    await writePkiAudit(tx, ctx.clock, { event: "job.retried", actor: actor.agentId ?? "system", detail: { job_id: id } });
  });
  ctx.log.category("PKI").info("job.retried", { job_id: id, agent_id: actor.agentId });
  ctx.events.jobQueued();
  return getJob(ctx, id);
}

/** pending → cancelled; a running job cannot be cancelled (its transaction decides). */
export async function cancelJob(ctx: CpContext, actor: Actor, id: string): Promise<PkiJobView> {
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (tx) => {
    const updated = await tx
      .updateTable("pki_jobs")
      .set({ status: "cancelled", updated_at: now, finished_at: now })
      .where("id", "=", id)
      .where("status", "=", "pending")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) throw await refusal(tx, id, "PKI_JOB_NOT_CANCELLABLE");
    await writePkiAudit(tx, ctx.clock, { event: "job.cancelled", actor: actor.agentId ?? "system", detail: { job_id: id } });
  });
  ctx.log.category("PKI").info("job.cancelled", { job_id: id, agent_id: actor.agentId });
  return getJob(ctx, id);
}

async function refusal(
  db: Kysely<ControlSchema>,
  id: string,
  code: "PKI_JOB_NOT_RETRYABLE" | "PKI_JOB_NOT_CANCELLABLE",
): Promise<AuthNexusError> {
  const row = await db.selectFrom("pki_jobs").select("status").where("id", "=", id).executeTakeFirst();
  if (!row) return new AuthNexusError("NOT_FOUND", { message: "PKI job not found." });
  return new AuthNexusError(code, { publicDetail: { status: row.status } });
}
