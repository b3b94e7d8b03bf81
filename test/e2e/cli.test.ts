/**
 * The `authnexus` command line as an operator uses it: help lists only what is built, bad
 * configuration fails before anything starts (listing every problem), and the `pki` commands
 * work against a running CP with a token or a login.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type CpProcess, runCli, startCpProcess } from "../helpers/cp-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

const PASSWORD = "correct horse battery staple";

describe("authnexus CLI", () => {
  let dataDir: TempDir;
  let outDir: TempDir;
  let cp: CpProcess;
  let token = "";

  before(async () => {
    dataDir = await makeTempDir("authnexus-cli-data");
    outDir = await makeTempDir("authnexus-cli-out");
    cp = await startCpProcess({ dataDir: dataDir.path });
    const setup = await runCli(
      ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", dataDir.path, "--username", "root", "--password-stdin"],
      { input: PASSWORD },
    );
    assert.equal(setup.code, 0, setup.stderr);
    await cp.waitForListener("ocsp");
    token = (await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: PASSWORD } })).json.access_token;
  });
  after(async () => {
    await cp?.stop();
    await dataDir?.cleanup();
    await outDir?.cleanup();
  });

  test("--help lists the four subcommands", async () => {
    const help = await runCli(["--help"]);
    assert.equal(help.code, 0);
    for (const command of ["serve-cp", "serve-node", "pki", "ops"])
      assert.match(help.stdout, new RegExp(`^\\s+${command}\\b`, "m"), command);
  });

  test("serve-node without --agent, or with a package that does not exist, exits 2 naming the problem", async () => {
    const missing = await runCli(["serve-node"]);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /--agent/);
    const absent = await runCli([
      "serve-node",
      "--agent",
      join(dataDir.path, "nowhere", "node_agent.json"),
      "--data-dir",
      join(dataDir.path, "node-never"),
    ]);
    assert.notEqual(absent.code, 0);
    assert.match(absent.stderr + absent.stdout, /node_agent\.json/);
    assert.equal(existsSync(join(dataDir.path, "node-never")), false, "nothing created for a node that cannot start");
  });

  test("invalid configuration exits 2 naming every bad flag, and creates no data dir", async () => {
    const dir = join(dataDir.path, "never-created");
    const r = await runCli(["serve-cp", "--data-dir", dir, "--admin-listen", "nope", "--db-type", "oracle", "--log-level", "loud"]);
    assert.equal(r.code, 2, r.stderr);
    for (const flag of ["--admin-listen", "--db-type", "--log-level"]) assert.match(r.stderr, new RegExp(flag));
    assert.equal(existsSync(dir), false);
  });

  test("ops setup on a CP that is already set up fails with the server's reason", async () => {
    const r = await runCli(
      ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", dataDir.path, "--username", "root", "--password-stdin"],
      { input: PASSWORD },
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /console token|SETUP_ALREADY_COMPLETED/);
  });

  test("pki cas writes each CA's PEM; pki certs lists the inventory; pki revoke revokes", async () => {
    const env = { AUTHNEXUS_ADMIN_URL: cp.adminUrl };
    const cas = await runCli(["pki", "cas", "--out-dir", outDir.path, "--username", "root", "--password-stdin"], { input: PASSWORD, env });
    assert.equal(cas.code, 0, cas.stderr);
    assert.deepEqual(readdirSync(outDir.path).sort(), [
      "app_client_ca.pem",
      "cp_node_client_ca.pem",
      "cp_server_ca.pem",
      "tcp_server_ca.pem",
    ]);
    assert.match(readFileSync(join(outDir.path, "tcp_server_ca.pem"), "utf8"), /BEGIN CERTIFICATE/);

    const certs = await runCli(["pki", "certs", "--owner-type", "control_plane"], { env: { ...env, AUTHNEXUS_ADMIN_TOKEN: token } });
    assert.equal(certs.code, 0, certs.stderr);
    const id = certs.stdout.split(/\s+/)[0] ?? "";
    assert.match(id, /^crt_/);
    assert.match(certs.stdout, /page 1, 1 of 1/);

    const revoke = await runCli(["pki", "revoke", id, "--reason", "superseded", "--token", token], { env });
    assert.equal(revoke.code, 0, revoke.stderr);
    const detail = await cp.adminFetch("GET", `/admin/v1/pki/certs/${id}`, { token });
    assert.equal(detail.json.status, "revoked");
    assert.equal(detail.json.revocation_reason, "superseded");

    const again = await runCli(["pki", "revoke", id, "--token", token], { env });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /CONFLICT/);
  });

  test("pki commands refuse a bad token and a bad reason clearly", async () => {
    const env = { AUTHNEXUS_ADMIN_URL: cp.adminUrl };
    const bad = await runCli(["pki", "certs", "--token", "x".repeat(43)], { env });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /UNAUTHENTICATED/);
    const reason = await runCli(["pki", "revoke", "crt_x", "--reason", "because", "--token", token], { env });
    assert.equal(reason.code, 1);
    assert.match(reason.stderr, /VALIDATION_FAILED|NOT_FOUND/);
    const none = await runCli(["pki", "certs"], { env: { ...env, AUTHNEXUS_ADMIN_TOKEN: "" } });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /--token/);
  });
});
