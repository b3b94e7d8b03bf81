/**
 * The durable PKI job worker and the /admin/v1/pki/jobs endpoints, on SQLite and PostgreSQL,
 * driven deterministically (runOnce / sweep with a ManualClock): failures retried with
 * exponential backoff until the job fails; a crash before the final commit leaves nothing
 * behind; a lost lease cannot commit; a job left running by a dead CP is reclaimed and a
 * restarted worker resumes it; retry / cancel state rules and their refusals; and the timer
 * loop (start, wake on create, stop waiting for the job in flight).
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  createJobWorker,
  createPkiJobWorker,
  INTERRUPTED_ERROR,
  type JobHandler,
  JobLeaseLostError,
  nodeOnboardHandler,
  retryDelayMs,
} from "../../src/cp/jobs/index.js";
import type { Actor } from "../../src/cp/services/context.js";
import { createNode } from "../../src/cp/services/nodes/lifecycle.js";
import { JOB_LEASE_MS } from "../../src/shared/config/defaults.js";
import { type AdminApp, buildAdminApp, type CallResult, call, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

type Obj = Record<string, unknown>;
const V1 = "/admin/v1";
const ACTOR: Actor = { agentId: null, username: "pki-jobs-test", ip: null, requestId: null };
const OPERATOR_PASSWORD = "Operator-Passw0rd-Jobs";

function json(res: CallResult, status: number, label: string): Obj {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  return res.json as Obj;
}

function refused(res: CallResult, status: number, code: string, label: string): void {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  assert.equal((res.json as Obj | undefined)?.error, code, `${label}: ${res.text.slice(0, 400)}`);
}

/** Waits for a condition the worker's own timers bring about (bounded; no fixed sleeps). */
async function eventually<T>(probe: () => Promise<T | undefined | null | false>, label: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

for (const variant of dbVariants()) {
  describe(`PKI jobs on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    let root: string;
    let operator: string;
    let counter = 0;

    const newNode = async () => {
      counter += 1;
      const node = await createNode(cp.ctx, ACTOR, {
        name: `job-node-${counter}`,
        host: `job-${counter}.example.test`,
        businessPort: 8443,
      });
      return { nodeId: node.id, jobId: node.job_id };
    };
    const job = (id: string) => cp.ctx.controlDb.selectFrom("pki_jobs").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const nodeCerts = (nodeId: string) => cp.ctx.controlDb.selectFrom("certificates").select("id").where("owner_id", "=", nodeId).execute();
    const nodePackages = (nodeId: string) =>
      cp.ctx.controlDb.selectFrom("deploy_packages").select("id").where("node_id", "=", nodeId).execute();
    const nodeStatus = async (nodeId: string) =>
      (await cp.ctx.controlDb.selectFrom("nodes").select("status").where("id", "=", nodeId).executeTakeFirstOrThrow()).status;
    /** Settles every job still due so each test starts from an empty queue. */
    const drain = async () => {
      const worker = createPkiJobWorker(cp.ctx);
      while ((await worker.runOnce()) !== null) {
        // run what is due
      }
    };

    /** A session's first use after the clock moved records last_used_at; do that before a snapshot. */
    const touchSessions = async () => {
      for (const token of [root, operator]) json(await call(app, "GET", `${V1}/pki/jobs?page_size=1`, { token }), 200, "touch session");
    };

    before(async () => {
      cp = await createTestCp(variant, "jobs");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      json(
        await call(app, "POST", `${V1}/agents`, {
          token: root,
          body: { username: "job-operator", password: OPERATOR_PASSWORD, role: "operator" },
        }),
        201,
        "operator",
      );
      operator = (await loginAs(app, "job-operator", OPERATOR_PASSWORD)).access_token;
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });

    test("failures are retried with exponential backoff until the job fails; nothing is left behind", async () => {
      await drain();
      const { nodeId, jobId } = await newNode();
      const worker = createJobWorker(cp.ctx, {
        node_onboard: async () => {
          throw new Error("tcp_server_ca unreachable\nsecond line");
        },
      });
      const delays: number[] = [];
      for (let attempt = 1; attempt <= 5; attempt++) {
        const report = await worker.runOnce();
        assert.equal(report?.jobId, jobId);
        const row = await job(jobId);
        assert.equal(row.attempts, attempt);
        assert.equal(row.last_error, "tcp_server_ca unreachable second line", "one line, as the error said it");
        assert.equal(row.claimed_by, null);
        assert.equal(row.lease_expires_at, null);
        if (attempt < 5) {
          assert.equal(report?.outcome, "retrying");
          assert.equal(row.status, "pending");
          const delay = row.run_after - cp.clock.now();
          delays.push(delay);
          assert.equal(delay, retryDelayMs(attempt));
          cp.clock.advance(delay - 1);
          assert.equal(await worker.runOnce(), null, "not due before its backoff has passed");
          cp.clock.advance(1);
        } else {
          assert.equal(report?.outcome, "failed");
          assert.equal(row.status, "failed");
          assert.equal(row.finished_at, cp.clock.now());
        }
      }
      assert.deepEqual(delays, [5_000, 10_000, 20_000, 40_000], "doubling from 5 s");
      assert.equal(await worker.runOnce(), null, "a failed job is not run again");
      assert.equal(await nodeStatus(nodeId), "provisioning");
      assert.deepEqual(await nodeCerts(nodeId), []);
      assert.deepEqual(await nodePackages(nodeId), []);
      assert.ok(cp.logLines.some((l) => l.includes("job.retry_scheduled") && l.includes(jobId)));
      assert.ok(cp.logLines.some((l) => l.includes("job.failed") && l.includes(jobId)));

      // An admin retries it: attempts start over and the real handler provisions the node.
      const retried = json(await call(app, "POST", `${V1}/pki/jobs/${jobId}/retry`, { token: root }), 200, "retry");
      assert.equal(retried.status, "pending");
      assert.equal(retried.attempts, 0);
      assert.equal(retried.finished_at, null);
      const real = createPkiJobWorker(cp.ctx);
      assert.deepEqual(await real.runOnce(), { jobId, kind: "node_onboard", outcome: "succeeded" });
      assert.equal(await nodeStatus(nodeId), "active");
      assert.equal((await nodeCerts(nodeId)).length, 2);
    });

    test("a crash before the final commit leaves nothing behind; the retry starts over", async () => {
      await drain();
      const { nodeId, jobId } = await newNode();
      const real = nodeOnboardHandler(cp.ctx);
      const crashing: JobHandler = (run) =>
        real({
          job: run.job,
          complete: async (tx, result) => {
            await run.complete(tx, result);
            throw new Error("CP crashed before commit");
          },
        });
      const report = await createJobWorker(cp.ctx, { node_onboard: crashing }).runOnce();
      assert.equal(report?.outcome, "retrying");
      const row = await job(jobId);
      assert.equal(row.status, "pending", "the job's success rolled back with everything else");
      assert.equal(row.result, null);
      assert.equal(await nodeStatus(nodeId), "provisioning");
      assert.deepEqual(await nodeCerts(nodeId), []);
      assert.deepEqual(await nodePackages(nodeId), []);
      const audit = await cp.ctx.controlDb.selectFrom("node_audit_logs").select("event").where("node_id", "=", nodeId).execute();
      assert.deepEqual(
        audit.map((a) => a.event),
        ["node.created"],
      );

      cp.clock.advance(retryDelayMs(1));
      assert.equal((await createPkiJobWorker(cp.ctx).runOnce())?.outcome, "succeeded");
      assert.equal((await nodeCerts(nodeId)).length, 2, "exactly one server and one client certificate");
      assert.equal((await nodePackages(nodeId)).length, 1);
      assert.equal((await job(jobId)).attempts, 2);
    });

    test("a worker whose lease was taken over cannot commit", async () => {
      await drain();
      const { nodeId, jobId } = await newNode();
      const real = nodeOnboardHandler(cp.ctx);
      const other = createPkiJobWorker({ ...cp.ctx, instanceId: "cp_other" });
      let lost: unknown;
      const slow: JobHandler = async (run) => {
        // While this worker is busy its lease expires and another CP's sweep reclaims the job.
        cp.clock.advance(JOB_LEASE_MS + 1);
        assert.equal(await other.sweep(), 1);
        try {
          await real(run);
        } catch (error) {
          lost = error;
          throw error;
        }
      };
      const report = await createJobWorker(cp.ctx, { node_onboard: slow }).runOnce();
      assert.ok(lost instanceof JobLeaseLostError, String(lost));
      assert.equal(report?.outcome, "lost");
      const row = await job(jobId);
      assert.equal(row.status, "pending");
      assert.equal(row.last_error, INTERRUPTED_ERROR);
      assert.deepEqual(await nodeCerts(nodeId), [], "the loser's certificates rolled back");
      assert.equal((await other.runOnce())?.outcome, "succeeded");
      assert.equal((await nodeCerts(nodeId)).length, 2);
    });

    describe("a CP that dies mid-job", () => {
      test("a running job with a live lease is left alone; once the lease expires a sweep reclaims it and a restarted worker resumes it", async () => {
        await drain();
        const { nodeId, jobId } = await newNode();
        const now = cp.clock.now();
        // What a CP killed mid-job leaves behind.
        await cp.ctx.controlDb
          .updateTable("pki_jobs")
          .set({ status: "running", claimed_by: "cp_dead", attempts: 1, started_at: now, lease_expires_at: now + JOB_LEASE_MS })
          .where("id", "=", jobId)
          .execute();
        const restarted = createPkiJobWorker({ ...cp.ctx, instanceId: "cp_restarted" });
        assert.equal(await restarted.sweep(), 0, "the lease is still live");
        assert.equal(await restarted.runOnce(), null);
        assert.equal((await job(jobId)).status, "running");

        cp.clock.advance(JOB_LEASE_MS + 1);
        assert.equal(await restarted.sweep(), 1);
        const reclaimed = await job(jobId);
        assert.equal(reclaimed.status, "pending");
        assert.equal(reclaimed.last_error, INTERRUPTED_ERROR);
        assert.equal(reclaimed.claimed_by, null);
        assert.equal(reclaimed.lease_expires_at, null);
        assert.ok(cp.logLines.some((l) => l.includes("job.reclaimed") && l.includes("cp_dead")));

        assert.equal((await restarted.runOnce())?.outcome, "succeeded");
        const done = await job(jobId);
        assert.equal(done.status, "succeeded");
        assert.equal(done.attempts, 2);
        assert.equal(await nodeStatus(nodeId), "active");
      });

      test("a job reclaimed and re-run by the SAME worker: the stale first attempt can no longer commit (the attempt number fences it)", async () => {
        await drain();
        const { nodeId, jobId } = await newNode();
        const real = nodeOnboardHandler(cp.ctx);
        const gate = () => {
          let open!: () => void;
          const opened = new Promise<void>((resolve) => {
            open = resolve;
          });
          return { open, opened };
        };
        const started = [gate(), gate()];
        const held = [gate(), gate()];
        const committed: number[] = [];
        const worker = createJobWorker(cp.ctx, {
          node_onboard: async (run) => {
            const attempt = run.job.attempts;
            started[attempt - 1]?.open();
            await held[attempt - 1]?.opened;
            await real({
              job: run.job,
              complete: async (tx, result) => {
                await run.complete(tx, result);
                committed.push(attempt);
              },
            });
          },
        });
        // Attempt 1 stalls past its lease (a long GC pause, a hung signing call)...
        const first = worker.runOnce();
        await started[0]?.opened;
        cp.clock.advance(JOB_LEASE_MS + 1);
        // ...so this very worker's sweep reclaims the job, and the worker starts attempt 2.
        assert.equal(await worker.sweep(), 1);
        const second = worker.runOnce();
        await started[1]?.opened;
        // Attempt 1 wakes up while attempt 2 holds the job under the SAME claimed_by: only the
        // attempt number tells them apart, and it refuses the stale commit (rolled back whole).
        held[0]?.open();
        assert.equal((await first)?.outcome, "lost");
        assert.deepEqual(committed, [], "attempt 1 never committed");
        assert.deepEqual(await nodeCerts(nodeId), [], "and left no certificate behind");
        assert.equal((await job(jobId)).status, "running");
        held[1]?.open();
        assert.deepEqual(await second, { jobId, kind: "node_onboard", outcome: "succeeded" });
        assert.deepEqual(committed, [2]);
        const done = await job(jobId);
        assert.equal(done.status, "succeeded");
        assert.equal(done.attempts, 2);
        assert.equal((await nodeCerts(nodeId)).length, 2);
        assert.equal((await nodePackages(nodeId)).length, 1);
      });

      test("out of attempts, the reclaimed job fails instead", async () => {
        await drain();
        const { jobId } = await newNode();
        const now = cp.clock.now();
        await cp.ctx.controlDb
          .updateTable("pki_jobs")
          .set({ status: "running", claimed_by: "cp_dead", attempts: 5, max_attempts: 5, started_at: now, lease_expires_at: now - 1 })
          .where("id", "=", jobId)
          .execute();
        assert.equal(await createPkiJobWorker(cp.ctx).sweep(), 1);
        const row = await job(jobId);
        assert.equal(row.status, "failed");
        assert.equal(row.last_error, INTERRUPTED_ERROR);
        assert.equal(row.finished_at, now);
      });

      test("start() sweeps at once, so a restart never leaves the job running", async () => {
        await drain();
        const { jobId } = await newNode();
        const now = cp.clock.now();
        await cp.ctx.controlDb
          .updateTable("pki_jobs")
          .set({
            status: "running",
            claimed_by: "cp_dead",
            attempts: 1,
            started_at: now - JOB_LEASE_MS * 2,
            lease_expires_at: now - JOB_LEASE_MS,
          })
          .where("id", "=", jobId)
          .execute();
        const worker = createPkiJobWorker({ ...cp.ctx, instanceId: "cp_started" }, { pollIntervalMs: 60_000 });
        worker.start();
        try {
          await eventually(async () => (await job(jobId)).status === "succeeded", "the reclaimed job to succeed");
        } finally {
          await worker.stop();
        }
        assert.equal((await job(jobId)).attempts, 2);
      });
    });

    describe("the timer loop", () => {
      test("creating a node through the API wakes the started worker at once", async () => {
        await drain();
        // A poll interval far beyond the test's patience: only wake() can start the job in time.
        const worker = createPkiJobWorker(cp.ctx, { pollIntervalMs: 3_600_000 });
        worker.start();
        try {
          const created = json(
            await call(app, "POST", `${V1}/nodes`, {
              token: root,
              body: { name: "woken", host: "woken.example.test", business_port: 8443 },
            }),
            201,
            "create",
          );
          await eventually(async () => (await job(created.job_id as string)).status === "succeeded", "the woken job");
        } finally {
          await worker.stop();
        }
      });

      test("the lease is renewed while the job runs; stop() waits for the job in flight, which then commits", async () => {
        await drain();
        const { jobId } = await newNode();
        const real = nodeOnboardHandler(cp.ctx);
        let release!: () => void;
        const gate = new Promise<void>((resolve) => {
          release = resolve;
        });
        let entered = false;
        const worker = createJobWorker(
          cp.ctx,
          {
            node_onboard: async (run) => {
              entered = true;
              await gate;
              await real(run);
            },
          },
          { leaseRenewMs: 10 },
        );
        worker.start();
        await eventually(async () => entered, "the handler to start");
        const claimedLease = (await job(jobId)).lease_expires_at ?? 0;
        cp.clock.advance(30_000);
        const renewed = await eventually(async () => {
          const lease = (await job(jobId)).lease_expires_at;
          return lease !== null && lease > claimedLease ? lease : null;
        }, "the lease to be renewed");
        assert.equal(renewed, cp.clock.now() + JOB_LEASE_MS);
        cp.clock.advance(40_000); // past the lease taken at claim time, within the renewed one
        assert.equal(await createPkiJobWorker({ ...cp.ctx, instanceId: "cp_other" }).sweep(), 0, "a renewed lease is not reclaimed");
        let stopped = false;
        const stopping = worker.stop().then(() => {
          stopped = true;
        });
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(stopped, false, "stop() waits while the job runs");
        assert.equal((await job(jobId)).status, "running");
        release();
        await stopping;
        assert.equal((await job(jobId)).status, "succeeded");
      });
    });

    describe("admin endpoints", () => {
      test("list, filter and detail", async () => {
        await drain();
        const { jobId } = await newNode();
        const pending = json(await call(app, "GET", `${V1}/pki/jobs?status=pending`, { token: operator }), 200, "pending");
        assert.deepEqual(
          (pending.items as Obj[]).map((j) => j.id),
          [jobId],
        );
        const all = json(await call(app, "GET", `${V1}/pki/jobs?kind=node_onboard&page_size=200`, { token: operator }), 200, "all");
        assert.equal(all.total, (all.items as Obj[]).length);
        assert.ok((all.items as Obj[]).length >= 2);
        const detail = json(await call(app, "GET", `${V1}/pki/jobs/${jobId}`, { token: operator }), 200, "detail");
        assert.equal(detail.kind, "node_onboard");
        assert.equal(detail.target_type, "node");
        assert.equal(typeof detail.payload, "object");
        json(await call(app, "GET", `${V1}/pki/cas`, { token: operator }), 200, "the /pki routes still answer next to /pki/jobs");
      });

      test("cancel and retry follow the state rules; every refusal is a 409 that changes nothing", async () => {
        await drain();
        const { jobId } = await newNode();
        const post = (path: string, token = root) => call(app, "POST", `${V1}/pki/jobs/${jobId}/${path}`, { token });
        const unchanged = async (res: () => Promise<CallResult>, status: number, code: string, label: string) => {
          await touchSessions();
          const before = await snapshotDb(cp.ctx);
          refused(await res(), status, code, label);
          assert.deepEqual(await snapshotDb(cp.ctx), before, label);
        };

        await unchanged(() => post("retry"), 409, "PKI_JOB_NOT_RETRYABLE", "retry pending");
        const cancelled = json(await post("cancel"), 200, "cancel pending");
        assert.equal(cancelled.status, "cancelled");
        assert.equal(await createPkiJobWorker(cp.ctx).runOnce(), null, "a cancelled job never runs");
        await unchanged(() => post("cancel"), 409, "PKI_JOB_NOT_CANCELLABLE", "cancel cancelled");
        assert.equal(json(await post("retry"), 200, "retry cancelled").status, "pending");

        // Running (held by another CP): neither cancellable nor retryable.
        const now = cp.clock.now();
        await cp.ctx.controlDb
          .updateTable("pki_jobs")
          .set({ status: "running", claimed_by: "cp_elsewhere", attempts: 1, lease_expires_at: now + JOB_LEASE_MS })
          .where("id", "=", jobId)
          .execute();
        await unchanged(() => post("cancel"), 409, "PKI_JOB_NOT_CANCELLABLE", "cancel running");
        await unchanged(() => post("retry"), 409, "PKI_JOB_NOT_RETRYABLE", "retry running");
        await cp.ctx.controlDb
          .updateTable("pki_jobs")
          .set({ status: "pending", claimed_by: null, lease_expires_at: null })
          .where("id", "=", jobId)
          .execute();

        assert.equal((await createPkiJobWorker(cp.ctx).runOnce())?.outcome, "succeeded");
        await unchanged(() => post("retry"), 409, "PKI_JOB_NOT_RETRYABLE", "retry succeeded");
        await unchanged(() => post("cancel"), 409, "PKI_JOB_NOT_CANCELLABLE", "cancel succeeded");
        const refusal = await post("retry");
        assert.deepEqual((refusal.json as Obj).details, { status: "succeeded" }, "the refusal names the current state");

        const pkiAudit = await cp.ctx.controlDb
          .selectFrom("pki_audit_logs")
          .select("event")
          .where("detail", "like", `%${jobId}%`)
          .execute();
        assert.deepEqual(
          pkiAudit
            .map((a) => a.event)
            .filter((e) => e.startsWith("job."))
            .sort(),
          ["job.cancelled", "job.retried"],
        );
        const agentAudit = await cp.ctx.controlDb
          .selectFrom("agent_audit_logs")
          .select(["action", "result"])
          .where("target_id", "=", jobId)
          .execute();
        assert.ok(agentAudit.some((a) => a.action === "pki.job.cancel" && a.result === "success"));
        assert.ok(agentAudit.some((a) => a.action === "pki.job.retry" && a.result === "failure"));
      });

      test("bad ids, bodies, queries and roles: 4xx, nothing changed", async () => {
        await drain();
        const { jobId } = await newNode();
        await touchSessions();
        const before = await snapshotDb(cp.ctx);
        const cases: Array<[string, string, Parameters<typeof call>[3], number, string]> = [
          ["GET", "/pki/jobs/job_missing", { token: root }, 404, "NOT_FOUND"],
          ["GET", "/pki/jobs/bad%20id", { token: root }, 404, "NOT_FOUND"],
          ["POST", "/pki/jobs/job_missing/retry", { token: root }, 404, "NOT_FOUND"],
          ["POST", "/pki/jobs/job_missing/cancel", { token: root }, 404, "NOT_FOUND"],
          ["POST", `/pki/jobs/${"j".repeat(65)}/cancel`, { token: root }, 404, "NOT_FOUND"],
          ["POST", `/pki/jobs/${jobId}/cancel`, { token: root, body: { reason: "x" } }, 400, "VALIDATION_FAILED"],
          [
            "POST",
            `/pki/jobs/${jobId}/cancel`,
            { token: root, rawBody: "{", headers: { "content-type": "application/json" } },
            400,
            "MALFORMED_JSON",
          ],
          [
            "POST",
            `/pki/jobs/${jobId}/retry`,
            { token: root, rawBody: "x", headers: { "content-type": "text/plain" } },
            415,
            "UNSUPPORTED_MEDIA_TYPE",
          ],
          ["GET", "/pki/jobs?status=done", { token: root }, 400, "VALIDATION_FAILED"],
          ["GET", "/pki/jobs?kind=node_rotate", { token: root }, 400, "VALIDATION_FAILED"],
          ["GET", "/pki/jobs?target_id=a%20b", { token: root }, 400, "VALIDATION_FAILED"],
          ["GET", "/pki/jobs?page_size=0", { token: root }, 400, "VALIDATION_FAILED"],
          ["POST", `/pki/jobs/${jobId}/cancel`, { token: operator }, 403, "FORBIDDEN"],
          ["POST", `/pki/jobs/${jobId}/retry`, { token: operator }, 403, "FORBIDDEN"],
          ["POST", `/pki/jobs/${jobId}/cancel`, {}, 401, "UNAUTHENTICATED"],
          ["GET", "/pki/jobs", {}, 401, "UNAUTHENTICATED"],
        ];
        for (const [method, path, options, status, code] of cases)
          refused(await call(app, method, `${V1}${path}`, options), status, code, `${method} ${path}`);
        assert.deepEqual(await snapshotDb(cp.ctx), before);
        assert.equal((await job(jobId)).status, "pending");
      });
    });
  });
}
