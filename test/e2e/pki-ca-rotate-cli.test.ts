/**
 * `authnexus pki ca rotate` against a real `serve-cp` child process (the built CLI: run `npm run
 * build` first): the open rotation's status (or that none is open), each phase as text and as
 * `--json`, the per-node progress table, and refusals that exit 1 naming the server's error code
 * or the flag at fault. SQLite only: the phases themselves, with real nodes and SDK clients, are
 * covered on both databases by test/integration/ca-rotation.test.ts.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type CpProcess, runCli, startCpProcess } from "../helpers/cp-process.js";
import { waitFor } from "../helpers/node-agent.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

type Obj = Record<string, any>;
const PASSWORD = "correct horse battery staple";

describe("authnexus pki ca rotate", () => {
  let dataDir: TempDir;
  let cp: CpProcess;
  let token = "";
  let nodeId = "";

  const rotate = (args: string[]) => runCli(["pki", "ca", "rotate", ...args, "--admin-url", cp.adminUrl, "--token", token]);
  const rotateJson = async (args: string[]): Promise<Obj> => {
    const r = await rotate([...args, "--json"]);
    assert.equal(r.code, 0, `pki ca rotate ${args.join(" ")}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Obj;
  };
  const fails = async (args: string[], stderr: RegExp) => {
    const r = await rotate(args);
    assert.equal(r.code, 1, `pki ca rotate ${args.join(" ")} should fail: ${r.stdout}`);
    assert.match(r.stderr, stderr);
    assert.equal(r.stdout, "");
  };

  before(async () => {
    dataDir = await makeTempDir("authnexus-ca-rotate-cli-data");
    cp = await startCpProcess({ dataDir: dataDir.path });
    const setup = await runCli(
      ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", dataDir.path, "--username", "root", "--password-stdin"],
      { input: PASSWORD },
    );
    assert.equal(setup.code, 0, setup.stderr);
    token = (await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: PASSWORD } })).json.access_token;
    const app = await cp.adminFetch("POST", "/admin/v1/applications", { token, body: { name: "Rotate CLI" } });
    assert.equal(app.status, 201, app.text);
    // A node that never runs: it never applies the bundles, so a switch waits for it.
    const node = await cp.adminFetch("POST", "/admin/v1/nodes", {
      token,
      body: { name: "cli-idle", host: "idle.example.test", business_port: 8443 },
    });
    assert.equal(node.status, 201, node.text);
    nodeId = node.json.id;
    const jobPath = `/admin/v1/pki/jobs/${node.json.job_id}`;
    await waitFor("the onboarding job", async () => (await cp.adminFetch("GET", jobPath, { token })).json.status === "succeeded");
  });
  after(async () => {
    await cp?.stop();
    await dataDir?.cleanup();
  });

  test("status with none open, refusals, then prepare → publish → switch (forced) → rollback", async () => {
    const none = await rotate(["app_client_ca"]);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, "no rotation of app_client_ca is open\n");
    assert.equal((await rotateJson(["app_client_ca", "--phase", "status"])).total, 0);

    await fails(["made_up_ca", "--phase", "prepare"], /VALIDATION_FAILED: ca must be one of/);
    await fails(["app_client_ca", "--phase", "later"], /--phase must be one of prepare, publish, status, switch, retire, rollback/);
    await fails(["app_client_ca", "--phase", "publish", "--force"], /--force goes with --phase switch or retire only/);
    await fails(["app_client_ca", "--phase", "switch", "--revoke-leaves"], /--revoke-leaves goes with --phase retire only/);
    await fails(["app_client_ca", "--phase", "publish"], /no rotation of app_client_ca is open; start one with --phase prepare/);

    const prepared = await rotateJson(["app_client_ca", "--phase", "prepare"]);
    assert.equal(prepared.phase, "prepared");
    assert.equal(prepared.new_ca.status, "pending");
    await fails(["app_client_ca", "--phase", "prepare"], /CA_ROTATION_IN_PROGRESS/);
    await fails(["app_client_ca", "--phase", "switch"], /CA_ROTATION_WRONG_PHASE: Cannot switch a rotation in phase prepared/);

    const published = await rotate(["app_client_ca", "--phase", "publish"]);
    assert.equal(published.code, 0, published.stderr);
    assert.match(published.stdout, /^published: /);
    assert.match(published.stdout, new RegExp(`^id:\\s+${prepared.id}$`, "m"));
    assert.match(published.stdout, /^nodes: 0 of 1 done \(switch waits for the rest, or --force\)$/m);

    const status = await rotate(["app_client_ca"]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^phase:\s+published$/m);
    // Piped: no header row, one row per node.
    assert.doesNotMatch(status.stdout, /^NODE\s/m);
    assert.match(status.stdout, new RegExp(`^${nodeId}\\s+cli-idle\\s+active\\s+0\\s+1\\s+0\\s+no\\s`, "m"));

    await fails(["app_client_ca", "--phase", "switch"], /CA_ROTATION_NODES_PENDING: 1 of 1 node\(s\) have not applied/);
    const switched = await rotate(["app_client_ca", "--phase", "switch", "--force"]);
    assert.equal(switched.code, 0, switched.stderr);
    assert.match(switched.stdout, /^switched: the new CA signs from now on/);
    const cas = (await cp.adminFetch("GET", "/admin/v1/pki/cas", { token })).json.items.filter((c: Obj) => c.profile === "app_client_ca");
    assert.deepEqual(cas.map((c: Obj) => c.status).sort(), ["active", "retiring"]);

    const rolledBack = await rotate(["app_client_ca", "--phase", "rollback"]);
    assert.equal(rolledBack.code, 0, rolledBack.stderr);
    assert.match(rolledBack.stdout, /^rolled back: /);
    assert.match(rolledBack.stdout, /^0 certificate\(s\) issued by the new CA revoked \(superseded\)$/m);
    assert.equal((await rotate(["app_client_ca"])).stdout, "no rotation of app_client_ca is open\n");
  });
});
