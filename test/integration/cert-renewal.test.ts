/**
 * Automatic renewal of node certificates (src/cp/services/pki/renewal.ts) on SQLite and
 * PostgreSQL, with the in-process CP context, a ManualClock and the job worker driven by hand;
 * the node's side of a rotation (the ack) is called as the node API would call it.
 *
 * - Nothing is queued before the node's renewal instant; at it, exactly one rotation with reason
 *   "renewal" by "system:renewal", logged as renewal.queued with the certificate and instants.
 * - A second pass while that rotation is unfinished queues nothing.
 * - Once the rotation has issued fresh certificates (and after it completed) the node is not due
 *   again until the new certificates' own renewal instant.
 * - A disabled node is renewed like an active one (it is held, not retired; see renewal.ts).
 * - A node whose CP client certificate has expired is not rotated (it could not receive the new
 *   certificates) and is reported for a package reissue.
 * - The scheduler: a first pass shortly after start, then every interval; stop ends it;
 *   --cert-renew-check 0 turns it off (one log line, no timer).
 * - GET /pki/expiring's renew_at: the node's current certificates only, null when renewal is off.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { createPkiJobWorker } from "../../src/cp/jobs/index.js";
import type { Actor } from "../../src/cp/services/context.js";
import { createNode, disableNode } from "../../src/cp/services/nodes/lifecycle.js";
import { ackCredentials, pemFingerprint } from "../../src/cp/services/nodes/rotation.js";
import { listExpiringCertificates } from "../../src/cp/services/pki/expiring.js";
import {
  RENEWAL_ACTOR,
  RENEWAL_FAILURE_BACKOFF_MS,
  renewalDueAt,
  runRenewalPass,
  scheduleRenewal,
} from "../../src/cp/services/pki/renewal.js";
import { CERT_RENEW_FIRST_CHECK_DELAY_MS } from "../../src/shared/config/defaults.js";
import { ManualClock, ManualScheduler } from "../../src/shared/time/index.js";
import { completeSetup, createTestCp, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { runJobToCompletion } from "../helpers/nodes.js";

const ACTOR: Actor = { agentId: null, username: "renewal-test", ip: null, requestId: null };
const HOUR_MS = 3_600_000;

for (const variant of dbVariants()) {
  describe(`automatic certificate renewal on ${variant.name}`, { skip: variant.skip }, () => {
    const opened: TestCp[] = [];
    let counter = 0;

    after(async () => {
      await Promise.all(opened.splice(0).map((cp) => cp.close()));
      await variant.cleanup();
    });

    /** A fresh CP (set up) per test, on a ManualScheduler: each test owns its clock and its nodes. */
    const freshCp = async () => {
      counter += 1;
      const scheduler = new ManualScheduler(new ManualClock(Date.UTC(2026, 5, 1, 12, 0, 0)));
      const cp = await createTestCp(variant, `renewal${counter}`, { scheduler });
      opened.push(cp);
      await completeSetup(cp.ctx);
      return { cp, scheduler };
    };
    /** A node whose onboarding job has run: it has its server and client certificates. */
    const provisioned = async (cp: TestCp) => {
      counter += 1;
      const node = await createNode(cp.ctx, ACTOR, { name: `renew-${counter}`, host: `renew-${counter}.example.test`, businessPort: 8443 });
      await runJobToCompletion(cp.ctx, node.job_id);
      return node.id;
    };
    const nodeRow = (cp: TestCp, id: string) =>
      cp.ctx.controlDb.selectFrom("nodes").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const certRow = (cp: TestCp, id: string | null) =>
      cp.ctx.controlDb
        .selectFrom("certificates")
        .selectAll()
        .where("id", "=", id ?? "")
        .executeTakeFirstOrThrow();
    /** The node's renewal instant: the earlier of its two current certificates'. */
    const dueAt = async (cp: TestCp, nodeId: string) => {
      const node = await nodeRow(cp, nodeId);
      const due = await Promise.all(
        [node.server_cert_id, node.client_cert_id].map(async (id) => renewalDueAt(await certRow(cp, id), cp.ctx.pki)),
      );
      return Math.min(...due);
    };
    const rotationsOf = (cp: TestCp, nodeId: string) =>
      cp.ctx.controlDb.selectFrom("node_cert_rotations").selectAll().where("node_id", "=", nodeId).orderBy("created_at").execute();
    const pkiEvents = (cp: TestCp, msg: string) =>
      cp.logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.category === "PKI" && e.msg === msg);

    /** Runs the rotation's issue job, acks it as the node would, then runs the retire job after the grace. */
    const completeRotation = async (cp: TestCp, nodeId: string, rotationId: string) => {
      const rotation = (await rotationsOf(cp, nodeId)).find((r) => r.id === rotationId);
      assert.ok(rotation);
      await runJobToCompletion(cp.ctx, rotation.issue_job_id);
      const issued = (await rotationsOf(cp, nodeId)).find((r) => r.id === rotationId);
      assert.ok(issued?.new_server_cert_id && issued.new_client_cert_id, "the issue job recorded the new certificates");
      const node = await nodeRow(cp, nodeId);
      await ackCredentials(
        cp.ctx,
        {
          id: nodeId,
          status: node.status,
          certificateId: issued.new_client_cert_id,
          createdAt: node.created_at,
          pendingRotationId: rotationId,
        },
        rotationId,
        {
          server_cert_sha256: pemFingerprint((await certRow(cp, issued.new_server_cert_id)).cert_pem),
          client_cert_sha256: pemFingerprint((await certRow(cp, issued.new_client_cert_id)).cert_pem),
        },
      );
      cp.clock.advance(cp.ctx.pki.rotationGraceMs);
      const worker = createPkiJobWorker(cp.ctx);
      while ((await worker.runOnce()) !== null) {
        // the retire job, due now
      }
      const done = (await rotationsOf(cp, nodeId)).find((r) => r.id === rotationId);
      assert.notEqual(done?.completed_at, null, "the retire job completed the rotation");
      return done;
    };

    test("nothing before the renewal instant; at it exactly one rotation (reason renewal); a second pass while it is unfinished queues nothing", async () => {
      const { cp } = await freshCp();
      const nodeId = await provisioned(cp);
      const due = await dueAt(cp, nodeId);
      const node = await nodeRow(cp, nodeId);
      const server = await certRow(cp, node.server_cert_id);
      const lifetime = server.not_after - server.not_before;
      assert.ok(due >= server.not_before + 0.6 * lifetime - 1 && due <= server.not_before + 0.8 * lifetime, "within 70% ± 10%");

      assert.equal((await runRenewalPass(cp.ctx)).due, 0, "fresh certificates are not due");
      cp.clock.set(due - 1);
      const early = await runRenewalPass(cp.ctx);
      assert.deepEqual(early.queued, [], "one millisecond before the instant");
      assert.equal(early.due, 0);
      assert.equal((await rotationsOf(cp, nodeId)).length, 0);
      assert.equal(pkiEvents(cp, "renewal.pass_completed").length, 0, "a pass with nothing due logs no summary");

      cp.clock.set(due);
      const pass = await runRenewalPass(cp.ctx);
      assert.equal(pass.due, 1);
      assert.equal(pass.queued.length, 1);
      const rotations = await rotationsOf(cp, nodeId);
      assert.equal(rotations.length, 1);
      const [rotation] = rotations;
      assert.equal(rotation?.id, pass.queued[0]?.rotationId);
      assert.equal(rotation?.reason, "renewal");
      assert.equal(rotation?.created_by, RENEWAL_ACTOR);
      const job = await cp.ctx.controlDb
        .selectFrom("pki_jobs")
        .selectAll()
        .where("id", "=", rotation?.issue_job_id ?? "")
        .executeTakeFirstOrThrow();
      assert.equal(job.kind, "node_cert_rotate");
      assert.equal(job.status, "pending");
      const [queuedLine] = pkiEvents(cp, "renewal.queued");
      assert.equal(queuedLine?.node_id, nodeId);
      assert.equal(queuedLine?.rotation_id, rotation?.id);
      assert.ok(queuedLine?.cert === "server" || queuedLine?.cert === "client");
      assert.equal(queuedLine?.due_at, due);
      const triggering = await certRow(cp, queuedLine?.certificate_id as string);
      assert.equal(queuedLine?.not_after, triggering.not_after);
      assert.equal(queuedLine?.certificate_id, queuedLine?.cert === "server" ? node.server_cert_id : node.client_cert_id);
      const summary = pkiEvents(cp, "renewal.pass_completed").at(-1);
      assert.deepEqual([summary?.due, summary?.queued, summary?.in_progress, summary?.failed], [1, 1, 0, 0]);

      // Later passes (this CP's next tick, or another CP's) while the rotation is unfinished.
      for (const step of [0, HOUR_MS]) {
        cp.clock.advance(step);
        const again = await runRenewalPass(cp.ctx);
        assert.deepEqual(again.queued, []);
        assert.equal(again.inProgress, 1);
      }
      // Two passes at once, as two CP processes sharing the Control DB would run them.
      const [a, b] = await Promise.all([runRenewalPass(cp.ctx), runRenewalPass(cp.ctx)]);
      assert.equal(a.queued.length + b.queued.length, 0);
      assert.equal((await rotationsOf(cp, nodeId)).length, 1, "still the one rotation");
    });

    test("concurrent passes over a due node queue exactly one rotation", async () => {
      const { cp } = await freshCp();
      const nodeId = await provisioned(cp);
      cp.clock.set(await dueAt(cp, nodeId));
      const reports = await Promise.all([runRenewalPass(cp.ctx), runRenewalPass(cp.ctx), runRenewalPass(cp.ctx)]);
      assert.equal(
        reports.reduce((n, r) => n + r.queued.length, 0),
        1,
      );
      assert.equal(
        reports.reduce((n, r) => n + r.inProgress, 0),
        2,
      );
      assert.equal((await rotationsOf(cp, nodeId)).length, 1);
    });

    test("after the rotation issued fresh certificates, and after it completed, the node is not due until their own instant", async () => {
      const { cp } = await freshCp();
      const nodeId = await provisioned(cp);
      cp.clock.set(await dueAt(cp, nodeId));
      const [queued] = (await runRenewalPass(cp.ctx)).queued;
      assert.ok(queued);
      const done = await completeRotation(cp, nodeId, queued.rotationId);
      const node = await nodeRow(cp, nodeId);
      assert.equal(node.server_cert_id, done?.new_server_cert_id);
      assert.equal(node.client_cert_id, done?.new_client_cert_id);

      const pass = await runRenewalPass(cp.ctx);
      assert.equal(pass.due, 0, "the new certificates are fresh");
      const next = await dueAt(cp, nodeId);
      assert.ok(next - cp.clock.now() > 200 * 86_400_000, "the next renewal is months away");
      cp.clock.set(next - 1);
      assert.equal((await runRenewalPass(cp.ctx)).due, 0);
      cp.clock.set(next);
      const again = await runRenewalPass(cp.ctx);
      assert.equal(again.queued.length, 1, "the new certificates renew in turn");
      assert.equal((await rotationsOf(cp, nodeId)).filter((r) => r.reason === "renewal").length, 2);
    });

    test("after a renewal failed for good, the node is left alone for the back-off, then renewed again", async () => {
      const { cp } = await freshCp();
      const nodeId = await provisioned(cp);
      cp.clock.set(await dueAt(cp, nodeId));
      const first = await runRenewalPass(cp.ctx);
      assert.equal(first.queued.length, 1);
      // The issue job failed for good (as when the CA cannot sign): recorded as the worker records it.
      const rotation = (await rotationsOf(cp, nodeId))[0];
      await cp.ctx.controlDb
        .updateTable("pki_jobs")
        .set({ status: "failed", finished_at: cp.clock.now(), last_error: "signing failed" })
        .where("id", "=", rotation?.issue_job_id ?? "")
        .execute();
      cp.clock.advance(60 * 60_000);
      const held = await runRenewalPass(cp.ctx);
      assert.equal(held.backingOff, 1);
      assert.deepEqual(held.queued, []);
      assert.equal((await rotationsOf(cp, nodeId)).length, 1, "no new rotation an hour later");
      assert.equal(pkiEvents(cp, "renewal.backing_off").at(-1)?.node_id, nodeId);
      cp.clock.advance(RENEWAL_FAILURE_BACKOFF_MS);
      const again = await runRenewalPass(cp.ctx);
      assert.equal(again.queued.length, 1, "renewed again after the back-off");
    });

    test("a disabled node is renewed like an active one", async () => {
      const { cp } = await freshCp();
      const disabled = await provisioned(cp);
      await disableNode(cp.ctx, ACTOR, disabled);
      cp.clock.set(await dueAt(cp, disabled));
      const pass = await runRenewalPass(cp.ctx);
      assert.deepEqual(
        pass.queued.map((q) => q.nodeId),
        [disabled],
      );
      assert.equal((await nodeRow(cp, disabled)).status, "disabled", "renewal does not enable it");
    });

    test("a node whose client certificate expired is reported for a reissue, not rotated", async () => {
      const { cp } = await freshCp();
      const lapsed = await provisioned(cp);
      const client = await certRow(cp, (await nodeRow(cp, lapsed)).client_cert_id);
      cp.clock.set(client.not_after);
      const late = await runRenewalPass(cp.ctx);
      assert.equal(late.expired, 1);
      assert.deepEqual(late.queued, []);
      assert.equal((await rotationsOf(cp, lapsed)).length, 0);
      assert.equal(pkiEvents(cp, "renewal.too_late").at(-1)?.node_id, lapsed);
    });

    test("the scheduler: a first pass shortly after start, then every interval; stop ends it", async () => {
      const { cp, scheduler } = await freshCp();
      const nodeId = await provisioned(cp);
      cp.clock.set(await dueAt(cp, nodeId));
      const pendingBefore = scheduler.pending;
      const stop = scheduleRenewal(cp.ctx);
      assert.equal(pkiEvents(cp, "renewal.scheduled").length, 1);
      await scheduler.advance(CERT_RENEW_FIRST_CHECK_DELAY_MS - 1);
      assert.equal((await rotationsOf(cp, nodeId)).length, 0, "not before the first delay");
      await scheduler.advance(1);
      await waitFor(async () => (await rotationsOf(cp, nodeId)).length === 1, "the first pass queues the rotation");
      await waitFor(async () => pkiEvents(cp, "renewal.pass_completed").length === 1, "the first pass ends");

      await scheduler.advance(cp.ctx.pki.renewCheckIntervalMs);
      await waitFor(async () => pkiEvents(cp, "renewal.pass_completed").length === 2, "the hourly pass runs");
      assert.equal(pkiEvents(cp, "renewal.pass_completed").at(-1)?.in_progress, 1);
      assert.equal((await rotationsOf(cp, nodeId)).length, 1);

      stop();
      assert.equal(scheduler.pending, pendingBefore, "no renewal timer is left");
      await scheduler.advance(10 * cp.ctx.pki.renewCheckIntervalMs);
      assert.equal(pkiEvents(cp, "renewal.pass_completed").length, 2, "no pass after stop");
    });

    test("--cert-renew-check 0 turns renewal off: one log line, no timer, no renew_at", async () => {
      const { cp, scheduler } = await freshCp();
      const nodeId = await provisioned(cp);
      cp.ctx.pki = { ...cp.ctx.pki, renewCheckIntervalMs: 0 };
      const pendingBefore = scheduler.pending;
      const stop = scheduleRenewal(cp.ctx);
      assert.equal(scheduler.pending, pendingBefore);
      assert.equal(pkiEvents(cp, "renewal.off").length, 1);
      cp.clock.set(await dueAt(cp, nodeId));
      await scheduler.advance(2 * HOUR_MS);
      assert.equal((await rotationsOf(cp, nodeId)).length, 0);
      stop();
      const page = await listExpiringCertificates(cp.ctx, 3650, { page: 1, pageSize: 200 });
      assert.ok(page.items.length > 0);
      for (const item of page.items) assert.equal(item.renew_at, null);
    });

    test("GET /pki/expiring: renew_at for a node's current certificates, null for the others", async () => {
      const { cp } = await freshCp();
      const nodeId = await provisioned(cp);
      const node = await nodeRow(cp, nodeId);
      const page = await listExpiringCertificates(cp.ctx, 3650, { page: 1, pageSize: 200 });
      const current = [node.server_cert_id, node.client_cert_id];
      for (const item of page.items) {
        if (current.includes(item.id)) assert.equal(item.renew_at, renewalDueAt(await certRow(cp, item.id), cp.ctx.pki));
        else assert.equal(item.renew_at, null, `${item.profile} ${item.id}`);
      }
      assert.equal(page.items.filter((i) => i.renew_at !== null).length, 2);
      assert.ok(
        page.items.some((i) => i.renew_at === null),
        "some certificate that is not a node's (the CP's own)",
      );
    });
  });
}

/** Waits for what a timer's pass brings about (bounded; it runs on real database I/O). */
async function waitFor(probe: () => Promise<boolean>, label: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${label}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
