/**
 * The PKI audit log and the expiry view, on SQLite and PostgreSQL through the real migrator and
 * the real admin API: a node's onboarding (job queued, claimed, succeeded; two certificates
 * issued under the job), an application client certificate, a revocation, a job that fails,
 * is retried, is reclaimed from a dead holder and is cancelled, each recorded with the change
 * it belongs to and logged under [PKI]; GET /pki/audit-logs paginated and filtered by time
 * (ManualClock), event, certificate, serial and job; GET /pki/expiring and the /pki/certs
 * profile filter. No row or log line carries key material.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createJobWorker, createPkiJobWorker } from "../../src/cp/jobs/index.js";
import { JOB_LEASE_MS, LEAF_VALIDITY_DAYS } from "../../src/shared/config/defaults.js";
import { type AdminApp, buildAdminApp, type CallResult, call, loginAs } from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

type Obj = Record<string, unknown>;
interface AuditRow {
  id: string;
  created_at: number;
  event: string;
  actor: string;
  certificate_id: string | null;
  serial_hex: string | null;
  profile: string | null;
  job_id: string | null;
  detail: Obj | null;
}
interface AuditPage {
  items: AuditRow[];
  page: number;
  page_size: number;
  total: number;
}

const V1 = "/admin/v1";
const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

function json(res: CallResult, status: number, label: string): Obj {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  return res.json as Obj;
}

/**
 * What a job's audit rows say about its states, sorted: rows written in the same millisecond
 * (a claim and the failure that follows on a frozen clock) have no defined order between them.
 */
const transitions = (rows: AuditRow[]) =>
  rows
    .filter((r) => r.event.startsWith("job."))
    .map((r) => `${r.event}:${r.detail?.from ?? "-"}>${r.detail?.to ?? "-"}`)
    .sort();

for (const variant of dbVariants()) {
  describe(`PKI audit log and expiry view on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    let root: string;
    let rootId: string;

    const get = async (path: string) => json(await call(app, "GET", `${V1}${path}`, { token: root }), 200, path);
    const audit = async (query: string) => (await get(`/pki/audit-logs?${query}`)) as unknown as AuditPage;
    /** The access token lives 15 minutes of the manual clock: log in again after moving it. */
    const advance = async (ms: number) => {
      cp.clock.advance(ms);
      root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
    };
    const newApp = async (name: string) =>
      json(await call(app, "POST", `${V1}/applications`, { token: root, body: { name } }), 201, name).app_id as string;
    const issueClient = async (appId: string, validityDays: number) =>
      json(
        await call(app, "POST", `${V1}/applications/${appId}/client-certs`, { token: root, body: { validity_days: validityDays } }),
        201,
        `issue ${validityDays}d`,
      );
    const drain = async () => {
      const worker = createPkiJobWorker(cp.ctx);
      while ((await worker.runOnce()) !== null) {
        // run what is due
      }
    };

    before(async () => {
      cp = await createTestCp(variant, "pkiaudit");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      rootId = (await cp.ctx.controlDb.selectFrom("agents").select("id").where("username", "=", ROOT_USERNAME).executeTakeFirstOrThrow())
        .id;
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });

    test("a node's onboarding: job queued, claimed and succeeded, its two certificates issued under the job", async () => {
      const node = json(
        await call(app, "POST", `${V1}/nodes`, {
          token: root,
          body: { name: "audit-node", host: "audit.example.test", business_port: 8443 },
        }),
        201,
        "node",
      );
      const jobId = node.job_id as string;
      await drain();

      const rows = (await audit(`job_id=${jobId}`)).items;
      assert.deepEqual(transitions(rows), [
        "job.queued:->pending",
        "job.state_changed:pending>running",
        "job.state_changed:running>succeeded",
      ]);
      const queued = rows.find((r) => r.event === "job.queued");
      assert.equal(queued?.actor, rootId, "the agent that created the node queued the job");
      assert.deepEqual(queued?.detail, { kind: "node_onboard", from: null, to: "pending", target_type: "node", target_id: node.id });
      assert.equal(rows.find((r) => r.event === "job.state_changed")?.actor, "system", "the worker acts for the system");

      const issued = rows.filter((r) => r.event === "cert.issued");
      assert.deepEqual(issued.map((r) => r.profile).sort(), ["node_client", "node_server"]);
      for (const row of issued) {
        const cert = await get(`/pki/certs/${row.certificate_id}`);
        assert.equal(row.serial_hex, cert.serial, "the row names the certificate's serial");
        assert.equal(cert.owner_id, node.id);
      }
      assert.ok(
        rows.some((r) => r.event === "package.built"),
        "the package the job built is in the same trail",
      );

      const pkiLines = cp.logLines.filter((l) => l.includes('"category":"PKI"'));
      for (const msg of ["job.started", "job.succeeded"])
        assert.ok(
          pkiLines.some((l) => l.includes(`"msg":"${msg}"`) && l.includes(jobId)),
          msg,
        );
      assert.ok(
        pkiLines.some((l) => l.includes('"msg":"cert.issued"') && l.includes(node.id as string)),
        "cert.issued",
      );
    });

    test("an application client certificate and its revocation: one row each, by the admin, logged under [PKI]", async () => {
      const appId = await newApp("Audit Game");
      const issued = await issueClient(appId, 30);
      const certId = issued.certificate_id as string;
      json(await call(app, "POST", `${V1}/pki/certs/${certId}/revoke`, { token: root, body: { reason: "keyCompromise" } }), 200, "revoke");

      const rows = (await audit(`certificate_id=${certId}`)).items;
      assert.deepEqual(rows.map((r) => [r.event, r.actor, r.profile, r.serial_hex, r.job_id]).sort(), [
        ["cert.issued", rootId, "app_client", issued.serial, null],
        ["cert.revoked", rootId, "app_client", issued.serial, null],
      ]);
      assert.deepEqual(rows.find((r) => r.event === "cert.revoked")?.detail, { reason: "keyCompromise" });
      const upper = (issued.serial as string).toUpperCase().replace(/(..)(?!$)/g, "$1:");
      assert.equal((await audit(`serial=${upper}`)).total, 2, "openssl's serial notation finds the same rows");

      const revokedLine = cp.logLines.find((l) => l.includes('"msg":"cert.revoked"') && l.includes(certId));
      assert.ok(revokedLine?.includes('"category":"PKI"'), "cert.revoked is a [PKI] line");
      assert.ok(revokedLine?.includes('"reason":"keyCompromise"'));

      const privateKey = issued.private_key_pem as string;
      const everything = await cp.ctx.controlDb.selectFrom("pki_audit_logs").selectAll().execute();
      assert.ok(!JSON.stringify(everything).includes("PRIVATE KEY"), "no key material in any audit row");
      assert.ok(!cp.logLines.some((l) => l.includes("PRIVATE KEY") || l.includes(privateKey.slice(40, 80))), "nor in any log line");
    });

    test("a failing job: every state change recorded until it fails; retried, reclaimed from a dead holder, cancelled", async () => {
      await drain();
      const node = json(
        await call(app, "POST", `${V1}/nodes`, {
          token: root,
          body: { name: "doomed-node", host: "doomed.example.test", business_port: 8443 },
        }),
        201,
        "node",
      );
      const jobId = node.job_id as string;
      await cp.ctx.controlDb.updateTable("pki_jobs").set({ max_attempts: 2 }).where("id", "=", jobId).execute();
      const failing = createJobWorker(cp.ctx, {
        node_onboard: async () => {
          throw new Error("tcp_server_ca unreachable");
        },
      });
      assert.equal((await failing.runOnce())?.outcome, "retrying");
      cp.clock.advance(60_000);
      assert.equal((await failing.runOnce())?.outcome, "failed");
      const failedRow = (await audit(`job_id=${jobId}&event=job.state_changed`)).items.find((r) => r.detail?.to === "failed");
      assert.deepEqual(failedRow?.detail, {
        kind: "node_onboard",
        from: "running",
        to: "failed",
        attempt: 2,
        error: "tcp_server_ca unreachable",
        permanent: false,
      });

      cp.clock.advance(1);
      json(await call(app, "POST", `${V1}/pki/jobs/${jobId}/retry`, { token: root, body: {} }), 200, "retry");
      // A CP claims it and dies: the sweep after the lease gives it back. (No lease renewal meanwhile.)
      const dying = createJobWorker(cp.ctx, { node_onboard: () => new Promise(() => {}) }, { leaseRenewMs: 3_600_000 });
      void dying.runOnce();
      await waitForStatus(cp, jobId, "running");
      cp.clock.advance(JOB_LEASE_MS + 1);
      assert.equal(await createPkiJobWorker(cp.ctx).sweep(), 1);
      await advance(1);
      json(await call(app, "POST", `${V1}/pki/jobs/${jobId}/cancel`, { token: root, body: {} }), 200, "cancel");

      const rows = (await audit(`job_id=${jobId}`)).items;
      assert.deepEqual(transitions(rows), [
        "job.cancelled:pending>cancelled",
        "job.queued:->pending",
        "job.retried:failed>pending",
        "job.state_changed:pending>running",
        "job.state_changed:pending>running",
        "job.state_changed:pending>running",
        "job.state_changed:running>failed",
        "job.state_changed:running>pending",
        "job.state_changed:running>pending",
      ]);
      assert.equal(rows[0]?.event, "job.cancelled", "the cancel, a millisecond later than the rest, is the newest");
      assert.equal(rows.find((r) => r.event === "job.retried")?.actor, rootId);
      assert.ok(
        rows.some((r) => r.detail?.reason === "lease_expired" && r.detail?.to === "pending"),
        "the reclaim says why",
      );
      assert.equal((await get(`/pki/jobs/${jobId}`)).status, "cancelled", "the log agrees with the job");
      assert.ok(cp.logLines.some((l) => l.includes('"msg":"job.reclaimed"') && l.includes(jobId) && l.includes('"category":"PKI"')));
    });

    test("GET /pki/audit-logs: newest first, pages that do not overlap, from/to on the injected clock, filters and refusals", async () => {
      await advance(HOUR_MS);
      const start = cp.clock.now();
      const appId = await newApp("Windowed Game");
      const first = await issueClient(appId, 40);
      await advance(HOUR_MS);
      const middle = cp.clock.now();
      const second = await issueClient(appId, 50);
      await advance(HOUR_MS);
      const third = await issueClient(appId, 60);

      const windowed = await audit(`from=${start}&to=${middle}&event=cert.issued`);
      assert.deepEqual(
        windowed.items.map((r) => r.certificate_id),
        [second.certificate_id, first.certificate_id],
      );
      const iso = await audit(`from=${new Date(middle + 1).toISOString()}&event=cert.issued`);
      assert.deepEqual(
        iso.items.map((r) => r.certificate_id),
        [third.certificate_id],
      );

      const all = await audit("page_size=200");
      const times = all.items.map((r) => r.created_at);
      assert.deepEqual(
        times,
        [...times].sort((a, b) => b - a),
        "newest first",
      );
      const pages = [await audit("page=1&page_size=3"), await audit("page=2&page_size=3")];
      assert.equal(pages[0]?.total, all.total);
      const paged = pages.flatMap((p) => p.items.map((r) => r.id));
      assert.equal(new Set(paged).size, 6, "pages do not overlap");
      assert.deepEqual(
        paged,
        all.items.slice(0, 6).map((r) => r.id),
      );

      for (const query of [
        "from=yesterday",
        `from=${middle}&to=${start}`,
        "event=DROP%20TABLE",
        "job_id=bad%20id",
        "serial=xyz",
        "page_size=0",
      ]) {
        const res = await call(app, "GET", `${V1}/pki/audit-logs?${query}`, { token: root });
        assert.equal(res.status, 400, `${query}: ${res.text}`);
        assert.equal((res.json as Obj).error, "VALIDATION_FAILED", query);
      }
      assert.equal((await call(app, "GET", `${V1}/pki/audit-logs`)).status, 401, "an admin token is required");
    });

    test("GET /pki/expiring: active certificates within the window, soonest first, with days left; /pki/certs?profile", async () => {
      const appId = await newApp("Expiring Game");
      const soon = await issueClient(appId, 5);
      const later = await issueClient(appId, 25);
      const outside = await issueClient(appId, 45);
      const revoked = await issueClient(appId, 3);
      json(await call(app, "POST", `${V1}/pki/certs/${revoked.certificate_id}/revoke`, { token: root, body: {} }), 200, "revoke");
      await advance(HOUR_MS);

      const ours = (page: Obj) => (page.items as Obj[]).filter((i) => i.owner_id === appId);
      const byDefault = await get("/pki/expiring");
      assert.deepEqual(
        ours(byDefault).map((i) => i.id),
        [soon.certificate_id, later.certificate_id],
        "30 days by default; revoked and out-of-window ones left out",
      );
      const first = ours(byDefault)[0] as Obj;
      assert.equal(first.serial, soon.serial);
      assert.equal(first.profile, "app_client");
      assert.equal(first.owner_type, "application");
      assert.equal(first.not_after, soon.not_after);
      assert.equal(first.days_left, Math.floor(((soon.not_after as number) - cp.clock.now()) / DAY_MS));
      const notAfters = (byDefault.items as Obj[]).map((i) => i.not_after as number);
      assert.deepEqual(
        notAfters,
        [...notAfters].sort((a, b) => a - b),
        "soonest first",
      );

      assert.deepEqual(
        ours(await get("/pki/expiring?days=50")).map((i) => i.id),
        [soon.certificate_id, later.certificate_id, outside.certificate_id],
      );
      const wide = await get(`/pki/expiring?days=${LEAF_VALIDITY_DAYS + 1}`);
      assert.ok(
        (wide.items as Obj[]).some((i) => i.profile === "cp_server"),
        "the widest window holds every active certificate",
      );

      await advance(6 * DAY_MS);
      assert.deepEqual(
        ours(await get("/pki/expiring")).map((i) => i.id),
        [later.certificate_id],
        "an expired certificate is no longer expiring",
      );

      for (const days of ["0", "3651", "-1", "ten", "1.5"]) {
        const res = await call(app, "GET", `${V1}/pki/expiring?days=${days}`, { token: root });
        assert.equal(res.status, 400, `days=${days}: ${res.text}`);
        assert.equal((res.json as Obj).error, "VALIDATION_FAILED");
      }

      const clients = await get(`/pki/certs?profile=app_client&owner_type=application&owner_id=${appId}&status=valid`);
      assert.deepEqual((clients.items as Obj[]).map((i) => i.id).sort(), [later.certificate_id, outside.certificate_id].sort());
      const servers = await get("/pki/certs?profile=cp_server");
      assert.ok((servers.items as Obj[]).length > 0 && (servers.items as Obj[]).every((i) => i.profile === "cp_server"));
      assert.equal((await call(app, "GET", `${V1}/pki/certs?profile=root_ca`, { token: root })).status, 400);
    });
  });
}

async function waitForStatus(cp: TestCp, jobId: string, status: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const row = await cp.ctx.controlDb.selectFrom("pki_jobs").select("status").where("id", "=", jobId).executeTakeFirstOrThrow();
    if (row.status === status) return;
    if (Date.now() > deadline) throw new Error(`job ${jobId} never became ${status}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
