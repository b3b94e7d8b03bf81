/**
 * Node onboarding end to end, as an operator lives it, with REAL processes: `authnexus serve-cp`
 * and `authnexus serve-node` are children spawned from the built CLI (bin/authnexus → dist/, so
 * run `npm run build` first); the deploy package is fetched with curl and unpacked with tar; the
 * node API and the OCSP responder are probed with curl and `openssl ocsp`. SQLite only: the node
 * shares the CP's Runtime DB file, as on one host (the PostgreSQL path is covered in process by
 * test/integration/node-agent.test.ts).
 *
 * Timing: the CP's cp_agent_runtime is set before the node exists. Phase 1 keeps EVERY healthy
 * poll and the checkin at 10 minutes, so a change that reaches the node within seconds can only
 * have come through its SSE hint and the matching pull (a checkin would also wake a pull when it
 * sees a head ahead of a cursor — with no checkin running, that path is closed). Phase 2 switches
 * to a 500 ms checkin (itself a config change delivered by hint) for the failure modes, where the
 * node must notice a missing CP quickly. Every propagation time is measured and printed as a test
 * diagnostic.
 *
 * Tests run in order and build on each other. Needs `openssl`, `curl` and `tar` on PATH.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import Database from "better-sqlite3";
import { type AdminResponse, type CliResult, type CpProcess, runProcess, startCpProcess } from "../helpers/cp-process.js";
import { waitFor } from "../helpers/node-agent.js";
import { canConnect, freePort, type NodeProcess, startNodeProcess } from "../helpers/node-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

// ---------------------------------------------------------------------------------------------
// Timing

/** Healthy polls (and, in phase 1, the checkin): so slow that only an SSE hint explains a fast delivery. */
const SLOW_MS = 600_000;
const PHASE1_RUNTIME = {
  checkin_interval_ms: SLOW_MS,
  epoch_poll_ms: SLOW_MS,
  blacklist_poll_ms: SLOW_MS,
  command_poll_ms: SLOW_MS,
  config_poll_ms: SLOW_MS,
  degraded_epoch_poll_ms: 800,
  degraded_blacklist_poll_ms: 2000,
  ocsp_refresh_ms: 1000,
  backoff_base_ms: 100,
  backoff_max_ms: 1000,
  request_timeout_ms: 2000,
};
/** Phase 2: a node that notices a missing CP within a second. */
const PHASE2_RUNTIME = { ...PHASE1_RUNTIME, checkin_interval_ms: 500 };
/** A hint-driven change must arrive well inside this (the polls it could otherwise ride on are 10 minutes). */
const PROPAGATION_LIMIT_MS = 5000;

// ---------------------------------------------------------------------------------------------
// Small tools

function assertStatus(res: AdminResponse, status: number): void {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
}

function runTool(file: string, args: string[], options: { cwd?: string; input?: string } = {}): Promise<CliResult> {
  return runProcess(file, args, { timeoutMs: 15_000, ...options });
}

/** The `loops`, `cursors`, … of /status are plain JSON; a few typed accessors keep the tests readable. */
type NodeStatus = Record<string, any>;

function configVersion(status: NodeStatus, type: string, scope = "global"): number | null {
  const item = (status.configs as { type: string; scope: string; version: number }[] | undefined)?.find(
    (c) => c.type === type && c.scope === scope,
  );
  return item?.version ?? null;
}

function openReadOnly(file: string): Database.Database {
  return new Database(file, { readonly: true, fileMustExist: true });
}

// ---------------------------------------------------------------------------------------------

describe("node onboarding end to end: serve-cp + serve-node as real processes (sqlite)", () => {
  const suffix = randomBytes(6).toString("hex");
  const ROOT_PASSWORD = `S3cure-${suffix}-Pw!`;
  const MASTER_KEY = randomBytes(32).toString("hex");

  let dataDir: TempDir;
  let workDir: TempDir;
  let cpPort = 0;
  let ocspPort = 0;
  let healthPort = 0;
  let cpArgs: string[] = [];
  let cp: CpProcess;
  let node: NodeProcess;
  const cps: CpProcess[] = [];
  const nodes: NodeProcess[] = [];
  let token = "";
  let nodeId = "";
  let otherNodeId = "";
  let pkgDir = "";
  const timings: string[] = [];
  let phase1CheckinRuns = 0;
  const pkgFile = (relative: string) => join(pkgDir, relative);

  const startCp = async () => {
    const started = await startCpProcess({ dataDir: dataDir.path, extraArgs: cpArgs, env: { AUTHNEXUS_MASTER_KEY: MASTER_KEY } });
    cps.push(started);
    return started;
  };
  const startNode = async () => {
    const started = await startNodeProcess({
      agentFile: pkgFile("node_agent.json"),
      dataDir: dataDir.path,
      healthPort,
      extraArgs: ["--log-level", "debug"],
    });
    nodes.push(started);
    return started;
  };
  const login = async () => {
    const res = await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: ROOT_PASSWORD } });
    assertStatus(res, 200);
    token = res.json.access_token as string;
  };
  /** An admin call that must succeed; returns the parsed body. */
  const admin = async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await cp.adminFetch(method, `/admin/v1${path}`, { token, ...(body === undefined ? {} : { body }) });
    assert.ok(res.status >= 200 && res.status < 300, `${method} ${path} → ${res.status} ${res.text}`);
    return res.json;
  };
  const status = async (): Promise<NodeStatus> => {
    const res = await node.health("/status");
    assert.equal(res.status, 200, `/status → ${res.status} ${JSON.stringify(res.json)}`);
    return res.json as NodeStatus;
  };
  const nodeView = () => admin("GET", `/nodes/${nodeId}`);
  const configState = async (type: string) => {
    const states = await admin("GET", `/nodes/${nodeId}/configs`);
    return (states.items as { type: string; scope: string; state: string; applied_version: number | null; latest_version: number }[]).find(
      (i) => i.type === type && i.scope === "global",
    );
  };
  const commandResult = async (commandId: string, forNode = nodeId) => {
    const view = await admin("GET", `/commands/${commandId}`);
    return (view.results as { node_id: string; status: string; output: unknown; reported_at: number | null }[]).find(
      (r) => r.node_id === forNode,
    );
  };
  /** Records and prints one measured time. */
  const record = (t: TestContext, what: string, ms: number) => {
    const line = `${what}: ${Math.round(ms)} ms`;
    timings.push(line);
    t.diagnostic(line);
  };
  /** The node logged the SSE hint `event` at or after log index `from`. */
  const hintSeen = async (from: number, event: string) =>
    Boolean(await node.waitForEvent((e, i) => i >= from && e.category === "SSE" && e.msg === "sse.hint" && e.event === event, 3000));
  /**
   * A node log line matching `predicate` at or after index `from`. Log lines and health
   * answers travel on different pipes, so a line may be parsed a moment after /status shows
   * its effect: wait for it rather than look once.
   */
  const logged = (from: number, predicate: (e: Record<string, unknown>) => boolean) =>
    node.waitForEvent((e, i) => i >= from && predicate(e), 3000);
  /** The curl arguments every node-API probe shares: the CP's name resolved to the loopback, trust in cp_server_ca only. */
  const curlBase = () => [
    "-sS",
    "--resolve",
    `localhost:${cpPort}:127.0.0.1`,
    "--cacert",
    pkgFile("tls/cp_server_ca.pem"),
    "-w",
    "\nHTTP_CODE=%{http_code}",
  ];
  const curlJson = (out: CliResult) => {
    const body = out.stdout.slice(0, out.stdout.lastIndexOf("\nHTTP_CODE="));
    return { code: Number(/HTTP_CODE=(\d+)/.exec(out.stdout)?.[1] ?? 0), json: JSON.parse(body) as Record<string, unknown> };
  };
  const ocspCheck = async () => {
    const out = await runTool(
      "openssl",
      [
        "ocsp",
        "-issuer",
        "tcp_server_ca.pem",
        "-cert",
        "node_server.pem",
        "-url",
        `http://127.0.0.1:${ocspPort}/ocsp/`,
        "-CAfile",
        "tcp_server_ca.pem",
      ],
      { cwd: pkgFile("tls") },
    );
    assert.equal(out.code, 0, `openssl ocsp exit ${out.code}:\n${out.stdout}\n${out.stderr}`);
    return `${out.stdout}\n${out.stderr}`;
  };

  before(async () => {
    dataDir = await makeTempDir("authnexus-e2e-node-data");
    workDir = await makeTempDir("authnexus-e2e-node-work");
    cpPort = await freePort();
    ocspPort = await freePort();
    healthPort = await freePort();
    assert.equal(new Set([cpPort, ocspPort, healthPort]).size, 3, "three distinct ports");
    // The package records these URLs, so the restarted CP must come back on the same ports.
    cpArgs = [
      "--cp-listen",
      `127.0.0.1:${cpPort}`,
      "--public-cp-url",
      `https://localhost:${cpPort}`,
      "--ocsp-listen",
      `127.0.0.1:${ocspPort}`,
      "--public-ocsp-url",
      `http://127.0.0.1:${ocspPort}/ocsp/`,
    ];
    cp = await startCp();
  });

  after(async () => {
    await Promise.all([...nodes, ...cps].map((p) => p.stop("SIGTERM")));
    await dataDir?.cleanup();
    await workDir?.cleanup();
  });

  after(() => {
    if (timings.length > 0) process.stderr.write(`\n[node-onboarding] measured:\n  ${timings.join("\n  ")}\n`);
  });

  test("setup with the console token from stderr, root login, and the agent timing set before any node exists", async () => {
    const banner = await cp.waitForStderr(/Console token: (\S+)/);
    const init = await cp.adminFetch("POST", "/admin/v1/setup/initialize", {
      body: { console_token: banner[1], admin_username: "root", admin_password: ROOT_PASSWORD },
    });
    assertStatus(init, 201);
    assert.equal(await cp.waitForListener("node-api"), `127.0.0.1:${cpPort}`);
    assert.equal(await cp.waitForListener("ocsp"), `127.0.0.1:${ocspPort}`);
    await login();

    const saved = await admin("PUT", "/configs/cp_agent_runtime", { content: PHASE1_RUNTIME });
    assert.equal(saved.version, 1);
    const latest = await admin("GET", "/configs/cp_agent_runtime");
    assert.equal(latest.content.checkin_interval_ms, SLOW_MS);
    assert.equal(latest.content.ocsp_refresh_ms, 1000);
  });

  test("create a node → NodeOnboard job → deploy package: downloaded with curl, unpacked with tar, keys 0600", async (tc) => {
    const created = await admin("POST", "/nodes", { name: "edge-1", host: "127.0.0.1", business_port: 18443 });
    nodeId = created.id as string;
    assert.match(nodeId, /^[A-Za-z0-9_-]+$/);
    const other = await admin("POST", "/nodes", { name: "edge-2", host: "127.0.0.1", business_port: 18444 });
    otherNodeId = other.id as string;

    const started = performance.now();
    const provisioned = await waitFor(
      "onboarding job succeeded and a current package",
      async () => {
        const view = await nodeView();
        return view.lifecycle_status === "active" && view.current_package ? view : null;
      },
      20_000,
      100,
    );
    record(tc, "onboarding job (node created → package ready)", performance.now() - started);
    assert.equal(provisioned.onboarding_job?.status, "succeeded");
    assert.equal(provisioned.status, "offline", "provisioned, never checked in");
    assert.equal(provisioned.certificates.server?.status, "valid");
    assert.equal(provisioned.certificates.client?.status, "valid");

    const packages = await admin("GET", `/nodes/${nodeId}/deploy-packages`);
    const current = (packages.items as { id: string; current: boolean; sha256: string }[]).find((p) => p.current);
    assert.ok(current, JSON.stringify(packages));

    // curl, a client independent of this code base, downloads it.
    const archive = join(workDir.path, "pkg.tar.gz");
    const headers = join(workDir.path, "pkg.headers");
    const url = `${cp.adminUrl}/admin/v1/nodes/${nodeId}/deploy-packages/${current.id}/download`;
    const curl = await runTool("curl", ["-sS", "-f", "-o", archive, "-D", headers, "-H", `authorization: Bearer ${token}`, url]);
    assert.equal(curl.code, 0, `curl download: ${curl.stderr}`);
    const bytes = readFileSync(archive);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    assert.equal(sha256, current.sha256, "the bytes are the package the CP lists");
    assert.match(readFileSync(headers, "utf8"), new RegExp(`x-package-sha256: ${sha256}`, "i"));
    assert.match(readFileSync(headers, "utf8"), /content-type: application\/gzip/i);

    // The modes stored in the archive itself, then what tar made of them.
    const listing = await runTool("tar", ["-tvzf", archive]);
    assert.equal(listing.code, 0, listing.stderr);
    for (const secret of ["tls/node_client.key", "tls/node_server.key", "secrets/password_hash.key"]) {
      assert.match(
        listing.stdout,
        new RegExp(`^-rw------- .* ${secret.replace(/[./]/g, "\\$&")}$`, "m"),
        `archive mode of ${secret}:\n${listing.stdout}`,
      );
    }
    pkgDir = join(workDir.path, "pkg");
    mkdirSync(pkgDir);
    const untar = await runTool("tar", ["-xzf", archive, "-C", pkgDir]);
    assert.equal(untar.code, 0, untar.stderr);

    const manifest = JSON.parse(readFileSync(pkgFile("node_agent.json"), "utf8"));
    assert.equal(manifest.node_id, nodeId);
    assert.equal(manifest.cp_url, `https://localhost:${cpPort}`, "the public CP URL given to serve-cp");
    assert.equal(manifest.ocsp_url, `http://127.0.0.1:${ocspPort}/ocsp/`);
    assert.deepEqual(manifest.business, { host: "127.0.0.1", port: 18443 });
    for (const [key, relative] of Object.entries(manifest.files as Record<string, string>)) {
      const mode = statSync(pkgFile(relative)).mode & 0o777;
      if (key.endsWith("_key")) assert.equal(mode, 0o600, `${relative} (${key}) must be 0600, is ${mode.toString(8)}`);
      else assert.equal(mode & 0o022, 0, `${relative} must not be group/world writable, is ${mode.toString(8)}`);
    }
    assert.equal(statSync(pkgFile("secrets/password_hash.key")).mode & 0o777, 0o600);
  });

  test("serve-node on the package: staged startup to ready; the CP shows it online with SSE connected, a checkin and the OCSP time", async (tc) => {
    const started = performance.now();
    node = await startNode();
    const ready = await waitFor("/readyz 200", async () => (await node.health("/readyz")).status === 200, 30_000, 50);
    assert.ok(ready);
    record(tc, "serve-node spawn → /readyz 200", performance.now() - started);
    const readyEvent = await node.waitForEvent((e) => e.msg === "node.ready");
    record(tc, "  of which staged startup inside serve-node (node.ready startup_ms)", Number(readyEvent.startup_ms));
    const entered = node.events
      .filter((e) => e.msg === "stage.entered")
      .map((e) => ({ stage: String(e.stage), at: Date.parse(String(e.ts)) }));
    tc.diagnostic(
      `stages: ${entered.map((s, i) => `${s.stage} ${i + 1 < entered.length ? `${(entered[i + 1]?.at ?? s.at) - s.at} ms` : ""}`).join(", ")}`,
    );
    const stages = node.events.filter((e) => e.msg === "stage.entered").map((e) => e.stage);
    assert.deepEqual(stages, ["load_package", "open_db", "connect_cp", "initial_configs", "first_ocsp", "ready"]);
    assert.equal((await node.health("/healthz")).status, 200);
    assert.deepEqual((await node.health("/readyz")).json, { ready: true, stage: "ready" });
    assert.ok(!node.events.some((e) => e.msg === "package.insecure_file"), "tar kept the key modes: no insecure-file warning");

    const s = await status();
    assert.equal(s.node_id, nodeId);
    assert.equal(s.stage, "ready");
    assert.equal(s.ocsp.status, "good");
    assert.ok(s.ocsp.fetched_at > 0);
    assert.equal(configVersion(s, "cp_agent_runtime"), 1, "the CP's agent timing is in force");
    await waitFor("SSE connected on the node", async () => (await status()).sse.state === "connected", 10_000);

    const view = await waitFor(
      "CP: online, SSE connected, checkin and OCSP recorded",
      async () => {
        const v = await nodeView();
        return v.status === "online" &&
          v.sse_connected === true &&
          typeof v.last_checkin_at === "number" &&
          typeof v.ocsp_last_applied_at === "number"
          ? v
          : null;
      },
      10_000,
      50,
    );
    assert.equal(view.lifecycle_status, "active");
    assert.equal(typeof view.software_version, "string");
    const overview = await admin("GET", "/nodes/overview");
    assert.equal(overview.total, 2);
    assert.equal(overview.by_status.online, 1, JSON.stringify(overview));
    assert.equal(overview.sse_connected, 1);
    assert.ok(!(overview.ocsp_stale.nodes as { id: string }[]).some((n) => n.id === nodeId), "its OCSP staple is fresh");
    const cpStates = await admin("GET", `/nodes/${nodeId}/configs`);
    assert.ok(
      (cpStates.items as { state: string }[]).every((i) => i.state === "SYNCED"),
      JSON.stringify(cpStates.items),
    );
    // The CP has the OCSP time, so the checkin sent on "ready" is done: from here on, phase 1
    // runs no checkin at all.
    // (The node counts a run once it has handled the response, a moment after the CP stored it.)
    phase1CheckinRuns = await waitFor(
      "the checkin of connect_cp and the one on ready counted",
      async () => {
        const runs = (await status()).loops.checkin.runs as number;
        return runs >= 2 ? runs : null;
      },
      5000,
      20,
    );
  });

  test("a config change reaches the node by its SSE hint and the config pull; the CP shows it SYNCED", async (tc) => {
    const from = node.events.length;
    const hintsBefore = (await status()).sse.hints_received as number;
    const started = performance.now();
    const saved = await admin("PUT", "/configs/server_runtime_settings", { content: { max_connections: 4321 } });
    const version = saved.version as number;
    await waitFor(
      "node applied server_runtime_settings",
      async () => configVersion(await status(), "server_runtime_settings") === version,
      PROPAGATION_LIMIT_MS,
      10,
    );
    const applied = performance.now() - started;
    await waitFor(
      "CP shows SYNCED",
      async () => {
        const item = await configState("server_runtime_settings");
        return item?.state === "SYNCED" && item.applied_version === version;
      },
      PROPAGATION_LIMIT_MS,
      10,
    );
    const synced = performance.now() - started;
    record(tc, "config (PUT → node applied)", applied);
    record(tc, "config (PUT → CP shows SYNCED)", synced);
    assert.ok(await hintSeen(from, "config.pending"), "the node received config.pending");
    assert.ok((await status()).sse.hints_received > hintsBefore);
    await logged(from, (e) => e.msg === "config.applied" && e.type === "server_runtime_settings" && e.version === version);
    await logged(from, (e) => e.msg === "config.acked");
  });

  test("a command reaches the node by its SSE hint and the command pull; the CP shows the node's result", async (tc) => {
    const from = node.events.length;
    const started = performance.now();
    const command = await admin("POST", `/nodes/${nodeId}/commands`, {
      kind: "announcement",
      payload: { message: "maintenance at 10:00" },
    });
    const result = await waitFor(
      "the node's result on the CP",
      async () => {
        const r = await commandResult(command.id);
        return r?.status === "succeeded" ? r : null;
      },
      PROPAGATION_LIMIT_MS,
      10,
    );
    record(tc, "command (POST → CP shows succeeded)", performance.now() - started);
    assert.deepEqual(result.output, { delivered: 0 }, "no business listener yet: it reached nobody, and says so");
    assert.ok(await hintSeen(from, "command.pending"), "the node received command.pending");
    await logged(from, (e) => e.msg === "command.executed" && e.command_id === command.id);
    const executed = node.events.filter((e) => e.msg === "command.executed" && e.command_id === command.id);
    assert.equal(executed.length, 1);
    assert.equal((await status()).cursors.commands, command.seq);
  });

  test("a blacklist entry reaches the node by its SSE hint and the delta pull (cursor and cache)", async (tc) => {
    const before = await status();
    const from = node.events.length;
    const started = performance.now();
    await admin("POST", "/security/blacklist", { kind: "ip", value: "203.0.113.7", reason: "credential stuffing" });
    const after = await waitFor(
      "blacklist cursor advanced and cached",
      async () => {
        const s = await status();
        return s.cursors.blacklist > before.cursors.blacklist && s.caches.blacklist_entries === before.caches.blacklist_entries + 1
          ? s
          : null;
      },
      PROPAGATION_LIMIT_MS,
      10,
    );
    record(tc, "blacklist entry (POST → node cursor/cache)", performance.now() - started);
    assert.ok(await hintSeen(from, "blacklist.changed"), "the node received blacklist.changed");
    assert.equal(after.cursors.blacklist, before.cursors.blacklist + 1);
  });

  test("an epoch bump reaches the node by its SSE hint and the delta pull; the Runtime DB holds the applied epoch", async (tc) => {
    const before = await status();
    const from = node.events.length;
    const started = performance.now();
    const change = await admin("POST", "/security/auth-epochs", { user_id: "usr_e2e_1" });
    await waitFor("epoch cursor advanced", async () => (await status()).cursors["auth-epochs"] >= change.id, PROPAGATION_LIMIT_MS, 10);
    record(tc, "epoch bump (POST → node cursor)", performance.now() - started);
    assert.ok(await hintSeen(from, "epoch.bumped"), "the node received epoch.bumped");
    const s = await status();
    assert.equal(s.cursors["auth-epochs"], change.id);
    assert.equal(s.caches.auth_epochs, before.caches.auth_epochs + 1);
    const db = openReadOnly(join(dataDir.path, "runtime.db"));
    try {
      const row = db.prepare("SELECT user_id, epoch, change_id FROM applied_auth_epochs WHERE user_id = ?").get("usr_e2e_1") as
        | { epoch: number; change_id: number }
        | undefined;
      assert.ok(row, "applied_auth_epochs has the user's row");
      assert.equal(row.epoch, change.epoch);
      assert.equal(row.change_id, change.id);
      const cursor = db.prepare("SELECT cursor FROM sync_cursors WHERE node_id = ? AND stream = 'auth-epochs'").get(nodeId) as
        | { cursor: number }
        | undefined;
      assert.equal(cursor?.cursor, change.id, "the cursor is persisted with the change");
    } finally {
      db.close();
    }
    // Still phase 1: not one checkin since the one sent on reaching "ready", so none of the
    // four deliveries above can have been woken by a checkin's heads — only by their hints.
    assert.equal(s.loops.checkin.runs, phase1CheckinRuns, "no checkin ran during the four deliveries");
  });

  test("curl with the node's package credentials: a bad checkin body is a 4xx JSON error, another node's path is 403, no client certificate fails the handshake", async () => {
    const checkinUrl = (id: string) => `https://localhost:${cpPort}/cp/v2/nodes/${id}/checkin`;
    const mine = ["--cert", pkgFile("tls/node_client.pem"), "--key", pkgFile("tls/node_client.key")];
    const lastCheckinBefore = (await nodeView()).last_checkin_at;

    const bad = await runTool("curl", [
      ...curlBase(),
      ...mine,
      "-X",
      "POST",
      "-H",
      "content-type: application/json",
      "--data",
      '{"software_version": 42}',
      checkinUrl(nodeId),
    ]);
    assert.equal(bad.code, 0, `curl with the node cert completes the exchange: ${bad.stderr}`);
    const badJson = curlJson(bad);
    assert.ok(badJson.code >= 400 && badJson.code < 500, `a 4xx: ${bad.stdout}`);
    assert.equal(typeof badJson.json.error, "string", bad.stdout);
    assert.notEqual(badJson.json.error, "NODE_IDENTITY_MISMATCH");
    const malformed = await runTool("curl", [
      ...curlBase(),
      ...mine,
      "-X",
      "POST",
      "-H",
      "content-type: application/json",
      "--data",
      "{not json",
      checkinUrl(nodeId),
    ]);
    assert.equal(curlJson(malformed).code, 400, malformed.stdout);
    assert.equal(curlJson(malformed).json.error, "MALFORMED_JSON", malformed.stdout);
    assert.equal((await nodeView()).last_checkin_at, lastCheckinBefore, "refused checkins store nothing");

    const cross = await runTool("curl", [
      ...curlBase(),
      ...mine,
      "-X",
      "POST",
      "-H",
      "content-type: application/json",
      "--data",
      "{}",
      checkinUrl(otherNodeId),
    ]);
    assert.equal(cross.code, 0, cross.stderr);
    const crossJson = curlJson(cross);
    assert.equal(crossJson.code, 403, cross.stdout);
    assert.equal(crossJson.json.error, "NODE_IDENTITY_MISMATCH");
    await cp.waitForEvent(
      (e) =>
        e.category === "Security" && e.msg === "node.auth_refused" && e.code === "NODE_IDENTITY_MISMATCH" && e.path_node_id === otherNodeId,
      5000,
    );
    assert.equal((await admin("GET", `/nodes/${otherNodeId}`)).last_checkin_at, null, "the other node was not checked in");

    const bare = await runTool("curl", [...curlBase(), "-X", "POST", "--data", "{}", checkinUrl(nodeId)]);
    assert.notEqual(bare.code, 0, `no client certificate must fail the handshake:\n${bare.stdout}\n${bare.stderr}`);
    assert.doesNotMatch(bare.stdout, /HTTP_CODE=[1-5]\d\d/);

    // The package's cp_server_ca is all it takes to verify the CP under its public name.
    const sClient = await runTool(
      "openssl",
      [
        "s_client",
        "-connect",
        `127.0.0.1:${cpPort}`,
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-CAfile",
        pkgFile("tls/cp_server_ca.pem"),
        "-cert",
        pkgFile("tls/node_client.pem"),
        "-key",
        pkgFile("tls/node_client.key"),
      ],
      { input: "" },
    );
    assert.match(sClient.stdout, /Verify return code: 0 \(ok\)/, sClient.stdout + sClient.stderr);
  });

  test("openssl ocsp: the node's server certificate is good; disabled → revoked (node staples it, stays up); enabled → good", async (tc) => {
    const good = await ocspCheck();
    assert.match(good, /Response verify OK/, good);
    assert.match(good, /node_server\.pem: good/, good);

    const started = performance.now();
    const disabled = await admin("POST", `/nodes/${nodeId}/disable`, {});
    assert.equal(disabled.status, "disabled");
    const revoked = await ocspCheck();
    assert.match(revoked, /Response verify OK/, revoked);
    assert.match(revoked, /node_server\.pem: revoked/, revoked);
    await waitFor("node /status OCSP revoked", async () => (await status()).ocsp.status === "revoked", 10_000, 20);
    record(tc, "disable → node's stapled OCSP status revoked", performance.now() - started);
    await logged(0, (e) => e.category === "TLS" && e.msg === "ocsp.revoked");
    assert.equal((await node.health("/healthz")).status, 200, "a revoked staple never shuts the node down");
    assert.equal((await status()).stage, "ready");

    await admin("POST", `/nodes/${nodeId}/enable`, {});
    const again = await ocspCheck();
    assert.match(again, /node_server\.pem: good/, again);
    await waitFor("node /status OCSP good again", async () => (await status()).ocsp.status === "good", 10_000, 20);
    assert.equal((await nodeView()).lifecycle_status, "active");
  });

  test("phase 2 timing by hint; CP stopped → the node keeps serving from cache and backs off; CP restarted on the same ports → it recovers and gets new changes", async (tc) => {
    const runtime = await admin("PUT", "/configs/cp_agent_runtime", { content: PHASE2_RUNTIME });
    await waitFor(
      "phase 2 timing applied",
      async () => configVersion(await status(), "cp_agent_runtime") === runtime.version,
      PROPAGATION_LIMIT_MS,
      20,
    );
    await waitFor("checkins every 500 ms", async () => (await status()).loops.checkin.runs >= 4, 10_000, 100);
    const cached = await status();
    assert.equal(cached.last_checkin.ok, true);
    assert.equal(cached.sse.state, "connected");

    const stoppedAt = performance.now();
    assert.equal(await cp.stop("SIGTERM"), 0, `CP exit code after SIGTERM\n${cp.stderr}`);
    const during = await waitFor(
      "node sees the CP gone: checkin failing, SSE degraded, OCSP fetch failing",
      async () => {
        const s = await status();
        return s.last_checkin?.ok === false && s.sse.state === "degraded" && s.ocsp.last_error !== null ? s : null;
      },
      10_000,
      50,
    );
    record(tc, "CP stopped → node reports checkin failing + SSE degraded + OCSP fetch failing", performance.now() - stoppedAt);
    assert.equal(during.stage, "ready");
    assert.equal(during.ocsp.status, "good", "the cached OCSP response is kept");
    assert.ok(during.ocsp.fetched_at >= cached.ocsp.fetched_at, "the last good fetch is kept");
    assert.deepEqual(during.caches, cached.caches, "cached security data kept");
    assert.deepEqual(during.cursors, cached.cursors, "cursors kept");
    assert.equal((await node.health("/healthz")).status, 200);
    assert.equal((await node.health("/readyz")).status, 200, "the node keeps serving");
    // Let a few retries happen, then check they back off within the configured bounds.
    await node.waitForEvent((e) => e.msg === "checkin.failed" && Number(e.attempt) >= 3, 10_000);
    const retries = node.events.filter((e) => e.msg === "checkin.failed").map((e) => Number(e.retry_in_ms));
    assert.ok(
      retries.every((ms) => ms >= PHASE2_RUNTIME.backoff_base_ms && ms <= PHASE2_RUNTIME.backoff_max_ms),
      `retry delays within backoff bounds: ${retries}`,
    );
    await logged(0, (e) => e.category === "SSE" && e.msg === "degraded");
    await logged(0, (e) => e.msg === "ocsp.fetch_failed");

    const restartAt = performance.now();
    cp = await startCp();
    assert.equal(await cp.waitForListener("node-api"), `127.0.0.1:${cpPort}`);
    assert.equal(await cp.waitForListener("ocsp"), `127.0.0.1:${ocspPort}`);
    await login();
    const back = await waitFor(
      "node recovered: SSE connected, checkin ok, OCSP ok",
      async () => {
        const s = await status();
        return s.sse.state === "connected" && s.last_checkin?.ok === true && s.ocsp.last_error === null ? s : null;
      },
      15_000,
      50,
    );
    record(tc, "CP restart → node fully recovered", performance.now() - restartAt);
    assert.ok(back.sse.reconnects >= 1);
    await waitFor(
      "CP shows it online with SSE",
      async () => {
        const v = await nodeView();
        return v.status === "online" && v.sse_connected === true;
      },
      10_000,
      50,
    );

    const started = performance.now();
    await admin("POST", "/security/blacklist", { kind: "device", value: "dev-after-restart", reason: "test" });
    await waitFor(
      "new entry on the node",
      async () => (await status()).caches.blacklist_entries === cached.caches.blacklist_entries + 1,
      PROPAGATION_LIMIT_MS,
      10,
    );
    record(tc, "blacklist entry after CP restart (POST → node cache)", performance.now() - started);
  });

  test("node offline while changes pile up: restarted, its persisted cursors catch up to the heads, nothing missed, the command reported once", async () => {
    const beforeStop = await status();
    const firstNode = node;
    assert.equal(await node.stop("SIGTERM"), 0, `node exit code after SIGTERM\n${node.stderr}`);
    assert.equal(await canConnect(healthPort), false, "health listener closed");

    const entries: string[] = [];
    for (let i = 1; i <= 6; i++)
      entries.push(
        (await admin("POST", "/security/blacklist", { kind: "ip", value: `198.51.100.${i}`, reason: "while offline" })).id as string,
      );
    const removed = entries[0] as string;
    await admin("DELETE", `/security/blacklist/${removed}`);
    const bumps: { id: number; epoch: number }[] = [];
    for (let i = 0; i < 3; i++) bumps.push(await admin("POST", "/security/auth-epochs", { user_id: "usr_e2e_offline" }));
    await admin("POST", "/security/auth-epochs", { user_id: "usr_e2e_other" });
    const command = await admin("POST", `/nodes/${nodeId}/commands`, { kind: "kill_process", payload: { reason: "while offline" } });

    const control = openReadOnly(join(dataDir.path, "control.db"));
    let heads: { blacklist: number; epochs: number };
    try {
      heads = {
        blacklist: (control.prepare("SELECT max(id) AS head FROM server_blacklist_changes").get() as { head: number }).head,
        epochs: (control.prepare("SELECT max(id) AS head FROM auth_epoch_changes").get() as { head: number }).head,
      };
    } finally {
      control.close();
    }
    assert.equal(heads.blacklist, beforeStop.cursors.blacklist + 7, "6 adds + 1 removal while offline");
    assert.equal(heads.epochs, beforeStop.cursors["auth-epochs"] + 4);

    node = await startNode();
    await waitFor("/readyz 200 after restart", async () => (await node.health("/readyz")).status === 200, 30_000, 50);
    const loaded = await node.waitForEvent((e) => e.msg === "state.loaded");
    assert.deepEqual(loaded.cursors, beforeStop.cursors, "resumed from the cursors persisted in the Runtime DB");
    const caughtUp = await waitFor(
      "cursors at the heads",
      async () => {
        const s = await status();
        return s.cursors.blacklist === heads.blacklist && s.cursors["auth-epochs"] === heads.epochs && s.cursors.commands >= command.seq
          ? s
          : null;
      },
      10_000,
      20,
    );
    assert.equal(caughtUp.caches.blacklist_entries, beforeStop.caches.blacklist_entries + 5, "5 new entries (6 added, 1 removed)");
    const firstPull = await logged(0, (e) => e.msg === "delta.applied" && e.stream === "blacklist");
    assert.equal(firstPull?.from_cursor, beforeStop.cursors.blacklist, "pulled from the persisted cursor, not from 0");
    assert.ok(!node.events.some((e) => e.msg === "delta.cursor_expired" || e.msg === "delta.replayed"));

    const runtimeDb = openReadOnly(join(dataDir.path, "runtime.db"));
    try {
      const applied = new Set(
        (runtimeDb.prepare("SELECT entry_id FROM applied_blacklist").all() as { entry_id: string }[]).map((r) => r.entry_id),
      );
      for (const id of entries.slice(1)) assert.ok(applied.has(id), `applied_blacklist has ${id}`);
      assert.ok(!applied.has(removed), "the entry removed while offline is gone");
      const newest = Math.max(...bumps.map((b) => b.epoch));
      const row = runtimeDb.prepare("SELECT epoch, change_id FROM applied_auth_epochs WHERE user_id = ?").get("usr_e2e_offline") as {
        epoch: number;
        change_id: number;
      };
      assert.equal(row.epoch, newest, "the newest epoch, not an intermediate one");
      assert.ok(runtimeDb.prepare("SELECT 1 FROM applied_auth_epochs WHERE user_id = ?").get("usr_e2e_other"));
    } finally {
      runtimeDb.close();
    }

    const result = await waitFor(
      "the command's result on the CP",
      async () => {
        const r = await commandResult(command.id);
        return r?.status === "succeeded" ? r : null;
      },
      10_000,
      20,
    );
    assert.ok(result.reported_at);
    // Give any duplicate delivery a checkin round or two to show up before counting.
    await waitFor("two more checkins", async () => (await status()).loops.checkin.runs >= 4, 10_000, 100);
    const executions = [...firstNode.events, ...node.events].filter((e) => e.msg === "command.executed" && e.command_id === command.id);
    assert.equal(executions.length, 1, "run and reported exactly once");
    assert.ok(
      !node.events.some((e) => e.msg === "command.executed" && e.command_id !== command.id),
      "nothing from before the stop runs again",
    );
    assert.ok(!node.events.some((e) => e.msg === "command.result_refused"));
    assert.equal((await commandResult(command.id))?.reported_at, result.reported_at, "one result, never rewritten");
  });

  test("graceful stop: SIGTERM → exit 0 for the node and the CP, nothing left listening", async () => {
    const adminPort = Number(new URL(cp.adminUrl).port);
    assert.equal(await node.stop("SIGTERM"), 0, `node exit code\n${node.stderr}`);
    assert.ok(node.events.some((e) => e.msg === "shutdown.completed"));
    assert.equal(await cp.stop("SIGTERM"), 0, `CP exit code\n${cp.stderr}`);
    assert.ok(cp.events.some((e) => e.msg === "shutdown.completed"));
    for (const [name, port] of [
      ["node health", healthPort],
      ["CP admin", adminPort],
      ["CP node API", cpPort],
      ["CP OCSP", ocspPort],
    ] as const) {
      assert.equal(await canConnect(port), false, `${name} (${port}) still accepts connections`);
    }
    // Nothing secret from the package ever reached a log.
    const secrets = ["tls/node_client.key", "tls/node_server.key", "secrets/password_hash.key"].map((f) => {
      const text = readFileSync(pkgFile(f), "utf8").trim();
      // The base64 body of a PEM key, or the raw secret.
      return text
        .replace(/-----[^-]+-----/g, "")
        .replace(/\s+/g, "")
        .slice(0, 40);
    });
    const output = [...nodes, ...cps].map((p) => `${p.stdout}\n${p.stderr}`).join("\n");
    for (const secret of secrets) {
      assert.ok(secret.length >= 32, "a real secret to look for");
      assert.ok(!output.includes(secret), "no key material in any log");
    }
    assert.ok(!output.includes(token), "no admin token in any log");

    assert.deepEqual(
      [...nodes, ...cps].map((p) => p.exitCode),
      [...nodes, ...cps].map(() => 0),
      "every process exited 0",
    );
  });
});
