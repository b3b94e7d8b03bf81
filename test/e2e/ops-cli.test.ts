/**
 * `authnexus ops login|logout|nodes|users|cards|sessions|probe` against REAL processes: a
 * `serve-cp` child and a `serve-node` child started from the package `ops nodes package` wrote
 * (the built CLI: run `npm run build` first). SQLite only, the node sharing the CP's Runtime DB
 * file as on one host. The CLI's config dir is a temp dir (XDG_CONFIG_HOME).
 *
 * - ops login stores a 0600 session that later commands (ops and pki) use without a token; an
 *   expired access token is refreshed; another --admin-url is refused; ops logout revokes the
 *   session on the CP and deletes the file.
 * - nodes create → package (waits for the job, 0600, a valid archive a node starts from) →
 *   list/show/overview → disable/enable (the probe sees both) → reissue → delete.
 * - users/cards/sessions basics, with a real SDK session to kick.
 * - probe: exit 0 with every step against the live node; 5 for a refused login, 6 for a wrong
 *   app secret, 4 while the node is disabled, 3 once it is stopped, 2 for a broken config.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AuthNexusClient } from "../../src/sdk/client.js";
import { type CpProcess, runCli, startSetUpCpProcess } from "../helpers/cp-process.js";
import { waitFor } from "../helpers/node-agent.js";
import { freePort, type NodeProcess, startNodeFromArchive } from "../helpers/node-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

type Obj = Record<string, any>;
const PASSWORD = "correct horse battery staple";
const USER_PASSWORD = "user password 1";
const AGENT_RUNTIME = { checkin_interval_ms: 2000, backoff_base_ms: 50, backoff_max_ms: 500, request_timeout_ms: 3000 };
const mode = (path: string) => (statSync(path).mode & 0o777).toString(8);

describe("authnexus ops", () => {
  let dir: TempDir;
  let cp: CpProcess;
  let node: NodeProcess | undefined;
  let token = "";
  let nodeId = "";
  let appId = "";
  let appSecret = "";
  let sdkConfig = "";
  let businessPort = 0;
  const cleanups: Array<() => Promise<void>> = [];
  const sessionFile = () => join(dir.path, "config", "authnexus", "session.json");
  /** The CLI with the temp config dir and no token from the environment: it uses the stored session. */
  const ops = (args: string[], input?: string, timeoutMs = 60_000) =>
    runCli(["ops", ...args], {
      env: { XDG_CONFIG_HOME: join(dir.path, "config"), AUTHNEXUS_SESSION_FILE: "", AUTHNEXUS_ADMIN_TOKEN: "", AUTHNEXUS_ADMIN_URL: "" },
      timeoutMs,
      ...(input !== undefined ? { input } : {}),
    });
  const json = (r: { code: number; stdout: string; stderr: string }): Obj => {
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    return JSON.parse(r.stdout) as Obj;
  };
  const admin = async (method: string, path: string, body?: unknown): Promise<Obj> => {
    const res = await cp.adminFetch(method, `/admin/v1${path}`, { token, ...(body === undefined ? {} : { body }) });
    assert.ok(res.status >= 200 && res.status < 300, `${method} ${path} → ${res.status} ${res.text}`);
    return res.json as Obj;
  };
  const probe = (extra: string[], input: string) =>
    ops(["probe", "--sdk-config", sdkConfig, "--app-secret-stdin", "--timeout-ms", "3000", "--json", ...extra], input);

  before(async () => {
    dir = await makeTempDir("authnexus-e2e-ops");
    mkdirSync(join(dir.path, "cp"));
    cp = await startSetUpCpProcess(join(dir.path, "cp"), PASSWORD);
    token = (await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: PASSWORD } })).json.access_token;
    await admin("PUT", "/configs/cp_agent_runtime", { content: AGENT_RUNTIME });
    const app = await admin("POST", "/applications", { name: "Ops Game" });
    appId = app.app_id;
    appSecret = app.app_secret;
  });
  after(async () => {
    await node?.stop("SIGTERM");
    await cp?.stop("SIGTERM");
    await Promise.all(cleanups.splice(0).map((c) => c()));
    await dir?.cleanup();
  });

  test("ops login stores a 0600 session that ops and pki commands use; it is refreshed, bound to its URL, and ops logout ends it", async () => {
    const none = await ops(["nodes", "list"]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /ops login/);

    const login = await ops(["login", "--admin-url", cp.adminUrl, "--username", "root", "--password-stdin"], PASSWORD);
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stdout, /logged in to .* as root/);
    assert.equal(mode(sessionFile()), "600");
    assert.equal(mode(join(dir.path, "config", "authnexus")), "700");
    const stored = JSON.parse(readFileSync(sessionFile(), "utf8")) as Obj;
    assert.equal(stored.admin_url, cp.adminUrl);
    assert.ok(!login.stdout.includes(stored.access_token), "the token is not printed");

    // No --admin-url and no token: the stored session names the CP and authenticates, for ops and pki alike.
    assert.equal(json(await ops(["nodes", "overview", "--json"])).total, 0);
    const cas = await runCli(["pki", "cas", "--json"], {
      env: { XDG_CONFIG_HOME: join(dir.path, "config"), AUTHNEXUS_SESSION_FILE: "", AUTHNEXUS_ADMIN_TOKEN: "", AUTHNEXUS_ADMIN_URL: "" },
    });
    assert.equal(JSON.parse(cas.stdout).items.length, 4, cas.stderr);

    // An access token past its expiry is refreshed before use, and the file keeps the new pair.
    writeFileSync(sessionFile(), JSON.stringify({ ...stored, access_expires_at: 0 }), { mode: 0o600 });
    assert.equal(json(await ops(["nodes", "list", "--json"])).total, 0);
    const refreshed = JSON.parse(readFileSync(sessionFile(), "utf8")) as Obj;
    assert.notEqual(refreshed.access_token, stored.access_token);
    assert.notEqual(refreshed.refresh_token, stored.refresh_token);
    assert.ok(refreshed.access_expires_at > Date.now());
    assert.equal(mode(sessionFile()), "600");

    // A stored session is never sent to another admin URL.
    const elsewhere = await ops(["nodes", "list", "--admin-url", "http://127.0.0.1:1"]);
    assert.equal(elsewhere.code, 1);
    assert.match(elsewhere.stderr, /stored session .* is for/);

    const logout = await ops(["logout"]);
    assert.equal(logout.code, 0, logout.stderr);
    assert.match(logout.stdout, /ended on the Control Plane/);
    assert.equal(existsSync(sessionFile()), false);
    const me = await cp.adminFetch("GET", "/admin/v1/auth/me", { token: refreshed.access_token });
    assert.equal(me.status, 401, "the session was revoked on the CP");
    assert.match((await ops(["logout"])).stdout, /not logged in/);

    const again = await ops(["login", "--admin-url", cp.adminUrl, "--username", "root", "--password-stdin", "--json"], PASSWORD);
    assert.equal(json(again).session_file, sessionFile());
  });

  test("nodes create → package (waits for the job; 0600; a valid archive a node runs from) → list, show, overview", async () => {
    businessPort = await freePort();
    const created = json(
      await ops(["nodes", "create", "--name", "edge-ops", "--host", "127.0.0.1", "--business-port", String(businessPort), "--json"]),
    );
    nodeId = created.id;
    assert.match(created.job_id, /^job_/);

    const out = join(dir.path, "edge-ops.tar.gz");
    const pkg = await ops(["nodes", "package", nodeId, "--out", out]);
    assert.equal(pkg.code, 0, pkg.stderr);
    assert.match(pkg.stdout, /wrote the deploy package .* mode 0600/);
    assert.equal(mode(out), "600");
    const refused = await ops(["nodes", "package", nodeId, "--out", out]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /exists: pass --force/);
    assert.equal(json(await ops(["nodes", "package", nodeId, "--out", out, "--force", "--json"])).node_id, nodeId);

    const started = await startNodeFromArchive(readFileSync(out), {
      dataDir: join(dir.path, "node"),
      businessPort,
      runtimeDbPath: join(dir.path, "cp", "runtime.db"),
    });
    cleanups.push(started.cleanup);
    node = started.node;

    const list = await ops(["nodes", "list"]);
    assert.equal(list.code, 0, list.stderr);
    const row = list.stdout.split("\n").find((l) => l.startsWith(nodeId));
    assert.ok(row, list.stdout);
    assert.ok(!list.stdout.startsWith("ID "), "no header row when piped");
    assert.equal(json(await ops(["nodes", "list", "--json"])).items[0].id, nodeId);
    const show = await ops(["nodes", "show", nodeId]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^name: +edge-ops$/m);
    assert.match(show.stdout, /^current package: +pkg_/m);
    assert.equal(json(await ops(["nodes", "show", nodeId, "--json"])).name, "edge-ops");
    await waitFor("the node checks in", async () => json(await ops(["nodes", "overview", "--json"])).by_status.online === 1, 20_000, 200);
    const unknown = await ops(["nodes", "show", "nod_doesnotexist"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /NOT_FOUND/);
  });

  test("users, cards and sessions of an application", async () => {
    const sdkDir = join(dir.path, "sdk");
    const issued = await runCli(["pki", "issue-client", "--app", appId, "--out", sdkDir, "--json"], {
      env: { XDG_CONFIG_HOME: join(dir.path, "config"), AUTHNEXUS_SESSION_FILE: "", AUTHNEXUS_ADMIN_TOKEN: "", AUTHNEXUS_ADMIN_URL: "" },
    });
    assert.equal(issued.code, 0, issued.stderr);
    sdkConfig = JSON.parse(issued.stdout).files.sdk_config;

    const alice = json(
      await ops(["users", "create", "alice", "--app", appId, "--email", "alice@example.com", "--password-stdin", "--json"], USER_PASSWORD),
    );
    assert.equal(alice.username, "alice");
    const bob = json(await ops(["users", "create", "bob", "--app", appId, "--password-stdin", "--json"], USER_PASSWORD));
    const listed = json(await ops(["users", "list", "--app", appId, "--q", "ali", "--json"]));
    assert.deepEqual(
      listed.items.map((u: Obj) => u.id),
      [alice.id],
    );
    const show = await ops(["users", "show", bob.id, "--app", appId]);
    assert.match(show.stdout, /^username: +bob$/m);
    assert.equal(json(await ops(["users", "ban", bob.id, "--app", appId, "--reason", "testing", "--json"])).status, "banned");
    assert.equal(json(await ops(["users", "unban", bob.id, "--app", appId, "--json"])).status, "active");
    const reset = await ops(["users", "reset-password", bob.id, "--app", appId, "--password-stdin"], "another password 2");
    assert.equal(reset.code, 0, reset.stderr);
    assert.match(reset.stdout, /password of bob .* reset/);
    const noArgvPassword = await ops(["users", "create", "carol", "--app", appId], "");
    assert.equal(noArgvPassword.code, 1, "no password on a terminal or stdin: refused");

    // A real SDK session for bob, then kicked; and all his sessions revoked.
    const client = await AuthNexusClient.connect({ config: sdkConfig, appSecret, deviceId: "ops-test-device", reconnect: false });
    try {
      await client.loginPassword("bob", "another password 2");
      const sessions = json(await ops(["sessions", "list", "--app", appId, "--user", bob.id, "--json"]));
      const live = sessions.items.find((s: Obj) => s.state === "online" || s.state === "offline");
      assert.ok(live, JSON.stringify(sessions));
      const kicked = await ops(["sessions", "kick", live.id, "--app", appId]);
      assert.equal(kicked.code, 0, kicked.stderr);
      assert.match(kicked.stdout, new RegExp(`kicked session ${live.id}`));
      const again = await ops(["sessions", "kick", live.id, "--app", appId]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /CONFLICT/);
      assert.equal(json(await ops(["sessions", "revoke", bob.id, "--app", appId, "--json"])).user_id, bob.id);
    } finally {
      await client.close();
    }

    const batch = json(
      await ops(["cards", "generate", "--app", appId, "--count", "3", "--duration", "30d", "--note", "ops test", "--json"]),
    );
    assert.equal(batch.cards.length, 3);
    assert.equal(batch.duration_seconds, 30 * 86_400);
    const codesFile = join(dir.path, "codes.csv");
    const toFile = await ops(["cards", "generate", "--app", appId, "--count", "2", "--duration", "3600", "--out", codesFile]);
    assert.equal(toFile.code, 0, toFile.stderr);
    assert.equal(mode(codesFile), "600");
    assert.equal(readFileSync(codesFile, "utf8").trim().split("\n").length, 3);
    const cards = json(await ops(["cards", "list", "--app", appId, "--batch", batch.batch_id, "--json"]));
    assert.equal(cards.total, 3);
    const [first, second] = batch.cards as Obj[];
    assert.equal(json(await ops(["cards", "disable", first?.id, "--app", appId, "--json"])).status, "disabled");
    assert.equal(json(await ops(["cards", "delete", second?.id, "--app", appId, "--json"])).card_id, second?.id);
    const csv = await ops(["cards", "export", batch.batch_id, "--app", appId]);
    assert.equal(csv.code, 0, csv.stderr);
    assert.match(csv.stdout, /^id,hint,status,created_at/);
    assert.equal(csv.stdout.trim().split(/\r?\n/).length, 3, "header and the two cards left");

    const unconfirmed = await ops(["users", "delete", alice.id, "--app", appId]);
    assert.equal(unconfirmed.code, 1);
    assert.match(unconfirmed.stderr, /--yes/);
    const deleted = await ops(["users", "delete", bob.id, "--app", appId, "--yes"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.equal((await ops(["users", "show", bob.id, "--app", appId])).code, 1);
  });

  test("probe: every step against the live node exits 0; a refused login 5, a wrong app secret 6, a broken config 2", async () => {
    const ok = await probe(["--username", "alice", "--password-stdin"], `${appSecret}\n${USER_PASSWORD}\n`);
    const result = json(ok);
    assert.equal(result.ok, true);
    assert.deepEqual(
      result.nodes[0].steps.map((s: Obj) => `${s.step}:${s.ok}`),
      ["tls:true", "hello:true", "login:true", "heartbeat:true", "logout:true"],
    );
    assert.equal(result.nodes[0].node_id, nodeId);
    assert.match(result.nodes[0].steps[0].detail, /staple verified/);

    const table = await ops(["probe", "--sdk-config", sdkConfig, "--app-secret-stdin"], appSecret);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /127\.0\.0\.1:\d+ +hello +ok/);

    const badLogin = await probe(["--username", "alice", "--password-stdin"], `${appSecret}\nwrong password 9\n`);
    assert.equal(badLogin.code, 5, badLogin.stderr);
    assert.match(badLogin.stderr, /probe failed at login .*LOGIN_FAILED/);

    const badSecret = await probe([], "x".repeat(43));
    assert.equal(badSecret.code, 6, badSecret.stderr);
    assert.match(badSecret.stderr, /APP_CREDENTIALS_INVALID/);

    const missing = await ops(["probe", "--sdk-config", join(dir.path, "nope.json"), "--app-secret-stdin"], appSecret);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /cannot read the SDK config/);
  });

  test("a disabled node fails the probe with 4 (staple revoked); enabled again it passes", async () => {
    const disabled = await ops(["nodes", "disable", nodeId]);
    assert.equal(disabled.code, 0, disabled.stderr);
    assert.match(disabled.stdout, /disabled; status disabled/);
    let last = { code: -1, stdout: "", stderr: "" };
    await waitFor(
      "the probe refuses the disabled node's staple",
      async () => {
        last = await probe([], appSecret);
        return last.code === 4;
      },
      20_000,
      200,
    );
    assert.match(last.stderr, /probe failed at tls .*NODE_STAPLE_REFUSED/);
    assert.equal(json(await ops(["nodes", "enable", nodeId, "--json"])).lifecycle_status, "active");
    await waitFor("the probe passes again", async () => (await probe([], appSecret)).code === 0, 20_000, 200);
  });

  test("reissue builds a new package that package waits for; delete needs --yes off a terminal", async () => {
    const idle = json(await ops(["nodes", "create", "--name", "edge-idle", "--host", "127.0.0.1", "--business-port", "18444", "--json"]));
    const first = json(await ops(["nodes", "package", idle.id, "--out", join(dir.path, "idle-1.tar.gz"), "--json"]));
    const reissued = await ops(["nodes", "reissue", idle.id, "--json"]);
    const answer = json(reissued);
    assert.equal(answer.node_id, idle.id);
    assert.ok(answer.revoked_certificate_ids.length >= 2, JSON.stringify(answer));
    const second = json(await ops(["nodes", "package", idle.id, "--out", join(dir.path, "idle-2.tar.gz"), "--json"]));
    assert.notEqual(second.package_id, first.package_id, "the new package, after the reissue job");

    const unconfirmed = await ops(["nodes", "delete", idle.id]);
    assert.equal(unconfirmed.code, 1);
    assert.match(unconfirmed.stderr, /pass --yes/);
    const deleted = await ops(["nodes", "delete", idle.id, "--yes"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match(deleted.stdout, new RegExp(`deleted node ${idle.id}`));
    assert.equal((await ops(["nodes", "show", idle.id])).code, 1);
  });

  test("a stopped node fails the probe with 3 (unreachable)", async () => {
    await node?.stop("SIGTERM");
    node = undefined;
    const down = await probe([], appSecret);
    assert.equal(down.code, 3, down.stderr);
    assert.match(down.stderr, /probe failed at tls .*NODE_UNREACHABLE/);
  });
});
