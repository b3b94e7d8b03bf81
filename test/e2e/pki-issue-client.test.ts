/**
 * `authnexus pki issue-client` end to end: a real `serve-cp` child process, first-run setup, an
 * application and a node through the admin API, then the built CLI (bin/authnexus → dist/, so
 * run `npm run build` first) writes the five SDK files with the right modes and contents, warns
 * while no node is active, and refuses to write into a directory that already holds any of them
 * (nothing written, nothing issued). SQLite only: the service is covered on both databases by
 * test/integration/client-certs.test.ts.
 */
import assert from "node:assert/strict";
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { appUri, parseCertificate, verifyCertificateChain } from "../../src/shared/pki/index.js";
import { SDK_CONFIG_FILE_NAME, SDK_CONFIG_FILES, sdkConfigSchema } from "../../src/shared/sdk-config.js";
import { systemClock } from "../../src/shared/time/index.js";
import { type CpProcess, runCli, startCpProcess } from "../helpers/cp-process.js";
import { waitFor } from "../helpers/node-agent.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

const PASSWORD = "correct horse battery staple";
const FILE_NAMES = [...Object.values(SDK_CONFIG_FILES), SDK_CONFIG_FILE_NAME].sort();
const EXPECTED_MODES: Record<string, number> = {
  [SDK_CONFIG_FILES.client_cert]: 0o644,
  [SDK_CONFIG_FILES.client_key]: 0o600,
  [SDK_CONFIG_FILES.server_ca]: 0o644,
  [SDK_CONFIG_FILES.ocsp_signer_ca]: 0o644,
  [SDK_CONFIG_FILE_NAME]: 0o644,
};

const modeOf = (path: string) => statSync(path).mode & 0o777;
const octal = (mode: number) => mode.toString(8).padStart(4, "0");

function contentsOf(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).map((name) => [name, readFileSync(join(dir, name), "utf8")]));
}

describe("authnexus pki issue-client", () => {
  let dataDir: TempDir;
  let outRoot: TempDir;
  let cp: CpProcess;
  let token = "";
  let appId = "";
  let appSecret = "";
  let appClientCaPem = "";
  let tcpServerCaPem = "";

  const issueClient = (args: string[], options: { input?: string } = {}) =>
    runCli(["pki", "issue-client", "--admin-url", cp.adminUrl, ...args], options);
  const withToken = (args: string[]) => issueClient([...args, "--token", token]);
  const certCount = async () => {
    const res = await cp.adminFetch("GET", `/admin/v1/applications/${appId}/client-certs`, { token });
    assert.equal(res.status, 200, res.text);
    return res.json.total as number;
  };

  before(async () => {
    dataDir = await makeTempDir("authnexus-issue-client-data");
    outRoot = await makeTempDir("authnexus-issue-client-out");
    cp = await startCpProcess({ dataDir: dataDir.path });
    const setup = await runCli(
      ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", dataDir.path, "--username", "root", "--password-stdin"],
      { input: PASSWORD },
    );
    assert.equal(setup.code, 0, setup.stderr);
    await cp.waitForListener("ocsp");
    token = (await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: PASSWORD } })).json.access_token;
    const created = await cp.adminFetch("POST", "/admin/v1/applications", { token, body: { name: "Vendor Game" } });
    assert.equal(created.status, 201, created.text);
    appId = created.json.app_id;
    appSecret = created.json.app_secret;
    const cas = (await cp.adminFetch("GET", "/admin/v1/pki/cas", { token })).json.items as { profile: string; certificate_pem: string }[];
    appClientCaPem = cas.find((ca) => ca.profile === "app_client_ca")?.certificate_pem ?? "";
    tcpServerCaPem = cas.find((ca) => ca.profile === "tcp_server_ca")?.certificate_pem ?? "";
    assert.ok(appClientCaPem && tcpServerCaPem);
  });
  after(async () => {
    await cp?.stop();
    await dataDir?.cleanup();
    await outRoot?.cleanup();
  });

  test("with no active node: --json prints the paths and the certificate id, and warns that the config lists no nodes", async () => {
    const dir = join(outRoot.path, "early", "sdk");
    const r = await withToken(["--app", appId, "--out", dir, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: no node is active/);
    const printed = JSON.parse(r.stdout) as { certificate_id: string; files: Record<string, string> };
    assert.match(printed.certificate_id, /^crt_/);
    assert.deepEqual(Object.keys(printed.files).sort(), ["client_cert", "client_key", "ocsp_signer_ca", "sdk_config", "server_ca"]);
    for (const path of Object.values(printed.files)) assert.ok(existsSync(path), path);
    assert.deepEqual(readdirSync(dir).sort(), FILE_NAMES);
    assert.equal(octal(modeOf(dir)), "0700", "a directory it creates is 0700");
    assert.deepEqual(JSON.parse(readFileSync(join(dir, SDK_CONFIG_FILE_NAME), "utf8")).nodes, []);
  });

  test("writes the five files with their modes and contents; the app secret is in none of them", async () => {
    const created = await cp.adminFetch("POST", "/admin/v1/nodes", {
      token,
      body: { name: "edge-1", host: "127.0.0.1", business_port: 18443 },
    });
    assert.equal(created.status, 201, created.text);
    await waitFor(
      "the node's onboarding job to make it active",
      async () => (await cp.adminFetch("GET", `/admin/v1/nodes/${created.json.id}`, { token })).json.lifecycle_status === "active",
      20_000,
      100,
    );

    const dir = join(outRoot.path, "sdk");
    // Logged in with --username: the same session handling as the other pki commands.
    const r = await issueClient(
      ["--app", appId, "--out", dir, "--common-name", "Vendor Build 7", "--validity-days", "90", "--username", "root", "--password-stdin"],
      { input: PASSWORD },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "", "no warning with an active node");
    for (const name of FILE_NAMES) assert.ok(r.stdout.includes(join(dir, name)), `${name} is named in: ${r.stdout}`);
    assert.match(r.stdout, /application secret is not in these files/);

    assert.deepEqual(readdirSync(dir).sort(), FILE_NAMES);
    assert.equal(octal(modeOf(dir)), "0700");
    for (const [name, mode] of Object.entries(EXPECTED_MODES)) assert.equal(octal(modeOf(join(dir, name))), octal(mode), name);

    const files = contentsOf(dir);
    const certPem = files[SDK_CONFIG_FILES.client_cert] ?? "";
    const keyPem = files[SDK_CONFIG_FILES.client_key] ?? "";
    const info = parseCertificate(certPem);
    assert.deepEqual(info.sans.uri, [appUri(appId)]);
    assert.deepEqual(info.extendedKeyUsages, ["clientAuth"]);
    assert.match(info.subject, /CN=Vendor Build 7/);
    assert.equal(info.notAfter - info.notBefore, 90 * 86_400_000 + 5 * 60_000);
    const chain = await verifyCertificateChain({
      leaf: certPem,
      trustedCas: [appClientCaPem],
      clock: systemClock,
      expectedProfile: "app_client",
    });
    assert.equal(chain.ok, true, JSON.stringify(chain));
    const spki = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
    assert.equal(createHash("sha256").update(spki).digest("hex"), info.publicKeySpkiSha256, "client.key is the certificate's key");
    assert.equal(files[SDK_CONFIG_FILES.server_ca], tcpServerCaPem);
    assert.equal(files[SDK_CONFIG_FILES.ocsp_signer_ca], tcpServerCaPem);

    const configText = files[SDK_CONFIG_FILE_NAME] ?? "";
    assert.match(configText, /^\{\n {2}"format": 1,\n/, "pretty JSON");
    const config = sdkConfigSchema.parse(JSON.parse(configText));
    assert.equal(config.app_id, appId);
    assert.deepEqual(config.nodes, [{ host: "127.0.0.1", port: 18443 }]);
    for (const name of Object.values(config.files)) assert.ok(existsSync(join(dir, name)), `the config names ${name}, which is there`);
    for (const [name, text] of Object.entries(files)) assert.ok(!text.includes(appSecret), `the app secret is not in ${name}`);

    const listed = await cp.adminFetch("GET", `/admin/v1/pki/certs?owner_type=application&owner_id=${appId}`, { token });
    assert.ok(
      (listed.json.items as { serial: string }[]).some((c) => c.serial === info.serialHex),
      "the inventory has it",
    );
  });

  test("a second run into the same directory is refused: exit 1, nothing overwritten, nothing issued", async () => {
    const dir = join(outRoot.path, "sdk");
    const before = contentsOf(dir);
    const issuedBefore = await certCount();
    const r = await withToken(["--app", appId, "--out", dir]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /refusing to overwrite .*client\.pem/);
    assert.equal(r.stdout, "");
    assert.deepEqual(contentsOf(dir), before);
    assert.equal(await certCount(), issuedBefore, "no certificate was issued for a run that could not be written");
  });

  test("one existing file is enough to refuse, and nothing is added beside it", async () => {
    const dir = join(outRoot.path, "partial");
    mkdirSync(dir);
    writeFileSync(join(dir, SDK_CONFIG_FILE_NAME), "{}\n");
    const r = await withToken(["--app", appId, "--out", dir, "--json"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refusing to overwrite .*authnexus-sdk\.json/);
    assert.deepEqual(readdirSync(dir), [SDK_CONFIG_FILE_NAME]);
    assert.equal(readFileSync(join(dir, SDK_CONFIG_FILE_NAME), "utf8"), "{}\n");
  });

  test("an unknown application or a bad --validity-days fails clearly and creates no directory", async () => {
    const dir = join(outRoot.path, "never");
    const unknown = await withToken(["--app", "app_doesnotexist", "--out", dir]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /NOT_FOUND/);
    const tooLong = await withToken(["--app", appId, "--out", dir, "--validity-days", "398"]);
    assert.equal(tooLong.code, 1);
    assert.match(tooLong.stderr, /VALIDATION_FAILED/);
    const notNumber = await withToken(["--app", appId, "--out", dir, "--validity-days", "ten"]);
    assert.equal(notNumber.code, 1);
    assert.match(notNumber.stderr, /--validity-days/);
    assert.equal(existsSync(dir), false);
  });
});
