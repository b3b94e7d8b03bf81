/**
 * What a node certificate rotation's two jobs (node_cert_rotate, node_cert_retire) do when things
 * go other than planned, on SQLite and PostgreSQL, with the real admin API in process and the job
 * worker driven by hand (runOnce / sweep over a ManualClock); no node process: the node's side
 * (the config pull that delivers, the ack) is called as the node API would call it.
 *
 * - A pending rotate job cancelled: the rotation reads "cancelled", a new rotation is accepted,
 *   and supersedes it: retrying the cancelled job fails it for good without issuing anything.
 * - A rotate job left running by a CP that died: the sweep reclaims it once its lease expired and
 *   it completes exactly once (one new server and one new client certificate, one package); out
 *   of attempts it fails, and the node keeps its certificates.
 * - The ack: only over the new client certificate and naming the new certificates' fingerprints,
 *   anything else is refused and changes nothing; a repeated ack answers the same. The retire job
 *   is due at ack + grace, not before, then revokes the old certificates (superseded) and
 *   completes the rotation.
 * - A node still onboarding cannot be rotated; a package reissued while a rotation is being
 *   delivered supersedes it (the sealed credentials are never handed out).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createPkiJobWorker, INTERRUPTED_ERROR, type JobWorker } from "../../src/cp/jobs/index.js";
import type { Actor } from "../../src/cp/services/context.js";
import type { CallingNode } from "../../src/cp/services/nodes/identity.js";
import { createNode } from "../../src/cp/services/nodes/lifecycle.js";
import { ackCredentials, credentialsForPull, pemFingerprint } from "../../src/cp/services/nodes/rotation.js";
import { JOB_LEASE_MS } from "../../src/shared/config/defaults.js";
import { AuthNexusError } from "../../src/shared/errors/index.js";
import { type AdminApp, buildAdminApp, type CallResult, call, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { runJobToCompletion } from "../helpers/nodes.js";

type Obj = Record<string, any>;
const V1 = "/admin/v1";
const ACTOR: Actor = { agentId: null, username: "rotation-jobs-test", ip: null, requestId: null };

function json(res: CallResult, status: number, label: string): Obj {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  return res.json as Obj;
}

function refused(res: CallResult, status: number, code: string, label: string): Obj {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  assert.equal((res.json as Obj | undefined)?.error, code, `${label}: ${res.text.slice(0, 400)}`);
  return res.json as Obj;
}

async function rejectsWith(promise: Promise<unknown>, code: string, label: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof AuthNexusError, `${label}: ${String(error)}`);
    assert.equal(error.code, code, `${label}: ${error.message}`);
    return true;
  });
}

for (const variant of dbVariants()) {
  describe(`node rotation jobs on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    let token: string;
    let worker: JobWorker;
    let counter = 0;

    const db = () => cp.ctx.controlDb;
    /** A node whose onboarding job has run: it has its server and client certificates. */
    const provisioned = async () => {
      counter += 1;
      const node = await createNode(cp.ctx, ACTOR, {
        name: `rot-jobs-${counter}`,
        host: `rot-${counter}.example.test`,
        businessPort: 8443,
      });
      await runJobToCompletion(cp.ctx, node.job_id);
      return node.id;
    };
    const rotate = (nodeId: string) => call(app, "POST", `${V1}/nodes/${nodeId}/certs/rotate`, { token, body: {} });
    const rotation = async (nodeId: string, id: string) =>
      json(await call(app, "GET", `${V1}/nodes/${nodeId}/certs/rotations/${id}`, { token }), 200, `rotation ${id}`);
    const jobRow = (id: string) => db().selectFrom("pki_jobs").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const nodeRow = (id: string) => db().selectFrom("nodes").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const certsOf = (nodeId: string) =>
      db()
        .selectFrom("certificates")
        .select(["id", "leaf_profile", "status", "revocation_reason", "cert_pem"])
        .where("owner_id", "=", nodeId)
        .orderBy("id")
        .execute();
    const packagesOf = (nodeId: string) => db().selectFrom("deploy_packages").select("id").where("node_id", "=", nodeId).execute();
    /** The node API's view of the calling node, as authenticateNode returns it for this certificate. */
    const callingNode = async (nodeId: string, certificateId: string): Promise<CallingNode> => {
      const row = await nodeRow(nodeId);
      return { id: nodeId, status: row.status, certificateId, createdAt: row.created_at, pendingRotationId: row.pending_rotation_id };
    };
    const fingerprint = async (certificateId: string) =>
      pemFingerprint(
        (await db().selectFrom("certificates").select("cert_pem").where("id", "=", certificateId).executeTakeFirstOrThrow()).cert_pem,
      );
    /** Runs every due job, so each test starts from an empty queue. */
    const drain = async () => {
      while ((await worker.runOnce()) !== null) {
        // run what is due
      }
    };
    /** A node with a rotation whose issue job ran: its new credentials wait for the node's pull. */
    const issuedRotation = async () => {
      const nodeId = await provisioned();
      const queued = json(await rotate(nodeId), 202, "rotate");
      assert.equal((await worker.runOnce())?.outcome, "succeeded");
      const view = await rotation(nodeId, queued.id);
      assert.equal(view.status, "delivering");
      return { nodeId, view };
    };

    before(async () => {
      cp = await createTestCp(variant, "rotjobs");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      token = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      worker = createPkiJobWorker(cp.ctx);
    });
    after(async () => {
      await cp?.close();
      await variant.cleanup();
    });

    test("a cancelled rotate job: the rotation is cancelled, a new one is accepted, and the old job retried fails for good issuing nothing", async () => {
      await drain();
      const nodeId = await provisioned();
      const certsBefore = await certsOf(nodeId);
      const first = json(await rotate(nodeId), 202, "rotate");
      assert.equal(first.status, "issuing");
      assert.equal(first.rotation_url, `/admin/v1/nodes/${nodeId}/certs/rotations/${first.id}`);
      const jobId = first.jobs[0].id as string;
      assert.equal(first.jobs[0].kind, "node_cert_rotate");
      refused(await rotate(nodeId), 409, "NODE_ROTATION_IN_PROGRESS", "a second rotate while the first is issuing");

      json(await call(app, "POST", `${V1}/pki/jobs/${jobId}/cancel`, { token, body: {} }), 200, "cancel");
      const cancelled = await rotation(nodeId, first.id);
      assert.equal(cancelled.status, "cancelled");
      assert.equal(cancelled.jobs[0].status, "cancelled");
      assert.equal(await worker.runOnce(), null, "a cancelled job is not run");

      cp.clock.advance(1_000);
      const second = json(await rotate(nodeId), 202, "a new rotate once the first is cancelled");
      assert.notEqual(second.id, first.id);
      const list = json(await call(app, "GET", `${V1}/nodes/${nodeId}/certs/rotations`, { token }), 200, "list");
      assert.deepEqual(
        list.items.map((r: Obj) => [r.id, r.status]),
        [
          [second.id, "issuing"],
          [first.id, "superseded"],
        ],
        "newest first; the cancelled one is superseded by the new one",
      );

      // The older job, retried, must not issue credentials over the newer rotation: whichever runs
      // first, the newer rotation's certificates are the only ones issued.
      cp.clock.advance(1_000);
      json(await call(app, "POST", `${V1}/pki/jobs/${jobId}/retry`, { token, body: {} }), 200, "retry the cancelled job");
      assert.equal((await rotation(nodeId, first.id)).status, "superseded", "retrying its job does not bring it back");
      const secondJobId = second.jobs[0].id as string;
      const reports = [await worker.runOnce(), await worker.runOnce()];
      assert.equal(await worker.runOnce(), null);
      assert.deepEqual(reports.find((r) => r?.jobId === secondJobId)?.outcome, "succeeded");
      assert.deepEqual(reports.find((r) => r?.jobId === jobId)?.outcome, "failed");
      const failed = await jobRow(jobId);
      assert.equal(failed.status, "failed");
      assert.match(failed.last_error ?? "", /the rotation was superseded/);
      assert.equal(failed.attempts, 1, "failed at once, not retried");
      const firstView = await rotation(nodeId, first.id);
      assert.equal(firstView.status, "superseded");
      assert.equal(firstView.issued_at, null);
      assert.equal(firstView.new_client_cert_id, null);
      const secondView = await rotation(nodeId, second.id);
      assert.equal(secondView.status, "delivering");
      const certs = await certsOf(nodeId);
      assert.equal(certs.length, certsBefore.length + 2, "only the newer rotation's two certificates");
      assert.deepEqual(
        certs
          .filter((c) => !certsBefore.some((b) => b.id === c.id))
          .map((c) => c.id)
          .sort(),
        [secondView.new_client_cert_id, secondView.new_server_cert_id].sort(),
      );
      assert.equal((await packagesOf(nodeId)).length, 2, "one package for the newer rotation only");
      const node = await nodeRow(nodeId);
      assert.equal(node.pending_rotation_id, second.id);
      assert.equal(node.client_cert_id, secondView.new_client_cert_id);
    });

    describe("a rotate job interrupted by a CP restart", () => {
      test("is reclaimed by the sweep once its lease expired, then completes exactly once", async () => {
        await drain();
        const nodeId = await provisioned();
        const before = await nodeRow(nodeId);
        const queued = json(await rotate(nodeId), 202, "rotate");
        const jobId = queued.jobs[0].id as string;
        const now = cp.clock.now();
        // What a CP killed mid-job leaves behind: the job running under its lease, nothing committed.
        await db()
          .updateTable("pki_jobs")
          .set({ status: "running", claimed_by: "cp_dead", attempts: 1, started_at: now, lease_expires_at: now + JOB_LEASE_MS })
          .where("id", "=", jobId)
          .execute();
        const restarted = createPkiJobWorker({ ...cp.ctx, instanceId: "cp_restarted" });
        assert.equal(await restarted.sweep(), 0, "the lease is still live");
        assert.equal(await restarted.runOnce(), null);
        assert.equal((await rotation(nodeId, queued.id)).status, "issuing");

        cp.clock.advance(JOB_LEASE_MS + 1);
        assert.equal(await restarted.sweep(), 1);
        const reclaimed = await jobRow(jobId);
        assert.equal(reclaimed.status, "pending");
        assert.equal(reclaimed.last_error, INTERRUPTED_ERROR);
        assert.equal((await rotation(nodeId, queued.id)).status, "issuing");

        assert.deepEqual(await restarted.runOnce(), { jobId, kind: "node_cert_rotate", outcome: "succeeded" });
        assert.equal(await restarted.runOnce(), null, "nothing else is due");
        assert.equal(await restarted.sweep(), 0);
        const done = await jobRow(jobId);
        assert.equal(done.status, "succeeded");
        assert.equal(done.attempts, 2);

        const view = await rotation(nodeId, queued.id);
        assert.equal(view.status, "delivering");
        const certs = await certsOf(nodeId);
        assert.equal(certs.length, 4, "onboarding's two and exactly one new server and one new client certificate");
        const fresh = certs.filter((c) => c.id !== before.server_cert_id && c.id !== before.client_cert_id);
        assert.deepEqual(fresh.map((c) => c.leaf_profile).sort(), ["node_client", "node_server"]);
        assert.deepEqual(fresh.map((c) => c.id).sort(), [view.new_client_cert_id, view.new_server_cert_id].sort());
        assert.equal((await packagesOf(nodeId)).length, 2, "onboarding's package and exactly one more");
        const node = await nodeRow(nodeId);
        assert.equal(node.client_cert_id, view.new_client_cert_id);
        assert.equal(node.server_cert_id, view.new_server_cert_id);
        assert.equal(node.previous_client_cert_id, before.client_cert_id, "the old client certificate stays accepted until the ack");
        assert.equal(node.pending_rotation_id, queued.id);
        assert.equal(view.old_client_cert_id, before.client_cert_id);
        assert.equal(view.old_server_cert_id, before.server_cert_id);
        assert.ok(
          certs.every((c) => c.status === "valid"),
          "nothing revoked before the ack and the grace",
        );
      });

      test("out of attempts it fails: the rotation reads failed with the reason, the node keeps its certificates, and a new rotation is accepted", async () => {
        await drain();
        const nodeId = await provisioned();
        const before = await nodeRow(nodeId);
        const certsBefore = await certsOf(nodeId);
        const queued = json(await rotate(nodeId), 202, "rotate");
        const jobId = queued.jobs[0].id as string;
        const now = cp.clock.now();
        await db()
          .updateTable("pki_jobs")
          .set({ status: "running", claimed_by: "cp_dead", attempts: 5, max_attempts: 5, started_at: now, lease_expires_at: now - 1 })
          .where("id", "=", jobId)
          .execute();
        assert.equal(await createPkiJobWorker(cp.ctx).sweep(), 1);
        const view = await rotation(nodeId, queued.id);
        assert.equal(view.status, "failed");
        assert.equal(view.jobs[0].status, "failed");
        assert.equal(view.jobs[0].last_error, INTERRUPTED_ERROR);
        assert.equal(await worker.runOnce(), null, "a failed job is not run again");
        assert.deepEqual(await certsOf(nodeId), certsBefore);
        const node = await nodeRow(nodeId);
        assert.equal(node.client_cert_id, before.client_cert_id);
        assert.equal(node.pending_rotation_id, null);

        cp.clock.advance(1_000);
        const next = json(await rotate(nodeId), 202, "a failed rotation does not block the next");
        assert.equal(next.status, "issuing");
        await drain();
      });
    });

    describe("the ack and the retire job", () => {
      test("the retire job is due at ack + grace, not before; it revokes the old certificates (superseded) and completes the rotation", async () => {
        await drain();
        const { nodeId, view } = await issuedRotation();
        const node = await callingNode(nodeId, view.new_client_cert_id);
        assert.equal(node.pendingRotationId, view.id);
        // The node's config pull carries the credentials and records the delivery.
        const delivery = await credentialsForPull(cp.ctx, node);
        assert.equal(delivery?.rotation_id, view.id);
        assert.equal(pemFingerprint(delivery?.client_cert_pem ?? ""), await fingerprint(view.new_client_cert_id));
        assert.equal((await rotation(nodeId, view.id)).status, "delivered");

        cp.clock.advance(3_000);
        const ackedAt = cp.clock.now();
        const ack = {
          server_cert_sha256: await fingerprint(view.new_server_cert_id),
          client_cert_sha256: await fingerprint(view.new_client_cert_id),
        };
        const answer = await ackCredentials(cp.ctx, node, view.id, ack);
        const retireAt = ackedAt + cp.ctx.pki.rotationGraceMs;
        assert.deepEqual(answer, { rotation_id: view.id, acked_at: ackedAt, previous_client_cert_retire_at: retireAt });

        const applied = await rotation(nodeId, view.id);
        assert.equal(applied.status, "applied");
        assert.equal(applied.acked_at, ackedAt);
        assert.equal(applied.retire_at, retireAt);
        assert.deepEqual(
          applied.jobs.map((j: Obj) => [j.kind, j.status]),
          [
            ["node_cert_rotate", "succeeded"],
            ["node_cert_retire", "pending"],
          ],
        );
        const retireJobId = applied.jobs[1].id as string;
        assert.equal((await jobRow(retireJobId)).run_after, retireAt);
        const afterAck = await nodeRow(nodeId);
        assert.equal(afterAck.pending_rotation_id, null);
        assert.equal(afterAck.previous_client_cert_id, view.old_client_cert_id);
        assert.equal(afterAck.previous_client_cert_retire_at, retireAt);
        assert.equal(
          await credentialsForPull(cp.ctx, await callingNode(nodeId, view.new_client_cert_id)),
          undefined,
          "nothing left to deliver",
        );
        const sealed = await db()
          .selectFrom("node_cert_rotations")
          .select("credentials_ciphertext")
          .where("id", "=", view.id)
          .executeTakeFirstOrThrow();
        assert.equal(sealed.credentials_ciphertext, null, "the sealed keys are dropped once applied");

        // A repeated ack (the node's answer got lost) answers the same, later too, and queues nothing more.
        cp.clock.advance(5_000);
        assert.deepEqual(await ackCredentials(cp.ctx, node, view.id, ack), answer);
        const retireJobs = await db()
          .selectFrom("pki_jobs")
          .select("id")
          .where("kind", "=", "node_cert_retire")
          .where("target_id", "=", nodeId)
          .execute();
        assert.deepEqual(retireJobs, [{ id: retireJobId }]);

        // Not due a millisecond before the grace ends.
        cp.clock.set(retireAt - 1);
        assert.equal(await worker.runOnce(), null, "the retire job waits for the grace period");
        for (const c of await certsOf(nodeId)) assert.equal(c.status, "valid", `${c.id} still valid during the grace`);
        assert.equal((await rotation(nodeId, view.id)).status, "applied");

        cp.clock.set(retireAt);
        assert.deepEqual(await worker.runOnce(), { jobId: retireJobId, kind: "node_cert_retire", outcome: "succeeded" });
        const certs = await certsOf(nodeId);
        for (const c of certs) {
          const old = c.id === view.old_server_cert_id || c.id === view.old_client_cert_id;
          assert.equal(c.status, old ? "revoked" : "valid", c.id);
          assert.equal(c.revocation_reason, old ? "superseded" : null, c.id);
        }
        const completed = await rotation(nodeId, view.id);
        assert.equal(completed.status, "completed");
        assert.equal(completed.completed_at, retireAt);
        assert.equal(completed.jobs[1].status, "succeeded");
        const finalNode = await nodeRow(nodeId);
        assert.equal(finalNode.previous_client_cert_id, null);
        assert.equal(finalNode.previous_client_cert_retire_at, null);
        assert.equal(finalNode.client_cert_id, view.new_client_cert_id);
        const audit = await db()
          .selectFrom("pki_audit_logs")
          .select(["event", "certificate_id"])
          .where("job_id", "=", retireJobId)
          .where("event", "=", "cert.revoked")
          .execute();
        assert.deepEqual(audit.map((a) => a.certificate_id).sort(), [view.old_client_cert_id, view.old_server_cert_id].sort());

        // An ack after completion still answers the same.
        assert.deepEqual(await ackCredentials(cp.ctx, node, view.id, ack), answer);
      });

      test("an ack over the old client certificate, with wrong fingerprints or for another rotation is refused and changes nothing", async () => {
        await drain();
        const { nodeId, view } = await issuedRotation();
        const good = {
          server_cert_sha256: await fingerprint(view.new_server_cert_id),
          client_cert_sha256: await fingerprint(view.new_client_cert_id),
        };
        const overNew = await callingNode(nodeId, view.new_client_cert_id);
        const overOld = await callingNode(nodeId, view.old_client_cert_id);
        const before = await snapshotDb(cp.ctx);
        await rejectsWith(ackCredentials(cp.ctx, overOld, view.id, good), "CREDENTIALS_ACK_REFUSED", "over the old certificate");
        await rejectsWith(
          ackCredentials(cp.ctx, overNew, view.id, { ...good, server_cert_sha256: await fingerprint(view.old_server_cert_id) }),
          "CREDENTIALS_ACK_REFUSED",
          "naming the old server certificate",
        );
        await rejectsWith(
          ackCredentials(cp.ctx, overNew, view.id, { ...good, client_cert_sha256: "0".repeat(64) }),
          "CREDENTIALS_ACK_REFUSED",
          "with a wrong client fingerprint",
        );
        await rejectsWith(
          ackCredentials(cp.ctx, overNew, view.id, {
            server_cert_sha256: good.client_cert_sha256,
            client_cert_sha256: good.server_cert_sha256,
          }),
          "CREDENTIALS_ACK_REFUSED",
          "with the fingerprints swapped",
        );
        await rejectsWith(ackCredentials(cp.ctx, overNew, "rot_unknown", good), "CREDENTIALS_ACK_REFUSED", "for an unknown rotation");
        assert.deepEqual(await snapshotDb(cp.ctx), before, "no refused ack changed anything");
        assert.equal((await rotation(nodeId, view.id)).status, "delivering");
        assert.equal(await worker.runOnce(), null, "no retire job was queued");

        // The right ack is still accepted afterwards.
        const answer = await ackCredentials(cp.ctx, overNew, view.id, good);
        assert.equal(answer.rotation_id, view.id);
        assert.equal((await rotation(nodeId, view.id)).status, "applied");
      });
    });

    describe("refusals and reissue", () => {
      test("a node still onboarding cannot be rotated (409 NODE_NOT_PROVISIONED) and nothing is queued", async () => {
        await drain();
        counter += 1;
        const node = await createNode(cp.ctx, ACTOR, {
          name: `rot-new-${counter}`,
          host: `new-${counter}.example.test`,
          businessPort: 8443,
        });
        json(await call(app, "GET", `${V1}/nodes/${node.id}`, { token }), 200, "touch the session before the snapshot");
        const before = await snapshotDb(cp.ctx);
        const body = refused(await rotate(node.id), 409, "NODE_NOT_PROVISIONED", "rotate while onboarding");
        assert.match(body.message, new RegExp(node.job_id));
        const after = await snapshotDb(cp.ctx);
        // The refusal is audited in the agent audit log (a log table); nothing else changes.
        assert.deepEqual(after, before);
        refused(await rotate("nod_does_not_exist"), 404, "NOT_FOUND", "rotate of an unknown node");
        await runJobToCompletion(cp.ctx, node.job_id);
        json(await rotate(node.id), 202, "rotate once onboarded");
        await drain();
      });

      test("a package reissued while the rotation is delivering supersedes it: its credentials are never handed out", async () => {
        await drain();
        const { nodeId, view } = await issuedRotation();
        json(await call(app, "POST", `${V1}/nodes/${nodeId}/reissue-package`, { token, body: {} }), 202, "reissue");
        const superseded = await rotation(nodeId, view.id);
        assert.equal(superseded.status, "superseded");
        assert.equal(superseded.superseded_at, cp.clock.now());
        const node = await nodeRow(nodeId);
        assert.equal(node.pending_rotation_id, null);
        const row = await db()
          .selectFrom("node_cert_rotations")
          .select("credentials_ciphertext")
          .where("id", "=", view.id)
          .executeTakeFirstOrThrow();
        assert.equal(row.credentials_ciphertext, null, "the sealed keys are dropped");
        const overNew = { ...(await callingNode(nodeId, view.new_client_cert_id)), pendingRotationId: view.id };
        assert.equal(await credentialsForPull(cp.ctx, overNew), undefined, "not delivered even to a caller still naming it");
        await rejectsWith(
          ackCredentials(cp.ctx, overNew, view.id, {
            server_cert_sha256: await fingerprint(view.new_server_cert_id),
            client_cert_sha256: await fingerprint(view.new_client_cert_id),
          }),
          "CREDENTIALS_ACK_REFUSED",
          "an ack of a superseded rotation",
        );
        // The reissue's onboarding job runs; only then can the node be rotated again.
        refused(await rotate(nodeId), 409, "NODE_NOT_PROVISIONED", "rotate while the reissue job waits");
        await drain();
        json(await rotate(nodeId), 202, "rotate after the reissue");
        await drain();
      });

      test("a package reissued while the rotate job is still pending: the job then fails for good and issues nothing", async () => {
        await drain();
        const nodeId = await provisioned();
        const queued = json(await rotate(nodeId), 202, "rotate");
        const jobId = queued.jobs[0].id as string;
        json(await call(app, "POST", `${V1}/nodes/${nodeId}/reissue-package`, { token, body: {} }), 202, "reissue");
        assert.equal((await rotation(nodeId, queued.id)).status, "superseded");
        const reports = [];
        for (let report = await worker.runOnce(); report !== null; report = await worker.runOnce()) reports.push(report);
        const rotateReport = reports.find((r) => r.jobId === jobId);
        assert.equal(rotateReport?.outcome, "failed");
        assert.match((await jobRow(jobId)).last_error ?? "", /superseded/);
        const view = await rotation(nodeId, queued.id);
        assert.equal(view.status, "superseded");
        assert.equal(view.new_client_cert_id, null, "nothing issued for the superseded rotation");
        assert.equal((await nodeRow(nodeId)).pending_rotation_id, null);
      });
    });
  });
}
