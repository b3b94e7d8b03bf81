/**
 * The `authnexus pki` reporting and job commands against a real `serve-cp` child process (the
 * built CLI: run `npm run build` first): `pki expiring`, `pki certs --profile`, `pki jobs
 * list|show|retry|cancel` and `pki audit`, each as a table (no header row when piped, so the
 * first column is the id) and as `--json` parsed here, and failures that exit 1 naming the
 * server's error code. SQLite only: the endpoints are covered on both databases by
 * test/integration/pki-audit.test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import { type CpProcess, runCli, startCpProcess } from "../helpers/cp-process.js";
import { waitFor } from "../helpers/node-agent.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

type Obj = Record<string, any>;
const PASSWORD = "correct horse battery staple";
const DAY_MS = 86_400_000;

describe("authnexus pki expiring, jobs and audit", () => {
  let dataDir: TempDir;
  let cp: CpProcess;
  let token = "";
  let nodeId = "";
  let jobId = "";
  let appId = "";
  let clientCert: Obj = {};

  const pki = (args: string[]) => runCli(["pki", ...args, "--admin-url", cp.adminUrl, "--token", token]);
  const pkiJson = async (args: string[]): Promise<Obj> => {
    const r = await pki([...args, "--json"]);
    assert.equal(r.code, 0, `pki ${args.join(" ")}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Obj;
  };
  const firstColumn = (stdout: string) => stdout.split("\n").map((line) => line.split(/\s+/)[0] ?? "");
  const jobStatus = async () => (await cp.adminFetch("GET", `/admin/v1/pki/jobs/${jobId}`, { token })).json.status as string;

  before(async () => {
    dataDir = await makeTempDir("authnexus-pki-cli-data");
    cp = await startCpProcess({ dataDir: dataDir.path });
    const setup = await runCli(
      ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", dataDir.path, "--username", "root", "--password-stdin"],
      { input: PASSWORD },
    );
    assert.equal(setup.code, 0, setup.stderr);
    token = (await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: PASSWORD } })).json.access_token;
    const node = await cp.adminFetch("POST", "/admin/v1/nodes", {
      token,
      body: { name: "cli-node", host: "cli-node.example.test", business_port: 8443 },
    });
    assert.equal(node.status, 201, node.text);
    nodeId = node.json.id;
    jobId = node.json.job_id;
    await waitFor("the onboarding job", async () => (await jobStatus()) === "succeeded");
    const created = await cp.adminFetch("POST", "/admin/v1/applications", { token, body: { name: "CLI Game" } });
    assert.equal(created.status, 201, created.text);
    appId = created.json.app_id;
    const issued = await cp.adminFetch("POST", `/admin/v1/applications/${appId}/client-certs`, { token, body: { validity_days: 10 } });
    assert.equal(issued.status, 201, issued.text);
    clientCert = issued.json;
  });
  after(async () => {
    await cp?.stop();
    await dataDir?.cleanup();
  });

  test("pki expiring: the 10-day client certificate within 30 days, not within 5; JSON and table; a bad --days exits 1", async () => {
    const page = await pkiJson(["expiring"]);
    const item = page.items.find((i: Obj) => i.id === clientCert.certificate_id);
    assert.ok(item, JSON.stringify(page));
    assert.equal(item.serial, clientCert.serial);
    assert.equal(item.profile, "app_client");
    assert.equal(item.owner_id, appId);
    assert.ok(item.days_left === 9 || item.days_left === 10, `days_left ${item.days_left}`);
    assert.ok(
      page.items.every((i: Obj) => i.not_after - Date.now() <= 30 * DAY_MS),
      "nothing beyond the default 30 days",
    );
    assert.equal((await pkiJson(["expiring", "--days", "5"])).items.length, 0);

    const table = await pki(["expiring", "--days", "30"]);
    assert.equal(table.code, 0, table.stderr);
    assert.ok(firstColumn(table.stdout).includes(clientCert.certificate_id), table.stdout);
    assert.doesNotMatch(table.stdout, /^ID\s/m, "no header row when piped");
    assert.match(table.stdout, /page 1, \d+ of \d+/);

    const bad = await pki(["expiring", "--days", "0"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /VALIDATION_FAILED: days must be an integer from 1 to 3650/);
    assert.equal(bad.stdout, "");
  });

  test("pki certs --profile and --owner-id narrow the inventory", async () => {
    const page = await pkiJson(["certs", "--profile", "node_server", "--owner-id", nodeId]);
    assert.equal(page.total, 1);
    assert.equal(page.items[0].profile, "node_server");
    assert.equal(page.items[0].owner_id, nodeId);
  });

  test("pki jobs list and show; cancel a pending job, retry it, and it runs again; a refusal exits 1 naming why", async () => {
    const listed = await pkiJson(["jobs", "list", "--status", "succeeded"]);
    assert.ok(listed.items.some((j: Obj) => j.id === jobId && j.kind === "node_onboard"));
    const table = await pki(["jobs", "list", "--target", nodeId]);
    assert.equal(table.code, 0, table.stderr);
    assert.deepEqual(
      firstColumn(table.stdout).filter((c) => c.startsWith("job_")),
      [jobId],
    );

    const shown = await pki(["jobs", "show", jobId]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^status:\s+succeeded$/m);
    assert.match(shown.stdout, new RegExp(`^target:\\s+node:${nodeId}$`, "m"));
    assert.equal((await pkiJson(["jobs", "show", jobId])).result.node_id, nodeId);

    const refused = await pki(["jobs", "cancel", jobId]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /PKI_JOB_NOT_CANCELLABLE/);
    const missing = await pki(["jobs", "show", "job_missing"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /NOT_FOUND: PKI job not found/);

    // A job due only far in the future stays pending long enough to cancel from the command line.
    const db = new Database(join(dataDir.path, "control.db"), { fileMustExist: true });
    try {
      db.prepare("update pki_jobs set status = 'pending', run_after = ? where id = ?").run(Date.now() + 365 * DAY_MS, jobId);
    } finally {
      db.close();
    }
    const cancelled = await pkiJson(["jobs", "cancel", jobId]);
    assert.equal(cancelled.status, "cancelled");
    const retried = await pki(["jobs", "retry", jobId]);
    assert.equal(retried.code, 0, retried.stderr);
    assert.match(retried.stdout, new RegExp(`^job ${jobId} is now (pending|running|succeeded)$`, "m"));
    await waitFor("the retried job", async () => (await jobStatus()) === "succeeded");
  });

  test("pki audit: issuance, revocation and job state changes, filtered by event, job and time; bad --from exits 1", async () => {
    const revoked = await pki(["revoke", clientCert.certificate_id, "--reason", "superseded", "--json"]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(JSON.parse(revoked.stdout).status, "revoked");

    const certRows = await pkiJson(["audit", "--certificate", clientCert.certificate_id]);
    assert.deepEqual(certRows.items.map((r: Obj) => r.event).sort(), ["cert.issued", "cert.revoked"]);
    assert.ok(certRows.items.every((r: Obj) => r.serial_hex === clientCert.serial && r.profile === "app_client"));

    const jobRows = await pkiJson(["audit", "--job", jobId, "--page-size", "200"]);
    const events = jobRows.items.map((r: Obj) => `${r.event}:${r.detail?.to ?? "-"}`);
    for (const expected of [
      "job.queued:pending",
      "job.state_changed:running",
      "job.state_changed:succeeded",
      "job.cancelled:cancelled",
      "job.retried:pending",
    ])
      assert.ok(events.includes(expected), `${expected} in ${events.join(", ")}`);

    const issued = await pkiJson(["audit", "--event", "cert.issued", "--page-size", "200"]);
    assert.ok(issued.items.every((r: Obj) => r.event === "cert.issued"));
    const newest = issued.items[0].created_at as number;
    assert.equal((await pkiJson(["audit", "--event", "cert.issued", "--from", String(newest + 1)])).total, 0);
    const upTo = await pkiJson(["audit", "--event", "cert.issued", "--to", new Date(newest).toISOString(), "--page-size", "200"]);
    assert.equal(upTo.total, issued.total, "an ISO --to includes its own millisecond");

    const table = await pki(["audit", "--certificate", clientCert.certificate_id]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split("\n");
    assert.equal(lines.length, 3, table.stdout);
    assert.match(lines[0] ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+cert\.(issued|revoked)\s/);

    const bad = await pki(["audit", "--from", "yesterday"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /VALIDATION_FAILED: from must be epoch milliseconds or an ISO-8601 time/);
  });
});
