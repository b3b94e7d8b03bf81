/**
 * `authnexus dev` end to end, as a newcomer meets it: the built CLI (bin/authnexus → dist/, so run
 * `npm run build` first) as a child process, in a temp folder, on free ports. It starts and
 * prints its summary (and no log lines); the printed admin credentials work against the printed
 * admin URL; the SDK files, the application secret and the demo user log in over the node's
 * business port; SIGTERM stops it with exit 0, databases closed and every port free again; a
 * rerun reuses the folder (same admin password, application, node and user, nothing
 * duplicated); the printed SDK snippet logs the demo user in (a TODO until src/sdk exists); a
 * taken port is one clear line and exit 1, at once; a start killed half-way is completed by the
 * next one; a folder it did not make is refused.
 *
 * Tests run in order and build on each other.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { decodeMessage, encodeMessage, FrameDecoder } from "../../src/shared/protocol/index.js";
import {
  type AuthnexusProcess,
  canConnect,
  freePort,
  REPO_ROOT,
  runCli,
  runProcess,
  spawnAuthnexus,
} from "../helpers/authnexus-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

/** A first start creates four CAs and onboards a node; far less than this on any machine. */
const START_TIMEOUT_MS = 60_000;
/** Without the SDK's sources there is nothing for the snippet to import yet. */
const SDK_MISSING = !existsSync(join(REPO_ROOT, "src", "sdk", "index.ts"));

// ---------------------------------------------------------------------------------------------
// Reading the summary

interface Summary {
  folder: string;
  statePath: string;
  logs: string[];
  adminUrl: string;
  adminUsername: string;
  adminPassword: string;
  nodeId: string;
  business: { host: string; port: number };
  healthUrl: string;
  appId: string;
  appSecret: string;
  sdkConfigPath: string;
  username: string;
  userId: string;
  userPassword: string;
  snippet: string;
  curl: string;
}

function field(text: string, pattern: RegExp, what: string): RegExpMatchArray {
  const match = text.match(pattern);
  assert.ok(match, `the summary has no ${what}:\n${text}`);
  return match;
}

function parseSummary(text: string): Summary {
  const passwords = [...text.matchAll(/^ {4}password {4}(\S+)$/gm)].map((m) => m[1] ?? "");
  assert.equal(passwords.length, 2, `two passwords (admin, demo user) in:\n${text}`);
  const business = field(text, /^ {4}business {4}(\S+):(\d+) /m, "business address");
  const app = field(text, /^ {2}Application {3}(\S+) \((.+)\)$/m, "application");
  const user = field(text, /^ {2}Demo user {5}(\S+) \((\S+)\)$/m, "demo user");
  return {
    folder: field(text, /^ {2}Folder {8}(.+)$/m, "folder")[1] ?? "",
    statePath: field(text, /^ {2}State {9}(\S+) /m, "state file")[1] ?? "",
    logs: [...text.matchAll(/(\/\S+\.log)$/gm)].map((m) => m[1] ?? ""),
    adminUrl: field(text, /^ {2}Admin API {5}(\S+)$/m, "admin URL")[1] ?? "",
    adminUsername: field(text, /^ {4}username {4}(\S+)$/m, "admin username")[1] ?? "",
    adminPassword: passwords[0] ?? "",
    nodeId: field(text, /^ {2}Node {10}(\S+)$/m, "node id")[1] ?? "",
    business: { host: business[1] ?? "", port: Number(business[2]) },
    healthUrl: field(text, /^ {4}health {6}(\S+)$/m, "health URL")[1] ?? "",
    appId: app[1] ?? "",
    appSecret: field(text, /^ {4}secret {6}(\S+)$/m, "application secret")[1] ?? "",
    sdkConfigPath: field(text, /^ {4}SDK config {2}(.+)$/m, "SDK config path")[1] ?? "",
    username: user[1] ?? "",
    userId: user[2] ?? "",
    userPassword: passwords[1] ?? "",
    snippet: field(text, /^ {2}(cd .* && node --input-type=module -e .*)$/m, "SDK snippet")[1] ?? "",
    curl: field(text, /^ {2}(curl .*)$/m, "curl command")[1] ?? "",
  };
}

/** Resolves with the parsed summary once stdout has all of it; rejects if the process exits first. */
function waitForSummary(proc: AuthnexusProcess, timeoutMs = START_TIMEOUT_MS): Promise<Summary> {
  const done = () => proc.stdout.includes("Press Ctrl-C to stop.");
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      proc.child.stdout?.off("data", onData);
      proc.child.off("close", onClose);
    };
    const onData = () => {
      if (!done()) return;
      cleanup();
      resolve(parseSummary(proc.stdout));
    };
    const onClose = () => {
      cleanup();
      if (done()) resolve(parseSummary(proc.stdout));
      else reject(new Error(`authnexus dev exited (${proc.exitCode}) before its summary\n--- stderr ---\n${proc.stderr}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no summary within ${timeoutMs} ms\n--- stderr ---\n${proc.stderr}\n--- stdout ---\n${proc.stdout}`));
    }, timeoutMs);
    proc.child.stdout?.on("data", onData);
    proc.child.once("close", onClose);
    if (done()) onData();
    else if (proc.exitCode !== null) onClose();
  });
}

async function adminLogin(summary: Pick<Summary, "adminUrl">, username: string, password: string) {
  const res = await fetch(`${summary.adminUrl}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  return { status: res.status, json: (await res.json()) as any };
}

async function adminGet(summary: Pick<Summary, "adminUrl">, token: string, path: string): Promise<any> {
  const res = await fetch(`${summary.adminUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200, `GET ${path}`);
  return res.json();
}

/**
 * A business-port login with nothing but the SDK files, the secret and the demo credentials:
 * mutual TLS verified against server_ca.pem for the address in authnexus-sdk.json, a stapled
 * OCSP response, then hello and login_password in the binary protocol.
 */
function rawLogin(summary: Summary): Promise<{ authorized: boolean; staple: number; answers: Array<{ name: string; body: any }> }> {
  const config = JSON.parse(readFileSync(summary.sdkConfigPath, "utf8"));
  const file = (key: string) => readFileSync(join(summary.sdkConfigPath, "..", config.files[key]));
  const target = config.nodes[0] as { host: string; port: number };
  return new Promise((resolve, reject) => {
    const answers: Array<{ name: string; body: any }> = [];
    let staple = 0;
    const socket = tls.connect({
      host: target.host,
      port: target.port,
      ca: file("server_ca"),
      cert: file("client_cert"),
      key: file("client_key"),
      requestOCSP: true,
    } as tls.ConnectionOptions);
    const timer = setTimeout(() => socket.destroy(new Error("no answer within 10 s")), 10_000);
    const decoder = new FrameDecoder();
    socket.on("OCSPResponse", (response: Buffer) => (staple = response.length));
    socket.on("secureConnect", () => {
      socket.write(
        encodeMessage("hello", 1, { app_id: config.app_id, app_secret: summary.appSecret, device_id: "dev-e2e", sdk_version: "e2e/1" }),
      );
      socket.write(encodeMessage("login_password", 2, { username: summary.username, password: summary.userPassword }));
    });
    socket.on("data", (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        const message = decodeMessage(frame);
        if (message) answers.push({ name: message.name, body: message.body });
        if (message?.name !== "hello_ok") socket.end();
      }
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ authorized: socket.authorized, staple, answers });
    });
  });
}

/** Holds 127.0.0.1:port until released. */
async function occupy(port: number): Promise<net.Server> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return server;
}

const mode = (path: string) => statSync(path).mode & 0o777;

// ---------------------------------------------------------------------------------------------

describe("authnexus dev end to end", () => {
  let work: TempDir;
  let dir = "";
  const ports = { admin: 0, cp: 0, ocsp: 0, business: 0, health: 0 };
  const portArgs = () => [
    ...["--admin-port", String(ports.admin), "--cp-port", String(ports.cp), "--ocsp-port", String(ports.ocsp)],
    ...["--business-port", String(ports.business), "--health-port", String(ports.health)],
  ];
  const processes: AuthnexusProcess[] = [];
  const startDev = (args: string[]) => {
    const proc = spawnAuthnexus(["dev", "--dir", dir, ...args]);
    processes.push(proc);
    return proc;
  };
  let first: AuthnexusProcess;
  let firstSummary: Summary;
  let rerun: AuthnexusProcess;
  let rerunSummary: Summary;

  before(async () => {
    work = await makeTempDir("authnexus-e2e-dev");
    dir = join(work.path, "authnexus-dev");
    for (const name of Object.keys(ports) as (keyof typeof ports)[]) ports[name] = await freePort();
  });

  after(async () => {
    for (const proc of processes) if (proc.exitCode === null) await proc.stop("SIGKILL");
    await work.cleanup();
  });

  test("a first start sets everything up and prints the summary, not the logs", async () => {
    first = startDev(portArgs());
    firstSummary = await waitForSummary(first);
    const s = firstSummary;
    assert.equal(s.folder, dir);
    assert.equal(s.adminUrl, `http://127.0.0.1:${ports.admin}/admin/v1`);
    assert.equal(s.adminUsername, "root");
    assert.ok(s.adminPassword.length >= 12, "a generated admin password");
    assert.match(s.nodeId, /^nod_/);
    assert.deepEqual(s.business, { host: "127.0.0.1", port: ports.business });
    assert.equal(s.healthUrl, `http://127.0.0.1:${ports.health}/readyz`);
    assert.match(s.appId, /^app_/);
    assert.match(s.appSecret, /^ans_/);
    assert.equal(s.username, "demo");
    assert.match(s.userId, /^usr_/);
    assert.deepEqual(s.logs, [join(dir, "logs", "cp.log"), join(dir, "logs", "node.log")]);
    assert.equal(first.events.length, 0, "no JSON log line on stdout");
    assert.ok(first.stdout.split("\n").length < 60, "a summary, not a log");
    for (const log of s.logs) assert.match(readFileSync(log, "utf8"), /"msg":"listener.bound"/, `${log} has the log`);

    // What survives a rerun, kept private.
    assert.equal(mode(dir), 0o700, "folder 0700");
    assert.equal(s.statePath, join(dir, "dev-state.json"));
    assert.equal(mode(s.statePath), 0o600, "state file 0600");
    const state = JSON.parse(readFileSync(s.statePath, "utf8"));
    assert.equal(state.admin.password, s.adminPassword);
    assert.equal(state.application.id, s.appId);
    assert.equal(state.application.secret, s.appSecret);
    assert.equal(state.node.id, s.nodeId);
    assert.deepEqual(state.demo_user, { username: s.username, password: s.userPassword, id: s.userId });

    // The SDK files, as `pki issue-client` writes them; the config names the bound business port.
    assert.equal(s.sdkConfigPath, join(dir, "sdk", "authnexus-sdk.json"));
    assert.equal(mode(join(dir, "sdk", "client.key")), 0o600);
    const config = JSON.parse(readFileSync(s.sdkConfigPath, "utf8"));
    assert.equal(config.app_id, s.appId);
    assert.deepEqual(config.nodes, [{ host: "127.0.0.1", port: ports.business }]);
    assert.ok(!readFileSync(s.sdkConfigPath, "utf8").includes(s.appSecret), "the secret is not in the SDK config");
  });

  test("the printed admin credentials work against the printed admin URL", async () => {
    const login = await adminLogin(firstSummary, firstSummary.adminUsername, firstSummary.adminPassword);
    assert.equal(login.status, 200, JSON.stringify(login.json));
    const token = login.json.access_token as string;
    const nodes = await adminGet(firstSummary, token, "/nodes");
    assert.deepEqual(
      nodes.items.map((n: any) => [n.id, n.status]),
      [[firstSummary.nodeId, "online"]],
    );
    const apps = await adminGet(firstSummary, token, "/applications");
    assert.deepEqual(
      apps.items.map((a: any) => a.app_id),
      [firstSummary.appId],
    );
    const users = await adminGet(firstSummary, token, `/applications/${firstSummary.appId}/users`);
    assert.deepEqual(
      users.items.map((u: any) => [u.id, u.username]),
      [[firstSummary.userId, "demo"]],
    );
    // The printed curl line is the same login.
    const curl = await runProcess("sh", ["-c", firstSummary.curl], { timeoutMs: 15_000 });
    assert.equal(curl.code, 0, curl.stderr);
    assert.match(curl.stdout, /"access_token":"/);
    const wrong = await adminLogin(firstSummary, "root", `${firstSummary.adminPassword}x`);
    assert.equal(wrong.status, 401);
  });

  test("the SDK files, the application secret and the demo user log in over the node's business port", async () => {
    const result = await rawLogin(firstSummary);
    assert.equal(result.authorized, true, "the node's certificate verifies against server_ca.pem for 127.0.0.1");
    assert.ok(result.staple > 0, "an OCSP response is stapled");
    assert.deepEqual(
      result.answers.map((a) => a.name),
      ["hello_ok", "auth_ok"],
      JSON.stringify(result.answers),
    );
    assert.equal(result.answers[0]?.body.node_id, firstSummary.nodeId);
    assert.equal(result.answers[1]?.body.user_id, firstSummary.userId);
    assert.equal(result.answers[1]?.body.username, "demo");
  });

  test("SIGTERM stops both roles: exit 0, databases closed, every port free again", async () => {
    const code = await first.stop("SIGTERM");
    assert.equal(code, 0, first.stderr);
    assert.match(first.stderr, /authnexus dev: stopped\n/);
    for (const [name, port] of Object.entries(ports)) assert.equal(await canConnect(port), false, `${name} port ${port} is closed`);
    // SQLite removes the write-ahead log when the last connection closes cleanly.
    for (const db of ["control.db", "runtime.db"]) {
      assert.ok(existsSync(join(dir, db)), db);
      assert.equal(existsSync(join(dir, `${db}-wal`)), false, `${db} was closed`);
    }
    assert.equal(existsSync(join(dir, "dev.pid")), false, "the folder's lock is released");
    assert.match(readFileSync(join(dir, "logs", "cp.log"), "utf8"), /"msg":"shutdown.completed"/);
  });

  test("a rerun reuses the folder: same credentials, application, node and user, nothing duplicated", async () => {
    // Any free ports this time: the node and the SDK configuration follow them.
    rerun = startDev(["--admin-port", "0", "--cp-port", "0", "--ocsp-port", "0", "--business-port", "0", "--health-port", "0"]);
    rerunSummary = await waitForSummary(rerun);
    const s = rerunSummary;
    assert.match(rerun.stderr, /reusing the development deployment/);
    assert.doesNotMatch(rerun.stderr, /first-run setup|onboarding/);
    assert.equal(s.adminPassword, firstSummary.adminPassword);
    assert.equal(s.appId, firstSummary.appId);
    assert.equal(s.appSecret, firstSummary.appSecret);
    assert.equal(s.nodeId, firstSummary.nodeId);
    assert.equal(s.userId, firstSummary.userId);
    assert.equal(s.userPassword, firstSummary.userPassword);
    assert.doesNotMatch(rerun.stdout, /warning:/);

    const login = await adminLogin(s, "root", firstSummary.adminPassword);
    assert.equal(login.status, 200, "the first run's admin password works");
    const token = login.json.access_token as string;
    assert.equal((await adminGet(s, token, "/nodes")).total, 1, "one node");
    assert.equal((await adminGet(s, token, "/applications")).total, 1, "one application");
    assert.equal((await adminGet(s, token, `/applications/${s.appId}/users`)).total, 1, "one user");
    const config = JSON.parse(readFileSync(s.sdkConfigPath, "utf8"));
    assert.deepEqual(config.nodes, [s.business], "the SDK configuration names the new business port");
    const result = await rawLogin(s);
    assert.equal(result.answers[1]?.name, "auth_ok", JSON.stringify(result.answers));
  });

  test("the printed SDK snippet logs the demo user in", {
    todo: SDK_MISSING ? "src/sdk is not there yet: the snippet has no SDK to import" : false,
  }, async () => {
    const run = await runProcess("bash", ["-c", rerunSummary.snippet], { cwd: work.path, timeoutMs: 30_000 });
    assert.equal(run.code, 0, `snippet failed:\n${run.stderr}`);
    assert.equal(run.stdout.trim(), `logged in as demo (${rerunSummary.userId})`);
  });

  test("SIGINT stops it too", async () => {
    assert.equal(await rerun.stop("SIGINT"), 0, rerun.stderr);
    assert.equal(await canConnect(rerunSummary.business.port), false);
    assert.equal(existsSync(join(dir, "dev.pid")), false);
  });

  test("a taken port is one clear line and exit 1, before anything starts", async () => {
    for (const [name, flag] of [
      ["admin", "--admin-port"],
      ["business", "--business-port"],
    ] as const) {
      const blocker = await occupy(ports[name]);
      try {
        const started = Date.now();
        const run = await runCli(["dev", "--dir", dir, ...portArgs()], { timeoutMs: 30_000 });
        assert.equal(run.code, 1, run.stderr);
        assert.ok(Date.now() - started < 15_000, "no hang");
        assert.equal(
          run.stderr,
          `authnexus: port ${ports[name]} on 127.0.0.1 is already in use (${name === "admin" ? "admin API" : "node business port"}): choose another with ${flag} <port>, or 0 for a free one\n`,
        );
        assert.equal(run.stdout, "");
      } finally {
        await new Promise((resolve) => blocker.close(resolve));
      }
      for (const [other, port] of Object.entries(ports)) {
        if (other !== name) assert.equal(await canConnect(port), false, `${other} port ${port} is not left bound`);
      }
    }
    assert.equal(existsSync(join(dir, "dev.pid")), false);
  });

  test("a start killed half-way leaves a folder the next start completes", async () => {
    const killedDir = join(work.path, "killed");
    const killed = spawnAuthnexus(["dev", "--dir", killedDir, ...portArgs()]);
    processes.push(killed);
    await killed.waitForStderr(/onboarding the node/, START_TIMEOUT_MS);
    await killed.stop("SIGKILL");
    const state = JSON.parse(readFileSync(join(killedDir, "dev-state.json"), "utf8"));
    assert.ok(state.admin.password, "the admin password was saved before setup");

    const next = spawnAuthnexus(["dev", "--dir", killedDir, ...portArgs()]);
    processes.push(next);
    const s = await waitForSummary(next);
    assert.equal(s.adminPassword, state.admin.password);
    const login = await adminLogin(s, "root", s.adminPassword);
    assert.equal(login.status, 200);
    const token = login.json.access_token as string;
    assert.equal((await adminGet(s, token, "/nodes")).total, 1, "one node");
    assert.equal((await adminGet(s, token, "/applications")).total, 1, "one application");
    assert.equal((await rawLogin(s)).answers[1]?.name, "auth_ok");
    assert.equal(await next.stop("SIGTERM"), 0);
  });

  test("a folder it did not make is refused, untouched", async () => {
    const foreign = join(work.path, "foreign");
    await runProcess("mkdir", ["-p", foreign]);
    writeFileSync(join(foreign, "notes.txt"), "mine\n");
    const run = await runCli(["dev", "--dir", foreign, ...portArgs()], { timeoutMs: 30_000 });
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^authnexus: .*foreign is not empty and holds no dev-state\.json/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
    assert.equal(existsSync(join(foreign, "control.db")), false);
  });
});
