/**
 * The durable PKI job worker. Jobs are rows in pki_jobs; any CP process sharing the Control DB
 * may run them, so a job is claimed with a conditional UPDATE (pending → running) and held under
 * a lease the worker renews while it runs. A handler commits its effects and the job's success
 * in one transaction (`run.complete(tx, …)`), fenced on the claim, so a job whose lease was lost
 * can never commit twice. A job left "running" by a CP that died is found by the sweep once its
 * lease has expired and goes back to pending (or failed when out of attempts).
 *
 * Every state change (claimed, succeeded, retry scheduled, failed, reclaimed) writes a
 * `job.state_changed` PKI audit row in the same transaction as the change.
 *
 * Time comparisons use the injected clock; timers only pace polling. Tests drive the worker
 * deterministically through sweep() and runOnce() without start().
 */

import type { Kysely } from "kysely";
import {
  JOB_LEASE_MS,
  JOB_LEASE_RENEW_MS,
  JOB_POLL_INTERVAL_MS,
  JOB_RETRY_BASE_MS,
  JOB_RETRY_MAX_MS,
  JOB_STOP_WAIT_MS,
} from "../../shared/config/defaults.js";
import type { ControlSchema, PkiJobsTable } from "../../shared/db/control-schema.js";
import { type CancelTimer, delay, every } from "../../shared/time/index.js";
import type { CpContext } from "../services/context.js";
import { auditJobStateChange, type JobStateChange } from "../services/pki/jobs.js";

/** The worker acts for the system, not for an agent. */
const WORKER_ACTOR = "system";

/** last_error of a job reclaimed from a dead (or stopped) CP process. */
export const INTERRUPTED_ERROR = "interrupted: CP stopped while the job was running";
const MAX_ERROR_LENGTH = 1000;
const CLAIM_CANDIDATES = 10;

export interface ClaimedJob {
  id: string;
  kind: string;
  targetType: string | null;
  targetId: string | null;
  payload: unknown;
  /** This attempt's number (1-based). */
  attempts: number;
  maxAttempts: number;
}

export interface JobRun {
  job: ClaimedJob;
  /**
   * Marks the job succeeded inside the handler's transaction, so the job's effects and its state
   * commit together. Throws when the job is no longer this worker's (lease lost, cancelled),
   * which rolls the handler's transaction back.
   */
  complete(tx: Kysely<ControlSchema>, result: Record<string, unknown>): Promise<void>;
}

export type JobHandler = (run: JobRun) => Promise<void>;

/**
 * A failure retrying cannot fix (the job's target is gone): the job fails at once. Internal to
 * the worker and its handlers, like JobLeaseLostError: neither reaches a client; both end up as
 * the job's last_error, which the jobs endpoints show.
 */
export class PermanentJobError extends Error {
  override readonly name = "PermanentJobError";
}

/** The claim was lost between start and commit (reclaimed by a sweep, or cancelled). */
export class JobLeaseLostError extends Error {
  override readonly name = "JobLeaseLostError";
}

export type JobOutcome = "succeeded" | "retrying" | "failed" | "lost";

export interface JobRunReport {
  jobId: string;
  kind: string;
  outcome: JobOutcome;
  error?: string;
}

export interface JobWorkerOptions {
  pollIntervalMs: number;
  leaseMs: number;
  leaseRenewMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  stopWaitMs: number;
}

export interface JobWorker {
  /** Sweeps, then polls until stop(). Calling it again while running does nothing. */
  start(): void;
  /** Stops polling and waits (bounded) for the job in flight; nothing half-done is released. */
  stop(): Promise<void>;
  /** Look for due jobs now (after a job was created or retried). */
  wake(): void;
  /** Reclaims jobs whose lease expired; returns how many. */
  sweep(): Promise<number>;
  /** Claims and runs one due job; null when none is due. */
  runOnce(): Promise<JobRunReport | null>;
}

const DEFAULT_OPTIONS: JobWorkerOptions = {
  pollIntervalMs: JOB_POLL_INTERVAL_MS,
  leaseMs: JOB_LEASE_MS,
  leaseRenewMs: JOB_LEASE_RENEW_MS,
  retryBaseMs: JOB_RETRY_BASE_MS,
  retryMaxMs: JOB_RETRY_MAX_MS,
  stopWaitMs: JOB_STOP_WAIT_MS,
};

/** Delay before attempt `attempts + 1` after attempt `attempts` failed. */
export function retryDelayMs(attempts: number, options: Pick<JobWorkerOptions, "retryBaseMs" | "retryMaxMs"> = DEFAULT_OPTIONS): number {
  return Math.min(options.retryMaxMs, options.retryBaseMs * 2 ** Math.max(0, attempts - 1));
}

export function createJobWorker(
  ctx: CpContext,
  handlers: Readonly<Record<string, JobHandler>>,
  overrides: Partial<JobWorkerOptions> = {},
): JobWorker {
  const options = { ...DEFAULT_OPTIONS, ...overrides };
  const log = ctx.log.category("PKI");
  const db = ctx.controlDb;
  const kinds = Object.keys(handlers);
  const loop = {
    cancelTimer: null as CancelTimer | null,
    inFlight: null as Promise<void> | null,
    wakeAgain: false,
    stopping: true,
    unsubscribe: () => {},
  };

  async function sweep(): Promise<number> {
    const now = ctx.clock.now();
    const stale = await db
      .selectFrom("pki_jobs")
      .select(["id", "kind", "attempts", "max_attempts", "claimed_by"])
      .where("status", "=", "running")
      .where((eb) => eb.or([eb("lease_expires_at", "is", null), eb("lease_expires_at", "<", now)]))
      .execute();
    let reclaimed = 0;
    for (const job of stale) {
      const failed = job.attempts >= job.max_attempts;
      if (!(await reclaim(job, failed, now))) continue;
      reclaimed += 1;
      log.warn("job.reclaimed", {
        job_id: job.id,
        kind: job.kind,
        previous_holder: job.claimed_by,
        attempts: job.attempts,
        status: failed ? "failed" : "pending",
      });
    }
    return reclaimed;
  }

  /** running → pending (or failed when out of attempts) for a job whose holder stopped renewing its lease. */
  async function reclaim(
    job: { id: string; kind: string; attempts: number; claimed_by: string | null },
    failed: boolean,
    now: number,
  ): Promise<boolean> {
    return db.transaction().execute(async (tx) => {
      const result = await tx
        .updateTable("pki_jobs")
        .set({
          status: failed ? "failed" : "pending",
          last_error: INTERRUPTED_ERROR,
          claimed_by: null,
          lease_expires_at: null,
          run_after: now,
          finished_at: failed ? now : null,
          updated_at: now,
        })
        .where("id", "=", job.id)
        .where("status", "=", "running")
        .where("attempts", "=", job.attempts)
        .where((eb) => eb.or([eb("lease_expires_at", "is", null), eb("lease_expires_at", "<", now)]))
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) !== 1) return false;
      await audit(tx, job, "running", failed ? "failed" : "pending", {
        reason: "lease_expired",
        attempt: job.attempts,
        previous_holder: job.claimed_by,
      });
      return true;
    });
  }

  function audit(
    tx: Kysely<ControlSchema>,
    job: { id: string; kind: string },
    from: JobStateChange["from"],
    to: JobStateChange["to"],
    detail: Record<string, unknown>,
  ): Promise<void> {
    return auditJobStateChange(tx, ctx.clock, { jobId: job.id, kind: job.kind, from, to, actor: WORKER_ACTOR, detail });
  }

  async function claim(): Promise<PkiJobsTable | null> {
    if (kinds.length === 0) return null;
    const now = ctx.clock.now();
    const candidates = await db
      .selectFrom("pki_jobs")
      .select("id")
      .where("status", "=", "pending")
      .where("run_after", "<=", now)
      .where("kind", "in", kinds)
      .orderBy("run_after")
      .orderBy("created_at")
      .orderBy("id")
      .limit(CLAIM_CANDIDATES)
      .execute();
    for (const { id } of candidates) {
      const claimed = await claimOne(id, now);
      if (claimed) return claimed;
    }
    return null;
  }

  /** pending → running under this worker's lease; null when another worker (or a cancel) got there first. */
  async function claimOne(id: string, now: number): Promise<PkiJobsTable | null> {
    return db.transaction().execute(async (tx) => {
      const claimed = await tx
        .updateTable("pki_jobs")
        .set((eb) => ({
          status: "running",
          claimed_by: ctx.instanceId,
          lease_expires_at: now + options.leaseMs,
          attempts: eb("attempts", "+", 1),
          started_at: now,
          finished_at: null,
          updated_at: now,
        }))
        .where("id", "=", id)
        .where("status", "=", "pending")
        .where("run_after", "<=", now)
        .executeTakeFirst();
      if (Number(claimed.numUpdatedRows) !== 1) return null;
      const row = await tx.selectFrom("pki_jobs").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
      await audit(tx, row, "pending", "running", { attempt: row.attempts, instance_id: ctx.instanceId });
      return row;
    });
  }

  const updateJob = (target: Kysely<ControlSchema>) => target.updateTable("pki_jobs");
  /** Conditions that make an update apply only while this worker still holds this attempt. */
  const ours = (job: ClaimedJob) => (q: ReturnType<typeof updateJob>) =>
    q
      .where("id", "=", job.id)
      .where("status", "=", "running")
      .where("claimed_by", "=", ctx.instanceId)
      .where("attempts", "=", job.attempts);

  async function complete(tx: Kysely<ControlSchema>, job: ClaimedJob, result: Record<string, unknown>): Promise<void> {
    const now = ctx.clock.now();
    const updated = await updateJob(tx)
      .set({
        status: "succeeded",
        result: JSON.stringify(result),
        finished_at: now,
        updated_at: now,
        claimed_by: null,
        lease_expires_at: null,
      })
      .$call(ours(job))
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) throw new JobLeaseLostError(`job ${job.id} is no longer held by this worker`);
    await audit(tx, job, "running", "succeeded", { attempt: job.attempts });
  }

  async function renewLease(job: ClaimedJob): Promise<void> {
    const now = ctx.clock.now();
    try {
      await updateJob(db)
        .set({ lease_expires_at: now + options.leaseMs, updated_at: now })
        .$call(ours(job))
        .execute();
    } catch (error) {
      log.warn("job.lease_renew_failed", { job_id: job.id, error: (error as Error).message });
    }
  }

  async function recordFailure(job: ClaimedJob, error: unknown): Promise<JobRunReport> {
    const now = ctx.clock.now();
    const message = errorText(error);
    const permanent = error instanceof PermanentJobError;
    const failed = permanent || job.attempts >= job.maxAttempts;
    const delay = retryDelayMs(job.attempts, options);
    const recorded = await db.transaction().execute(async (tx) => {
      const updated = await updateJob(tx)
        .set({
          status: failed ? "failed" : "pending",
          last_error: message,
          run_after: failed ? now : now + delay,
          finished_at: failed ? now : null,
          updated_at: now,
          claimed_by: null,
          lease_expires_at: null,
        })
        .$call(ours(job))
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) !== 1) return false;
      const detail = { attempt: job.attempts, error: message, ...(failed ? { permanent } : { retry_in_ms: delay }) };
      await audit(tx, job, "running", failed ? "failed" : "pending", detail);
      return true;
    });
    if (!recorded) {
      log.warn("job.lost", { job_id: job.id, kind: job.kind, attempt: job.attempts, error: message });
      return { jobId: job.id, kind: job.kind, outcome: "lost", error: message };
    }
    const fields = { job_id: job.id, kind: job.kind, attempt: job.attempts, max_attempts: job.maxAttempts, error: message };
    if (failed) log.error("job.failed", { ...fields, permanent });
    else log.warn("job.retry_scheduled", { ...fields, retry_in_ms: delay });
    return { jobId: job.id, kind: job.kind, outcome: failed ? "failed" : "retrying", error: message };
  }

  async function runOnce(): Promise<JobRunReport | null> {
    const row = await claim();
    if (!row) return null;
    const job = toClaimedJob(row);
    const handler = handlers[job.kind];
    log.info("job.started", { job_id: job.id, kind: job.kind, attempt: job.attempts, target_id: job.targetId });
    const stopRenewal = every(ctx.scheduler, options.leaseRenewMs, () => void renewLease(job), { background: true });
    let completed = false;
    try {
      if (!handler) throw new PermanentJobError(`no handler for job kind ${job.kind}`);
      await handler({
        job,
        complete: async (tx, result) => {
          await complete(tx, job, result);
          completed = true;
        },
      });
      if (!completed) throw new Error(`handler for ${job.kind} returned without completing the job`);
      log.info("job.succeeded", { job_id: job.id, kind: job.kind, attempt: job.attempts });
      return { jobId: job.id, kind: job.kind, outcome: "succeeded" };
    } catch (error) {
      return await recordFailure(job, error);
    } finally {
      stopRenewal();
    }
  }

  async function drain(): Promise<void> {
    try {
      await sweep();
      while (!loop.stopping && (await runOnce()) !== null) {
        // keep going while jobs are due
      }
    } catch (error) {
      log.error("job.poll_failed", { error: (error as Error).message });
    }
  }

  function schedule(delayMs: number): void {
    if (loop.stopping) return;
    loop.cancelTimer?.();
    loop.cancelTimer = ctx.scheduler.setTimer(delayMs, tick, { background: true });
  }

  function tick(): void {
    loop.cancelTimer = null;
    if (loop.inFlight) {
      loop.wakeAgain = true;
      return;
    }
    loop.inFlight = drain().finally(() => {
      loop.inFlight = null;
      const again = loop.wakeAgain;
      loop.wakeAgain = false;
      schedule(again ? 0 : options.pollIntervalMs);
    });
  }

  const worker: JobWorker = {
    start() {
      if (!loop.stopping) return;
      loop.stopping = false;
      // Services announce new or retried jobs on the event bus.
      loop.unsubscribe = ctx.events.onJobQueued(() => worker.wake());
      log.info("job_worker.started", { instance_id: ctx.instanceId, kinds });
      schedule(0);
    },
    async stop() {
      loop.stopping = true;
      loop.cancelTimer?.();
      loop.cancelTimer = null;
      loop.unsubscribe();
      const inFlight = loop.inFlight;
      if (!inFlight) return;
      const wait = delay(ctx.scheduler, options.stopWaitMs);
      const gaveUp = await Promise.race([inFlight.then(() => false), wait.promise.then(() => true)]);
      wait.cancel();
      if (gaveUp) log.warn("job_worker.stop_timeout", { waited_ms: options.stopWaitMs });
    },
    wake() {
      if (loop.stopping) return;
      if (loop.inFlight) loop.wakeAgain = true;
      else schedule(0);
    },
    sweep,
    runOnce,
  };
  return worker;
}

function toClaimedJob(row: PkiJobsTable): ClaimedJob {
  return {
    id: row.id,
    kind: row.kind,
    targetType: row.target_type,
    targetId: row.target_id,
    payload: parsePayload(row.payload),
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
  };
}

function parsePayload(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/[\r\n]+/g, " ").slice(0, MAX_ERROR_LENGTH);
}
