/**
 * `authnexus serve-cp` end to end, as an operator meets it: the built CLI as a child process,
 * real listeners on 127.0.0.1 (port 0), the admin API over HTTP, the node API over mTLS (probed
 * with node:tls, curl and openssl s_client), the OCSP responder (probed with `openssl ocsp`),
 * graceful shutdown and restart on the same data, and no secret in any log line.
 *
 * One describe per database variant: SQLite always; PostgreSQL (two fresh databases, Control
 * and Runtime) when test/run-tests.ts started one. Tests inside a describe run in order and
 * build on each other (setup → accounts → TLS → restart → revocation).
 *
 * Needs `npm run build` first (bin/authnexus runs dist/), plus `openssl` and `curl` on PATH.
 */
import assert from "node:assert/strict";
import { randomBytes, X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import https from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import type { Kysely } from "kysely";
import { loadActiveCa } from "../../src/cp/services/pki/inventory.js";
import type { DbOptions } from "../../src/shared/config/db-options.js";
import { type ControlSchema, openDatabase } from "../../src/shared/db/index.js";
import { issueLeafCertificate, nodeUri, parseMasterKey } from "../../src/shared/pki/index.js";
import { systemClock } from "../../src/shared/time/index.js";
import {
  type AdminResponse,
  type CliResult,
  type CpEvent,
  type CpProcess,
  runCli,
  runProcess,
  startCpProcess,
} from "../helpers/cp-process.js";
import { dbFlags, dbVariants } from "../helpers/databases.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

// ---------------------------------------------------------------------------------------------
// Variants

interface Variant {
  name: "sqlite" | "postgres";
  skip: string | false;
  /** Creates the databases; returns the serve-cp flags that select them. */
  prepare(): Promise<string[]>;
  /** Where the Control DB is, for the one positive-control peek at the inventory. */
  controlDb(dataDir: string): DbOptions;
  cleanup(): Promise<void>;
}

function sqliteVariant(): Variant {
  return {
    name: "sqlite",
    skip: false,
    prepare: async () => [],
    controlDb: (dataDir) => ({ type: "sqlite", path: join(dataDir, "control.db"), busyTimeoutMs: 5000 }),
    cleanup: async () => {},
  };
}

function postgresVariant(): Variant {
  const postgres = dbVariants().find((v) => v.name === "postgres");
  if (!postgres) throw new Error("helpers/databases.ts has no postgres variant");
  let control: DbOptions | null = null;
  return {
    name: "postgres",
    skip: postgres.skip,
    async prepare() {
      control = await postgres.fresh("e2e_cp_control");
      const runtime = await postgres.fresh("e2e_cp_runtime");
      return [...dbFlags("", control), ...dbFlags("runtime-", runtime)];
    },
    controlDb() {
      if (!control) throw new Error("prepare() first");
      return control;
    },
    cleanup: () => postgres.cleanup(),
  };
}

// ---------------------------------------------------------------------------------------------
// Small tools

function assertError(res: AdminResponse, status: number, code: string): void {
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${res.text}`);
  assert.equal(res.json?.error, code, `expected error ${code}: ${res.text}`);
  assert.equal(typeof res.json?.message, "string", `error body has a message: ${res.text}`);
}

function assertStatus(res: AdminResponse, status: number): void {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
}

function countOccurrences(haystack: string, needle: string): number {
  let count = 0;
  for (let i = haystack.indexOf(needle); i >= 0; i = haystack.indexOf(needle, i + needle.length)) count++;
  return count;
}

function portOf(address: string): number {
  const port = Number(address.slice(address.lastIndexOf(":") + 1));
  assert.ok(Number.isInteger(port) && port > 0, `bad address ${address}`);
  return port;
}

/** Runs an external tool (openssl, curl); never throws on a non-zero exit. */
function runTool(file: string, args: string[], options: { input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  return runProcess(file, args, { timeoutMs: 15_000, ...options });
}

interface TlsProbe {
  secureConnected: boolean;
  authorized: boolean;
  protocol: string | null;
  peerFingerprint256: string | null;
  peerSubjectAltName: string | null;
  /** Application data received after sending a plain HTTP request. */
  received: string;
  error: NodeJS.ErrnoException | null;
}

/**
 * Connects, and once the handshake completes sends `GET /cp/v2/x HTTP/1.1`; resolves when the
 * connection closes with what was received. A connection that neither answers nor closes within
 * `timeoutMs` is a failure.
 */
function probeTls(port: number, options: tls.ConnectionOptions, timeoutMs = 8000): Promise<TlsProbe> {
  return new Promise((resolveProbe, reject) => {
    const result: TlsProbe = {
      secureConnected: false,
      authorized: false,
      protocol: null,
      peerFingerprint256: null,
      peerSubjectAltName: null,
      received: "",
      error: null,
    };
    const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ...options });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`TLS connection to ${port} neither answered nor closed within ${timeoutMs} ms: ${JSON.stringify(result)}`));
    }, timeoutMs);
    socket.setEncoding("utf8");
    socket.on("secureConnect", () => {
      result.secureConnected = true;
      result.authorized = socket.authorized;
      result.protocol = socket.getProtocol();
      const peer = socket.getPeerCertificate();
      result.peerFingerprint256 = peer?.fingerprint256 ?? null;
      result.peerSubjectAltName = peer?.subjectaltname ?? null;
      socket.write("GET /cp/v2/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    });
    socket.on("data", (chunk: string) => (result.received += chunk));
    socket.on("error", (error: NodeJS.ErrnoException) => (result.error ??= error));
    socket.on("close", () => {
      clearTimeout(timer);
      resolveProbe(result);
    });
  });
}

const HTTP_STATUS_LINE = /HTTP\/\d(\.\d)? \d{3}/;

// ---------------------------------------------------------------------------------------------
// The suite, once per variant

for (const variant of [sqliteVariant(), postgresVariant()]) {
  describe(`serve-cp end to end (${variant.name})`, { skip: variant.skip }, () => {
    if (variant.skip) return;

    // Unique per run, so "never appears in a log" cannot pass by accident of an old value.
    const suffix = randomBytes(6).toString("hex");
    const ROOT_USERNAME = "root";
    const ROOT_PASSWORD = `S3cure-${suffix}-Pw!`;
    const ADMIN = { username: "alice-admin", password: `Alice-${suffix}-Pw!` };
    const OPERATOR = { username: "oscar-ops", password: `Oscar-${suffix}-Pw!` };

    let dataDir: TempDir;
    let workDir: TempDir;
    let extraArgs: string[] = [];
    let cp: CpProcess;
    const processes: CpProcess[] = [];
    const cliOutputs: CliResult[] = [];
    /** Must never reach stdout (and, except the console token once, never stderr). */
    const secrets = new Map<string, string>();
    let consoleToken = "";
    let nodeApiPort = 0;
    let ocspPort = 0;
    let cpCertId = "";
    let servedFingerprint256 = "";
    const pem = (name: string) => join(workDir.path, name);

    const start = async () => {
      const started = await startCpProcess({ dataDir: dataDir.path, extraArgs });
      processes.push(started);
      return started;
    };

    const login = async (username: string, password: string) => {
      const res = await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username, password } });
      if (res.status === 200) {
        const n = secrets.size;
        secrets.set(`access token #${n} of ${username}`, String(res.json.access_token));
        secrets.set(`refresh token #${n} of ${username}`, String(res.json.refresh_token));
      }
      return res;
    };

    const rootToken = async () => {
      const res = await login(ROOT_USERNAME, ROOT_PASSWORD);
      assertStatus(res, 200);
      return res.json.access_token as string;
    };

    before(async () => {
      dataDir = await makeTempDir(`authnexus-e2e-${variant.name}-data`);
      workDir = await makeTempDir(`authnexus-e2e-${variant.name}-work`);
      secrets.set("root password", ROOT_PASSWORD);
      secrets.set("admin password", ADMIN.password);
      secrets.set("operator password", OPERATOR.password);
      extraArgs = await variant.prepare();
      cp = await start();
    });

    after(async () => {
      await Promise.all(processes.map((p) => p.stop("SIGTERM")));
      await dataDir?.cleanup();
      await workDir?.cleanup();
      await variant.cleanup();
    });

    test("setup-only mode: only /admin/v1/setup/* answers, node and OCSP listeners unbound, console token in a 0600 file and once on stderr", async () => {
      // The token banner is printed after startControlPlane returned, i.e. after anything it
      // would bind: a safe point to assert what was (not) bound.
      const banner = await cp.waitForStderr(/Console token: (\S+)/);
      const printed = banner[1] ?? "";

      const status = await cp.adminFetch("GET", "/admin/v1/setup/status");
      assertStatus(status, 200);
      assert.deepEqual(status.json, { requires_setup: true });

      assertError(await cp.adminFetch("GET", "/admin/v1/applications"), 503, "SETUP_REQUIRED");
      assertError(await cp.adminFetch("GET", "/admin/v1/pki/cas"), 503, "SETUP_REQUIRED");
      assertError(
        await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: ROOT_USERNAME, password: ROOT_PASSWORD } }),
        503,
        "SETUP_REQUIRED",
      );

      const bound = cp.events.filter((e) => e.msg === "listener.bound").map((e) => e.listener);
      assert.deepEqual(bound, ["admin"], "only the admin listener is bound before setup");

      const tokenFile = join(dataDir.path, "console-token");
      assert.ok(existsSync(tokenFile), "console-token file exists");
      assert.equal(statSync(tokenFile).mode & 0o777, 0o600, "console-token has mode 0600");
      consoleToken = readFileSync(tokenFile, "utf8").trim();
      assert.match(consoleToken, /^[A-Za-z0-9_-]{32,}$/);
      secrets.set("console token", consoleToken);
      assert.equal(printed, consoleToken, "the token on stderr is the one in the file");
      assert.equal(countOccurrences(cp.stderr, consoleToken), 1, "the token is printed exactly once on stderr");
      const leaking = cp.stdout.split("\n").filter((line) => line.includes(consoleToken));
      assert.deepEqual(leaking, [], "no stdout log line contains the console token");
    });

    test("setup refuses a wrong token (403, Setup log), malformed JSON (400) and weak passwords (400), and stays pending", async () => {
      const wrongToken = randomBytes(32).toString("base64url");
      secrets.set("wrong console token", wrongToken);
      const before = cp.events.length;
      const wrong = await cp.adminFetch("POST", "/admin/v1/setup/initialize", {
        body: { console_token: wrongToken, admin_username: ROOT_USERNAME, admin_password: ROOT_PASSWORD },
      });
      assertError(wrong, 403, "SETUP_TOKEN_INVALID");
      const logged = await cp.waitForEvent((e, i) => i >= before && e.category === "Setup", 5000);
      assert.ok(logged.level === "warn" || logged.level === "error", `a refused token is a warning: ${JSON.stringify(logged)}`);

      const malformed = await cp.adminFetch("POST", "/admin/v1/setup/initialize", { body: `{"console_token": "${consoleToken}", ` });
      assertError(malformed, 400, "MALFORMED_JSON");

      for (const weak of ["Sh0rt!pw", "aaaaaaaaaaaabbbb", `xRoot-${suffix}-Pw!`]) {
        const res = await cp.adminFetch("POST", "/admin/v1/setup/initialize", {
          body: { console_token: consoleToken, admin_username: ROOT_USERNAME, admin_password: weak },
        });
        assertError(res, 400, "WEAK_PASSWORD");
      }

      const status = await cp.adminFetch("GET", "/admin/v1/setup/status");
      assert.deepEqual(status.json, { requires_setup: true });
      assert.ok(existsSync(join(dataDir.path, "console-token")), "the token survives refused attempts");
      assertError(await cp.adminFetch("GET", "/admin/v1/applications"), 503, "SETUP_REQUIRED");
      assert.ok(!cp.events.some((e) => e.msg === "listener.bound" && e.listener !== "admin"), "still no node/OCSP listener");
    });

    test("ops setup --password-stdin completes setup; node-api and OCSP bind without a restart; token removed; a second initialize is 409", async () => {
      const cli = await runCli(
        ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", dataDir.path, "--username", ROOT_USERNAME, "--password-stdin"],
        { input: `${ROOT_PASSWORD}\n` },
      );
      cliOutputs.push(cli);
      assert.equal(cli.code, 0, `ops setup failed:\n${cli.stderr}\n${cli.stdout}`);
      assert.match(cli.stdout, /Setup complete/);

      const nodeApi = await cp.waitForListener("node-api");
      const ocsp = await cp.waitForListener("ocsp");
      assert.match(nodeApi, /^127\.0\.0\.1:\d+$/);
      assert.match(ocsp, /^127\.0\.0\.1:\d+$/);
      nodeApiPort = portOf(nodeApi);
      ocspPort = portOf(ocsp);
      assert.notEqual(nodeApiPort, ocspPort);

      assert.ok(!existsSync(join(dataDir.path, "console-token")), "console-token file is removed after setup");
      const status = await cp.adminFetch("GET", "/admin/v1/setup/status");
      assert.deepEqual(status.json, { requires_setup: false });

      const again = await cp.adminFetch("POST", "/admin/v1/setup/initialize", {
        body: { console_token: consoleToken, admin_username: "second-root", admin_password: `Another-${suffix}-Pw!` },
      });
      assertError(again, 409, "SETUP_ALREADY_COMPLETED");
      // The gate is open now: an anonymous call is 401, not 503.
      assertError(await cp.adminFetch("GET", "/admin/v1/applications"), 401, "UNAUTHENTICATED");
    });

    test("login, /auth/me, logout; agent roles; application lifecycle", async () => {
      const bad = await login(ROOT_USERNAME, `${ROOT_PASSWORD}x`);
      assertError(bad, 401, "INVALID_CREDENTIALS");
      const res = await login(ROOT_USERNAME, ROOT_PASSWORD);
      assertStatus(res, 200);
      assert.match(res.json.access_token, /^[A-Za-z0-9_-]{16,}$/);
      assert.match(res.json.refresh_token, /^[A-Za-z0-9_-]{16,}$/);
      assert.notEqual(res.json.access_token, res.json.refresh_token);
      assert.ok(Number(res.json.expires_in) > 0);
      const root = res.json.access_token as string;

      const me = await cp.adminFetch("GET", "/admin/v1/auth/me", { token: root });
      assertStatus(me, 200);
      assert.equal(me.json.username, ROOT_USERNAME);
      assert.equal(me.json.role, "root");
      assert.equal(me.json.password_hash, undefined);
      assertError(await cp.adminFetch("GET", "/admin/v1/auth/me"), 401, "UNAUTHENTICATED");
      assertError(
        await cp.adminFetch("GET", "/admin/v1/auth/me", { token: randomBytes(24).toString("base64url") }),
        401,
        "UNAUTHENTICATED",
      );

      // Agents: only root manages them.
      for (const [agent, role] of [
        [ADMIN, "admin"],
        [OPERATOR, "operator"],
      ] as const) {
        const created = await cp.adminFetch("POST", "/admin/v1/agents", {
          token: root,
          body: { username: agent.username, password: agent.password, role },
        });
        assertStatus(created, 201);
        assert.equal(created.json.username, agent.username);
        assert.equal(created.json.role, role);
        assert.equal(created.json.status, "active");
        assert.equal(created.json.password_hash, undefined);
        assert.equal(created.json.password, undefined);
      }
      const agents = await cp.adminFetch("GET", "/admin/v1/agents", { token: root });
      assertStatus(agents, 200);
      assert.deepEqual(
        (agents.json.items as Array<{ username: string }>).map((a) => a.username).sort(),
        [ADMIN.username, ROOT_USERNAME, OPERATOR.username].sort(),
      );

      const opLogin = await login(OPERATOR.username, OPERATOR.password);
      assertStatus(opLogin, 200);
      const operator = opLogin.json.access_token as string;
      const adminLogin = await login(ADMIN.username, ADMIN.password);
      assertStatus(adminLogin, 200);
      const admin = adminLogin.json.access_token as string;

      assertStatus(await cp.adminFetch("GET", "/admin/v1/applications", { token: operator }), 200);
      assertError(
        await cp.adminFetch("POST", "/admin/v1/applications", { token: operator, body: { name: "Operator App" } }),
        403,
        "FORBIDDEN",
      );
      assertError(
        await cp.adminFetch("POST", "/admin/v1/agents", {
          token: operator,
          body: { username: "mallory", password: `Mallory-${suffix}-Pw!`, role: "root" },
        }),
        403,
        "FORBIDDEN",
      );
      assertError(
        await cp.adminFetch("POST", "/admin/v1/agents", {
          token: admin,
          body: { username: "mallory", password: `Mallory-${suffix}-Pw!`, role: "admin" },
        }),
        403,
        "FORBIDDEN",
      );
      assertError(
        await cp.adminFetch("POST", `/admin/v1/agents/${String(agents.json.items[0].id)}/disable`, { token: admin }),
        403,
        "FORBIDDEN",
      );

      // Application lifecycle, as the admin agent.
      const created = await cp.adminFetch("POST", "/admin/v1/applications", {
        token: admin,
        body: { name: "Demo App", description: "first version" },
      });
      assertStatus(created, 201);
      const appId = created.json.app_id as string;
      assert.match(appId, /^[A-Za-z0-9_-]+$/);
      assert.equal(typeof created.json.app_secret, "string");
      assert.ok((created.json.app_secret as string).length >= 32, "app_secret is long");
      secrets.set("app secret", created.json.app_secret as string);
      assert.equal(created.json.name, "Demo App");

      const fetched = await cp.adminFetch("GET", `/admin/v1/applications/${appId}`, { token: operator });
      assertStatus(fetched, 200);
      assert.equal(fetched.json.name, "Demo App");
      assert.equal(fetched.json.app_secret, undefined, "the secret is shown only at creation");
      assert.ok(!fetched.text.includes(created.json.app_secret as string));
      const listed = await cp.adminFetch("GET", "/admin/v1/applications", { token: admin });
      assert.deepEqual(
        (listed.json.items as Array<{ app_id: string }>).map((a) => a.app_id),
        [appId],
      );
      assert.ok(!listed.text.includes(created.json.app_secret as string), "the list does not show the secret");

      const patched = await cp.adminFetch("PATCH", `/admin/v1/applications/${appId}`, {
        token: admin,
        body: { name: "Demo App Renamed", description: "second version", status: "disabled" },
      });
      assertStatus(patched, 200);
      assert.equal(patched.json.name, "Demo App Renamed");
      assert.equal(patched.json.description, "second version");
      assert.equal(patched.json.status, "disabled");
      assert.equal((await cp.adminFetch("GET", `/admin/v1/applications/${appId}`, { token: admin })).json.name, "Demo App Renamed");

      assertError(
        await cp.adminFetch("POST", `/admin/v1/applications/${appId}/purge`, { token: admin }),
        409,
        "APPLICATION_NOT_IN_RECYCLE_BIN",
      );
      assertError(await cp.adminFetch("DELETE", `/admin/v1/applications/${appId}`, { token: operator }), 403, "FORBIDDEN");

      const deleted = await cp.adminFetch("DELETE", `/admin/v1/applications/${appId}`, { token: admin });
      assertStatus(deleted, 200);
      assert.equal(typeof deleted.json.deleted_at, "number");
      const ids = async (view?: string) => {
        const r = await cp.adminFetch("GET", `/admin/v1/applications${view ? `?view=${view}` : ""}`, { token: admin });
        assertStatus(r, 200);
        return (r.json.items as Array<{ app_id: string }>).map((a) => a.app_id);
      };
      assert.deepEqual(await ids(), [], "a deleted app leaves the live list");
      assert.deepEqual(await ids("recycle_bin"), [appId], "and appears in the recycle bin");
      assertError(
        await cp.adminFetch("PATCH", `/admin/v1/applications/${appId}`, { token: admin, body: { name: "Edited While Deleted" } }),
        409,
        "APPLICATION_DELETED",
      );

      const restored = await cp.adminFetch("POST", `/admin/v1/applications/${appId}/restore`, { token: admin });
      assertStatus(restored, 200);
      assert.equal(restored.json.deleted_at, null);
      assert.deepEqual(await ids(), [appId]);
      assert.deepEqual(await ids("recycle_bin"), []);
      assertError(
        await cp.adminFetch("POST", `/admin/v1/applications/${appId}/purge`, { token: admin }),
        409,
        "APPLICATION_NOT_IN_RECYCLE_BIN",
      );

      assertStatus(await cp.adminFetch("DELETE", `/admin/v1/applications/${appId}`, { token: admin }), 200);
      const purged = await cp.adminFetch("POST", `/admin/v1/applications/${appId}/purge`, { token: admin });
      assertStatus(purged, 204);
      assertError(await cp.adminFetch("GET", `/admin/v1/applications/${appId}`, { token: admin }), 404, "NOT_FOUND");
      assert.deepEqual(await ids("all"), []);

      // Logout ends that session only.
      assertStatus(await cp.adminFetch("POST", "/admin/v1/auth/logout", { token: operator }), 204);
      assertError(await cp.adminFetch("GET", "/admin/v1/auth/me", { token: operator }), 401, "UNAUTHENTICATED");
      assertStatus(await cp.adminFetch("GET", "/admin/v1/auth/me", { token: admin }), 200);
    });

    test("login throttling: after 5 wrong passwords the 6th attempt is 429 with Retry-After, and so is the right password", async () => {
      for (let i = 1; i <= 5; i++) {
        const wrongPassword = `Wrong-${suffix}-${i}-Pw!`;
        secrets.set(`wrong password ${i}`, wrongPassword);
        assertError(await login(OPERATOR.username, wrongPassword), 401, "INVALID_CREDENTIALS");
      }
      secrets.set("wrong password 6", `Wrong-${suffix}-6-Pw!`);
      const sixth = await login(OPERATOR.username, `Wrong-${suffix}-6-Pw!`);
      assertError(sixth, 429, "LOGIN_THROTTLED");
      const retryAfter = sixth.headers.get("retry-after");
      assert.match(retryAfter ?? "", /^\d+$/, "Retry-After is a number of seconds");
      assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 15 * 60, `Retry-After ${retryAfter}`);

      const right = await login(OPERATOR.username, OPERATOR.password);
      assertError(right, 429, "LOGIN_THROTTLED");
      assert.match(right.headers.get("retry-after") ?? "", /^\d+$/);
      // The lock is per username: others still log in.
      assertStatus(await login(ROOT_USERNAME, ROOT_PASSWORD), 200);
    });

    test("refresh tokens rotate; replaying a rotated-out refresh token is 401 and revokes that session", async () => {
      const first = await login(ROOT_USERNAME, ROOT_PASSWORD);
      assertStatus(first, 200);
      const other = await login(ROOT_USERNAME, ROOT_PASSWORD);
      assertStatus(other, 200);

      const rotated = await cp.adminFetch("POST", "/admin/v1/auth/refresh", { body: { refresh_token: first.json.refresh_token } });
      assertStatus(rotated, 200);
      secrets.set("rotated access token", String(rotated.json.access_token));
      secrets.set("rotated refresh token", String(rotated.json.refresh_token));
      assert.notEqual(rotated.json.access_token, first.json.access_token);
      assert.notEqual(rotated.json.refresh_token, first.json.refresh_token);
      assertStatus(await cp.adminFetch("GET", "/admin/v1/auth/me", { token: rotated.json.access_token }), 200);

      const replay = await cp.adminFetch("POST", "/admin/v1/auth/refresh", { body: { refresh_token: first.json.refresh_token } });
      assertError(replay, 401, "INVALID_REFRESH_TOKEN");
      assertError(await cp.adminFetch("GET", "/admin/v1/auth/me", { token: rotated.json.access_token }), 401, "UNAUTHENTICATED");
      assertError(
        await cp.adminFetch("POST", "/admin/v1/auth/refresh", { body: { refresh_token: rotated.json.refresh_token } }),
        401,
        "INVALID_REFRESH_TOKEN",
      );
      // Only the replayed session is revoked.
      assertStatus(await cp.adminFetch("GET", "/admin/v1/auth/me", { token: other.json.access_token }), 200);
    });

    test("node API (mTLS): server cert chains to cp_server_ca; no client cert or a foreign CA's cert gets no HTTP answer; a cp_node_client_ca cert does", async () => {
      const root = await rootToken();
      const cas = await cp.adminFetch("GET", "/admin/v1/pki/cas", { token: root });
      assertStatus(cas, 200);
      const byProfile = new Map(
        (cas.json.items as Array<{ profile: string; certificate_pem: string }>).map((c) => [c.profile, c.certificate_pem]),
      );
      assert.deepEqual([...byProfile.keys()].sort(), ["app_client_ca", "cp_node_client_ca", "cp_server_ca", "tcp_server_ca"]);
      const serverCa = byProfile.get("cp_server_ca") ?? "";
      const nodeClientCa = byProfile.get("cp_node_client_ca") ?? "";
      assert.match(serverCa, /-----BEGIN CERTIFICATE-----/);
      writeFileSync(pem("cp_server_ca.pem"), serverCa);
      writeFileSync(pem("cp_node_client_ca.pem"), nodeClientCa);

      // Positive control: a node client certificate from the real cp_node_client_ca (read from
      // the Control DB with the data dir's master key) gets an HTTP answer on every client.
      const db = (await openDatabase<ControlSchema>(variant.controlDb(dataDir.path))) as Kysely<ControlSchema>;
      let nodeCert: { certPem: string; keyPem: string | null };
      try {
        const masterKey = parseMasterKey(readFileSync(join(dataDir.path, "master.key"), "utf8"));
        const ca = await loadActiveCa({ controlDb: db, masterKey }, "cp_node_client_ca");
        nodeCert = await issueLeafCertificate({
          profile: "node_client",
          issuer: { certPem: ca.certPem, keyPem: ca.keyPem },
          commonName: "nid_e2e",
          sans: { uri: [nodeUri("nid_e2e")] },
          validityDays: 1,
          clock: systemClock,
        });
      } finally {
        await db.destroy();
      }
      writeFileSync(pem("node.pem"), nodeCert.certPem);
      writeFileSync(pem("node.key"), nodeCert.keyPem ?? "");

      // A foreign CA and a client cert from it; plus an impostor CA that copies the real
      // cp_node_client_ca's subject name (so only the signature can tell them apart).
      const realSubject = (
        await runTool("openssl", ["x509", "-in", pem("cp_node_client_ca.pem"), "-noout", "-subject", "-nameopt", "compat"])
      ).stdout
        .trim()
        .replace(/^subject=\s*/, "");
      assert.match(realSubject, /^\/.*CN=/, `openssl printed a usable subject: ${realSubject}`);
      writeFileSync(
        pem("client-ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:urn:authnexus:node:nid_intruder\n",
      );
      for (const [name, subject] of [
        ["foreign", "/O=Elsewhere/CN=Foreign Test CA"],
        ["impostor", realSubject],
      ] as const) {
        const steps: string[][] = [
          [
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            pem(`${name}-ca.key`),
            "-out",
            pem(`${name}-ca.pem`),
            "-days",
            "2",
            "-subj",
            subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
          ],
          [
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            pem(`${name}-client.key`),
            "-out",
            pem(`${name}-client.csr`),
            "-subj",
            "/CN=nid_intruder",
          ],
          [
            "x509",
            "-req",
            "-in",
            pem(`${name}-client.csr`),
            "-CA",
            pem(`${name}-ca.pem`),
            "-CAkey",
            pem(`${name}-ca.key`),
            "-set_serial",
            "0x1234abcd",
            "-days",
            "1",
            "-extfile",
            pem("client-ext.cnf"),
            "-out",
            pem(`${name}-client.pem`),
          ],
        ];
        for (const args of steps) {
          const r = await runTool("openssl", args);
          assert.equal(r.code, 0, `openssl ${args.join(" ")}:\n${r.stderr}`);
        }
      }

      // 1. No client certificate (TLS 1.3): the handshake completes for the client, then the
      //    server's certificate_required alert closes it before any HTTP byte.
      const bare = await probeTls(nodeApiPort, { ca: [serverCa] });
      assert.equal(bare.secureConnected, true, `handshake should complete client-side: ${bare.error?.message}`);
      assert.equal(bare.authorized, true, "the server certificate verifies against cp_server_ca alone");
      assert.equal(bare.protocol, "TLSv1.3");
      assert.match(bare.peerSubjectAltName ?? "", /DNS:localhost/);
      servedFingerprint256 = bare.peerFingerprint256 ?? "";
      assert.equal(bare.received, "", `no HTTP answer without a client certificate, got ${JSON.stringify(bare.received)}`);
      assert.ok(bare.error, "the client sees an error (certificate required alert)");

      // TLS 1.2: the handshake itself fails.
      const bare12 = await probeTls(nodeApiPort, { ca: [serverCa], maxVersion: "TLSv1.2" });
      assert.equal(bare12.secureConnected, false);
      assert.equal(bare12.received, "");
      assert.ok(bare12.error);

      // The server certificate does NOT verify against another of our CAs.
      const wrongTrust = await probeTls(nodeApiPort, { ca: [nodeClientCa] });
      assert.equal(wrongTrust.secureConnected, false, "must not verify against cp_node_client_ca");
      assert.ok(wrongTrust.error);

      // 2. Client certificates from CAs the server does not trust. Node verifies the client
      //    certificate after OpenSSL's handshake and then destroys the socket, so the client
      //    may see a plain close rather than an alert: what matters is that no HTTP byte comes
      //    back, and that the server records the refusal.
      for (const name of ["foreign", "impostor"]) {
        const logged = cp.events.length;
        const probe = await probeTls(nodeApiPort, {
          ca: [serverCa],
          cert: readFileSync(pem(`${name}-client.pem`)),
          key: readFileSync(pem(`${name}-client.key`)),
        });
        assert.doesNotMatch(probe.received, HTTP_STATUS_LINE, `${name} CA: no HTTP answer`);
        assert.equal(probe.received, "", `${name} CA: no application data at all`);
        await cp.waitForEvent(
          (e, i) => i >= logged && e.category === "TLS" && e.msg === "handshake.failed" && e.listener === "node-api",
          5000,
        );
      }

      // 3. Positive control, same probe: a real node certificate gets an HTTP status line.
      const good = await probeTls(nodeApiPort, { ca: [serverCa], cert: nodeCert.certPem, key: nodeCert.keyPem ?? "" });
      assert.match(
        good.received,
        /^HTTP\/1\.1 404 /,
        `the node API answers an authorised node: ${JSON.stringify(good.received)} ${good.error?.message}`,
      );
      assert.match(good.received, /ROUTE_NOT_FOUND/);
      // And through https.request, as a node agent would.
      const viaHttps = await new Promise<{ status: number; body: string }>((resolveReq, reject) => {
        const req = https.request(
          {
            host: "127.0.0.1",
            port: nodeApiPort,
            servername: "localhost",
            path: "/cp/v2/x",
            ca: [serverCa],
            cert: nodeCert.certPem,
            key: nodeCert.keyPem ?? "",
            agent: false,
          },
          (res) => {
            let body = "";
            res.setEncoding("utf8").on("data", (c: string) => (body += c));
            res.on("end", () => resolveReq({ status: res.statusCode ?? 0, body }));
          },
        );
        req.on("error", reject);
        req.end();
      });
      assert.equal(viaHttps.status, 404);
      assert.equal(JSON.parse(viaHttps.body).error, "ROUTE_NOT_FOUND");

      // 4. curl: refused without a client cert (non-zero exit), answered with the node cert.
      const resolveArgs = [
        "--resolve",
        `localhost:${nodeApiPort}:127.0.0.1`,
        "--cacert",
        pem("cp_server_ca.pem"),
        "-sS",
        "-w",
        "\nHTTP_CODE=%{http_code}",
      ];
      const url = `https://localhost:${nodeApiPort}/cp/v2/x`;
      const curlBare = await runTool("curl", [...resolveArgs, url]);
      assert.notEqual(curlBare.code, 0, `curl without a client cert must fail:\n${curlBare.stdout}\n${curlBare.stderr}`);
      assert.doesNotMatch(curlBare.stdout, /ROUTE_NOT_FOUND|HTTP_CODE=[1-5]\d\d/);
      const curlForeign = await runTool("curl", [
        ...resolveArgs,
        "--cert",
        pem("foreign-client.pem"),
        "--key",
        pem("foreign-client.key"),
        url,
      ]);
      assert.notEqual(curlForeign.code, 0, `curl with a foreign client cert must fail:\n${curlForeign.stdout}\n${curlForeign.stderr}`);
      assert.doesNotMatch(curlForeign.stdout, /ROUTE_NOT_FOUND|HTTP_CODE=[1-5]\d\d/);
      const curlGood = await runTool("curl", [...resolveArgs, "--cert", pem("node.pem"), "--key", pem("node.key"), url]);
      assert.equal(curlGood.code, 0, `curl with the node cert: ${curlGood.stderr}`);
      assert.match(curlGood.stdout, /HTTP_CODE=404/);

      // 5. openssl s_client verifies the chain (and the name) against cp_server_ca only.
      const sClient = await runTool("openssl", [
        "s_client",
        "-connect",
        `127.0.0.1:${nodeApiPort}`,
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-CAfile",
        pem("cp_server_ca.pem"),
      ]);
      assert.match(sClient.stdout, /Verify return code: 0 \(ok\)/, sClient.stdout + sClient.stderr);
      const sClientWrong = await runTool("openssl", [
        "s_client",
        "-connect",
        `127.0.0.1:${nodeApiPort}`,
        "-servername",
        "localhost",
        "-CAfile",
        pem("cp_node_client_ca.pem"),
      ]);
      assert.match(sClientWrong.stdout, /Verify return code: [1-9]\d* /, "control: another CA does not verify it");
    });

    test("OCSP (9092): openssl ocsp says the CP server certificate is good, with a verified response", async () => {
      const root = await rootToken();
      const list = await cp.adminFetch("GET", "/admin/v1/pki/certs?owner_type=control_plane", { token: root });
      assertStatus(list, 200);
      assert.equal(list.json.total, 1);
      assert.equal(list.json.items.length, 1);
      assert.equal(typeof list.json.page, "number");
      assert.equal(typeof list.json.page_size, "number");
      const item = list.json.items[0] as { id: string; profile: string; status: string; fingerprint_sha256: string };
      assert.equal(item.profile, "cp_server");
      assert.equal(item.status, "valid");
      cpCertId = item.id;
      const cert = await cp.adminFetch("GET", `/admin/v1/pki/certs/${cpCertId}`, { token: root });
      assertStatus(cert, 200);
      assert.match(cert.json.certificate_pem, /-----BEGIN CERTIFICATE-----/);
      writeFileSync(pem("cp.pem"), cert.json.certificate_pem);
      // It is the very certificate the node API presents.
      assert.equal(new X509Certificate(cert.json.certificate_pem).fingerprint256, servedFingerprint256);
      assert.equal(item.fingerprint_sha256.replace(/:/g, "").toLowerCase(), servedFingerprint256.replace(/:/g, "").toLowerCase());

      const out = await ocspCheck(ocspPort);
      assert.match(out, /Response verify OK/, out);
      assert.match(out, /cp\.pem: good/, out);
    });

    test("graceful stop: SIGTERM exits 0 with shutdown.completed; a restart on the same data binds everything at once and keeps accounts", async () => {
      const stoppedAt = Date.now();
      const code = await cp.stop("SIGTERM");
      const took = Date.now() - stoppedAt;
      assert.equal(code, 0, `exit code after SIGTERM\n${cp.stderr}`);
      assert.ok(took < 5000, `stopped in ${took} ms`);
      const started = cp.events.findIndex((e) => e.msg === "shutdown.started");
      const completed = cp.events.findIndex((e) => e.msg === "shutdown.completed");
      assert.ok(started >= 0, "shutdown.started logged");
      assert.equal(cp.events[started]?.signal, "SIGTERM");
      assert.ok(completed > started, "shutdown.completed logged after shutdown.started");

      cp = await start();
      const nodeApi = await cp.waitForListener("node-api");
      const ocsp = await cp.waitForListener("ocsp");
      nodeApiPort = portOf(nodeApi);
      ocspPort = portOf(ocsp);
      const status = await cp.adminFetch("GET", "/admin/v1/setup/status");
      assert.deepEqual(status.json, { requires_setup: false });
      assert.ok(!existsSync(join(dataDir.path, "console-token")), "no new console token after setup");
      assert.doesNotMatch(cp.stderr, /Console token/);

      const root = await rootToken();
      const me = await cp.adminFetch("GET", "/admin/v1/auth/me", { token: root });
      assert.equal(me.json.username, ROOT_USERNAME);
      const agents = await cp.adminFetch("GET", "/admin/v1/agents", { token: root });
      assert.equal(agents.json.total, 3, "agents persisted");
      assertStatus(await login(ADMIN.username, ADMIN.password), 200);
      // The login throttle lives in the Control DB, so it survives the restart.
      assertError(await login(OPERATOR.username, OPERATOR.password), 429, "LOGIN_THROTTLED");

      // The restarted node API serves the same certificate chain.
      const probe = await probeTls(nodeApiPort, { ca: [readFileSync(pem("cp_server_ca.pem"), "utf8")] });
      assert.equal(probe.authorized, true);
      assert.equal(probe.peerFingerprint256, servedFingerprint256);
      assert.equal(probe.received, "");
    });

    test("OCSP after revocation: POST /pki/certs/:id/revoke {keyCompromise} → openssl ocsp says revoked", async () => {
      const root = await rootToken();
      const before = await ocspCheck(ocspPort);
      assert.match(before, /cp\.pem: good/, before);

      const revoked = await cp.adminFetch("POST", `/admin/v1/pki/certs/${cpCertId}/revoke`, {
        token: root,
        body: { reason: "keyCompromise" },
      });
      assertStatus(revoked, 200);
      assert.equal(revoked.json.status, "revoked");
      assert.equal(revoked.json.revocation_reason, "keyCompromise");
      assertError(
        await cp.adminFetch("POST", `/admin/v1/pki/certs/${cpCertId}/revoke`, { token: root, body: { reason: "keyCompromise" } }),
        409,
        "CONFLICT",
      );

      const out = await ocspCheck(ocspPort);
      assert.match(out, /Response verify OK/, out);
      assert.match(out, /cp\.pem: revoked/, out);
      assert.doesNotMatch(out, /cp\.pem: good/, out);
      assert.match(out, /Reason: keyCompromise/, out);
    });

    test("a restart after the CP server certificate was revoked renews it: node API and OCSP both bind", async () => {
      assert.equal(await cp.stop("SIGTERM"), 0);
      cp = await start();
      const nodeApi = await cp.waitForListener("node-api");
      const ocsp = await cp.waitForListener("ocsp");
      nodeApiPort = portOf(nodeApi);
      ocspPort = portOf(ocsp);
      assert.ok(
        cp.events.some((e) => e.category === "PKI" && e.msg === "cert.renewed"),
        "cert.renewed logged",
      );
      assert.ok(!cp.events.some((e) => e.msg === "listener.failed"), "no listener failed");
      const probe = await probeTls(nodeApiPort, { ca: [readFileSync(pem("cp_server_ca.pem"), "utf8")] });
      assert.equal(probe.authorized, true, "the renewed certificate chains to cp_server_ca");
      assert.notEqual(probe.peerFingerprint256, servedFingerprint256, "a new certificate is served");
      const out = await ocspCheck(ocspPort);
      assert.match(out, /cp\.pem: revoked/, out);
    });

    test("no secrets in logs: passwords, tokens and the app secret never reach stdout (the console token only stderr, once)", () => {
      assert.ok(secrets.size >= 10, `collected ${secrets.size} secrets`);
      const allStdout = [...processes.map((p) => p.stdout), ...cliOutputs.map((c) => c.stdout)].join("\n");
      const allStderr = [...processes.map((p) => p.stderr), ...cliOutputs.map((c) => c.stderr)].join("\n");
      // Not vacuous: the logs did record the calls that carried these secrets.
      const events: CpEvent[] = processes.flatMap((p) => [...p.events]);
      assert.ok(
        events.some((e) => e.msg === "agent.login"),
        "logins were logged",
      );
      assert.ok(
        events.some((e) => e.msg === "agent.login_failed"),
        "failed logins were logged",
      );
      assert.ok(
        events.some((e) => e.msg === "request" && e.path === "/admin/v1/auth/refresh"),
        "refreshes were logged",
      );

      for (const [what, value] of secrets) {
        assert.ok(value.length >= 12, `${what} is a real value`);
        assert.ok(!allStdout.includes(value), `${what} appears on stdout`);
        if (what === "console token") assert.equal(countOccurrences(allStderr, value), 1, "console token on stderr exactly once");
        else assert.ok(!allStderr.includes(value), `${what} appears on stderr`);
      }
    });

    async function ocspCheck(port: number): Promise<string> {
      const r = await runTool(
        "openssl",
        ["ocsp", "-issuer", "cp_server_ca.pem", "-cert", "cp.pem", "-url", `http://127.0.0.1:${port}/ocsp/`, "-CAfile", "cp_server_ca.pem"],
        { cwd: workDir.path },
      );
      assert.equal(r.code, 0, `openssl ocsp exit ${r.code}:\n${r.stdout}\n${r.stderr}`);
      return `${r.stdout}\n${r.stderr}`;
    }
  });
}
