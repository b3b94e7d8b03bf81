/**
 * Cloud functions and variables end to end across REAL processes: `authnexus serve-cp` and one
 * `authnexus serve-node --function-workers 2` child (bin/authnexus → dist/, so run `npm run build`
 * first) sharing the CP's SQLite Runtime DB, with SDK clients in this process. Every function
 * travels from the CP's admin API to the node over the real channels (hint, manifest, body
 * download), so the node is only ever polled through the SDK.
 *
 * - a function created on the admin API answers an SDK client logged in on the node, with the
 *   caller's identity and params and the application's variables;
 * - an updated script is used by the next calls within the propagation time;
 * - a disabled function answers FUNCTION_NOT_FOUND;
 * - a runaway (`while true do end`, timeout_ms 200) answers FUNCTION_TIMEOUT on time while a
 *   second client's heartbeats keep being answered, and the node runs functions afterwards;
 * - a public cloud variable is readable before a login, a private one only after;
 * - a per-user variable set through the SDK is read back, by the SDK and by a function;
 * - SIGTERM stops the node and the CP, each exits 0, and neither logged an error.
 *
 * Tests run in order and build on each other.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { type CpProcess, startCpProcess } from "../helpers/cp-process.js";
import { dbFlags } from "../helpers/databases.js";
import { waitFor } from "../helpers/node-agent.js";
import { freePort, type NodeProcess, startNodeProcess } from "../helpers/node-process.js";
import { unpackPackage } from "../helpers/nodes.js";
import { type ClientTrustMaterial, connectProbe, expectCode, type Probe } from "../helpers/sdk-clients.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

/** Quick agent loops, so a missed hint would still be made up for within the test's patience. */
const AGENT_RUNTIME = {
  checkin_interval_ms: 2000,
  degraded_epoch_poll_ms: 200,
  degraded_blacklist_poll_ms: 200,
  backoff_base_ms: 50,
  backoff_max_ms: 500,
  request_timeout_ms: 3000,
};
const PROPAGATION_LIMIT_MS = 5000;
const RUNAWAY_TIMEOUT_MS = 200;
/** How late past its limit a runaway may be answered: the worker is stopped and the caller answered from the event loop. */
const RUNAWAY_SLACK_MS = 800;
/** Generous: a replaced worker's start-up shares the machine's two cores with the CP, the node and this process. */
const HEARTBEAT_LIMIT_MS = 250;
const PASSWORD = "correct-horse-1";

/** Maps decoded from the wire have no prototype: compare as plain data. */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

const ECHO = `
return {
  greeting = "hello " .. (params.name or "world"),
  user_id = user_id, username = username, app_id = app_id, device_id = device_id,
  time_is_integer = math.type(server_time) == "integer",
  motd = app_vars.get("motd"),
}`;

describe("cloud functions and variables across real processes", () => {
  const rootPassword = `S3cure-${randomBytes(6).toString("hex")}-Pw!`;
  let dir: TempDir;
  let cp: CpProcess;
  let node: NodeProcess;
  let token = "";
  let businessAddress = { host: "127.0.0.1", port: 0 };
  let appId = "";
  let appSecret = "";
  let material: ClientTrustMaterial;
  const probes: Probe[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  let userCounter = 0;

  const admin = async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await cp.adminFetch(method, `/admin/v1${path}`, { token, ...(body === undefined ? {} : { body }) });
    assert.ok(res.status >= 200 && res.status < 300, `${method} ${path} → ${res.status} ${res.text}`);
    return res.json;
  };
  const fnPath = (rest = "") => `/applications/${appId}/cloud-functions${rest}`;
  const connect = async (deviceId: string) => {
    const probe = await connectProbe({ appId, appSecret, material, node: businessAddress, deviceId });
    probes.push(probe);
    return probe;
  };
  /** A new user, logged in on the node from a device of its own. */
  const loggedIn = async (tag: string) => {
    userCounter += 1;
    const username = `${tag}-${userCounter}`;
    const created = await admin("POST", `/applications/${appId}/users`, { username, password: PASSWORD });
    const probe = await connect(`${tag}-device-${userCounter}`);
    probe.session = await probe.client.loginPassword(username, PASSWORD);
    return { probe, userId: created.id as string, username };
  };
  /** Calls `name` until the node knows it (anything but FUNCTION_NOT_FOUND); the first outcome it gives. */
  const firstKnownCall = (probe: Probe, name: string, params: unknown = null) =>
    waitFor(
      `the node knows ${name}`,
      async () => {
        try {
          return { value: await probe.client.callFunction(name, params as never), error: null };
        } catch (error) {
          if (isAuthNexusError(error, "FUNCTION_NOT_FOUND")) return null;
          return { value: undefined, error };
        }
      },
      PROPAGATION_LIMIT_MS,
      50,
    );
  const since = (t: TestContext, what: string, started: number) => {
    const ms = performance.now() - started;
    t.diagnostic(`${what}: ${ms.toFixed(1)} ms`);
    return ms;
  };

  before(async () => {
    dir = await makeTempDir("authnexus-e2e-cloud-functions");
    const cpPort = await freePort();
    const ocspPort = await freePort();
    mkdirSync(join(dir.path, "cp"));
    cp = await startCpProcess({
      dataDir: join(dir.path, "cp"),
      extraArgs: [
        ...["--cp-listen", `127.0.0.1:${cpPort}`, "--public-cp-url", `https://localhost:${cpPort}`],
        ...["--ocsp-listen", `127.0.0.1:${ocspPort}`, "--public-ocsp-url", `http://127.0.0.1:${ocspPort}/ocsp/`],
      ],
      env: { AUTHNEXUS_MASTER_KEY: randomBytes(32).toString("hex") },
    });
    const banner = await cp.waitForStderr(/Console token: (\S+)/);
    const init = await cp.adminFetch("POST", "/admin/v1/setup/initialize", {
      body: { console_token: banner[1], admin_username: "root", admin_password: rootPassword },
    });
    assert.equal(init.status, 201, init.text);
    await cp.waitForListener("node-api");
    await cp.waitForListener("ocsp");
    const login = await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: rootPassword } });
    token = login.json.access_token as string;
    await admin("PUT", "/configs/cp_agent_runtime", { content: AGENT_RUNTIME });
    await admin("PUT", "/configs/server_runtime_settings", { content: { login_attempts_per_minute: 100_000 } });

    // One node: created on the CP, its deploy package downloaded and unpacked, serve-node run on it.
    const businessPort = await freePort();
    businessAddress = { host: "127.0.0.1", port: businessPort };
    const created = await admin("POST", "/nodes", { name: "node-1", host: "127.0.0.1", business_port: businessPort });
    const pkg = await waitFor(
      "deploy package",
      async () =>
        ((await admin("GET", `/nodes/${created.id}/deploy-packages`)).items as { id: string; current: boolean }[]).find((p) => p.current),
      20_000,
      100,
    );
    const archive = await fetch(new URL(`/admin/v1/nodes/${created.id}/deploy-packages/${pkg.id}/download`, cp.adminUrl), {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(archive.status, 200);
    const unpacked = await unpackPackage(Buffer.from(await archive.arrayBuffer()));
    cleanups.push(unpacked.cleanup);
    const nodeDir = join(dir.path, "node-1");
    mkdirSync(nodeDir);
    node = await startNodeProcess({
      agentFile: unpacked.agentJsonPath,
      dataDir: nodeDir,
      healthPort: await freePort(),
      extraArgs: [
        ...["--listen", `127.0.0.1:${businessPort}`, "--function-workers", "2", "--function-queue", "16"],
        ...dbFlags("", { type: "sqlite", path: join(dir.path, "cp", "runtime.db"), busyTimeoutMs: 5000 }),
      ],
    });
    await waitFor("node /readyz 200", async () => (await node.health("/readyz")).status === 200, 30_000, 50);

    const app = await admin("POST", "/applications", { name: "Cloud E2E" });
    appId = app.app_id as string;
    appSecret = app.app_secret as string;
    await admin("PUT", `/applications/${appId}/configs/app_policy`, { content: { max_devices_per_user: 50 } });
    await admin("PUT", `/applications/${appId}/configs/app_variables`, {
      content: { variables: { motd: "welcome", latest: 7 }, public: ["motd"] },
    });
    const issued = await admin("POST", `/applications/${appId}/client-certs`, {});
    material = {
      certPem: issued.certificate_pem,
      keyPem: issued.private_key_pem,
      serverCaPem: issued.server_ca_pem,
      ocspSignerCaPem: issued.ocsp_signer_ca_pem,
    };
    // The node serves the application once its configs have arrived: a hello succeeds, and the
    // public variable is there.
    await waitFor(
      "the node serves the application and its variables",
      async () => {
        let probe: Probe | null = null;
        try {
          probe = await connectProbe({ appId, appSecret, material, node: businessAddress, deviceId: "warm-up" });
          return (await probe.client.variables("motd")) === "welcome";
        } catch {
          return false;
        } finally {
          await probe?.client.close();
        }
      },
      15_000,
      100,
    );
  });

  after(async () => {
    await Promise.all(probes.splice(0).map((p) => p.client.close().catch(() => undefined)));
    for (const proc of [node, cp]) if (proc && proc.exitCode === null) await proc.stop("SIGKILL");
    await Promise.all(cleanups.splice(0).map((c) => c()));
    await dir?.cleanup();
  });

  test("a function created on the CP answers an SDK client on the node, with the caller's identity and params", async (t) => {
    const { probe, userId, username } = await loggedIn("echo");
    const started = performance.now();
    const created = await admin("POST", fnPath(), { name: "echo", script: ECHO });
    assert.equal(created.version, 1);
    const first = await firstKnownCall(probe, "echo", { name: "ada" });
    since(t, "create on the CP → first answer on the node", started);
    assert.equal(first.error, null, String(first.error));
    assert.deepEqual(plain(first.value), {
      greeting: "hello ada",
      user_id: userId,
      username,
      app_id: appId,
      device_id: probe.deviceId,
      time_is_integer: true,
      motd: "welcome",
    });
    await expectCode((await connect("anonymous")).client.callFunction("echo"), "NOT_LOGGED_IN", "a call before a login");
  });

  test("an updated script is used by the next calls within the propagation time", async (t) => {
    const { probe } = await loggedIn("version");
    await admin("POST", fnPath(), { name: "version", script: "return 'v1'" });
    assert.equal((await firstKnownCall(probe, "version")).value, "v1");
    const started = performance.now();
    const patched = await admin("PATCH", fnPath("/version"), { script: "return 'v2'" });
    assert.equal(patched.version, 2);
    await waitFor("the new script answers", async () => (await probe.client.callFunction("version")) === "v2", PROPAGATION_LIMIT_MS, 50);
    assert.ok(since(t, "update on the CP → new script answers", started) < PROPAGATION_LIMIT_MS);
    assert.equal(await probe.client.callFunction("version"), "v2", "and stays in force");
  });

  test("a disabled function answers FUNCTION_NOT_FOUND", async (t) => {
    const { probe } = await loggedIn("disabled");
    assert.equal(await probe.client.callFunction("version"), "v2");
    const started = performance.now();
    await admin("PATCH", fnPath("/version"), { enabled: false });
    await waitFor(
      "the function is gone from the node",
      () =>
        probe.client.callFunction("version").then(
          () => false,
          (error) => isAuthNexusError(error, "FUNCTION_NOT_FOUND"),
        ),
      PROPAGATION_LIMIT_MS,
      50,
    );
    since(t, "disable on the CP → FUNCTION_NOT_FOUND", started);
    await expectCode(probe.client.callFunction("version"), "FUNCTION_NOT_FOUND", "a disabled function");
  });

  test(`a runaway answers FUNCTION_TIMEOUT on time (${RUNAWAY_TIMEOUT_MS} ms) while another client's heartbeats are answered`, async (t) => {
    const caller = await loggedIn("runaway");
    const bystander = await loggedIn("bystander");
    let beats = 0;
    let slowest = 0;
    let beating = true;
    const heartbeats = (async () => {
      while (beating) {
        const sent = performance.now();
        await bystander.probe.client.heartbeat();
        slowest = Math.max(slowest, performance.now() - sent);
        beats += 1;
      }
    })();
    const durations: number[] = [];
    try {
      await admin("POST", fnPath(), { name: "runaway", script: "while true do end", timeout_ms: RUNAWAY_TIMEOUT_MS });
      // The first call the node knows the function for is itself a runaway.
      let started = performance.now();
      const first = await waitFor(
        "the node knows runaway",
        async () => {
          started = performance.now();
          try {
            await caller.probe.client.callFunction("runaway");
            return { error: null as unknown };
          } catch (error) {
            return isAuthNexusError(error, "FUNCTION_NOT_FOUND") ? null : { error };
          }
        },
        PROPAGATION_LIMIT_MS,
        50,
      );
      durations.push(performance.now() - started);
      assert.ok(isAuthNexusError(first.error, "FUNCTION_TIMEOUT"), `expected FUNCTION_TIMEOUT, got ${String(first.error)}`);
      for (let i = 0; i < 3; i += 1) {
        started = performance.now();
        await expectCode(caller.probe.client.callFunction("runaway"), "FUNCTION_TIMEOUT", `runaway call ${i + 2}`);
        durations.push(performance.now() - started);
      }
    } finally {
      beating = false;
      await heartbeats;
    }
    t.diagnostic(`runaway answered after ${durations.map((d) => d.toFixed(0)).join(", ")} ms`);
    t.diagnostic(`${beats} heartbeats meanwhile, the slowest ${slowest.toFixed(1)} ms`);
    for (const took of durations) {
      assert.ok(took >= RUNAWAY_TIMEOUT_MS - 20, `not before its limit: ${took.toFixed(0)} ms`);
      assert.ok(took < RUNAWAY_TIMEOUT_MS + RUNAWAY_SLACK_MS, `on time: ${took.toFixed(0)} ms (limit ${RUNAWAY_TIMEOUT_MS} ms)`);
    }
    assert.ok(beats >= 10, `heartbeats kept being answered (${beats})`);
    assert.ok(slowest < HEARTBEAT_LIMIT_MS, `the slowest heartbeat took ${slowest.toFixed(1)} ms`);
    assert.equal(bystander.probe.client.connected, true);
    // The node still runs functions, for the same caller too.
    const again = (await caller.probe.client.callFunction("echo", { name: "again" })) as { greeting: string };
    assert.equal(again.greeting, "hello again");
  });

  test("a public cloud variable is readable before a login, a private one only after", async () => {
    const probe = await connect("variables-device");
    assert.deepEqual(plain(await probe.client.variables()), { motd: "welcome" });
    assert.equal(await probe.client.variables("motd"), "welcome");
    assert.equal(await probe.client.variables("latest"), undefined, "private: hidden before a login");
    userCounter += 1;
    const username = `variables-${userCounter}`;
    await admin("POST", `/applications/${appId}/users`, { username, password: PASSWORD });
    probe.session = await probe.client.loginPassword(username, PASSWORD);
    assert.equal(await probe.client.variables("latest"), 7);
    assert.deepEqual(plain(await probe.client.variables()), { motd: "welcome", latest: 7 });
  });

  test("a per-user variable set through the SDK is read back, by the SDK and by a function", async () => {
    const { probe } = await loggedIn("uservars");
    await expectCode((await connect("uservars-anonymous")).client.userVariables(), "NOT_LOGGED_IN");
    assert.deepEqual(plain(await probe.client.userVariables()), {});
    await probe.client.setUserVariable("theme", "dark");
    assert.equal(await probe.client.userVariables("theme"), "dark");
    assert.deepEqual(plain(await probe.client.userVariables()), { theme: "dark" });

    await admin("POST", fnPath(), {
      name: "prefs",
      script: `local old = user_vars.get("theme") user_vars.set("lang", params.lang) return old`,
    });
    const known = await firstKnownCall(probe, "prefs", { lang: "fr" });
    assert.equal(known.error, null, String(known.error));
    assert.equal(known.value, "dark", "the function reads what the SDK set");
    assert.deepEqual(plain(await probe.client.userVariables()), { theme: "dark", lang: "fr" }, "and the SDK reads what it set");
    await probe.client.setUserVariable("theme", null);
    assert.equal(await probe.client.userVariables("theme"), undefined, "deleted");
  });

  test("SIGTERM stops the node and the CP: each exits 0, and neither logged an error", async () => {
    await Promise.all(probes.splice(0).map((p) => p.client.close()));
    const nodeCode = await node.stop("SIGTERM");
    assert.equal(nodeCode, 0, `node exit code after SIGTERM\n${node.stderr}`);
    const cpCode = await cp.stop("SIGTERM");
    assert.equal(cpCode, 0, `CP exit code after SIGTERM\n${cp.stderr}`);
    for (const [name, proc] of [
      ["node", node],
      ["CP", cp],
    ] as const) {
      assert.ok(
        proc.events.some((e) => e.msg === "shutdown.completed"),
        `${name} logged shutdown.completed`,
      );
      assert.deepEqual(
        proc.events.filter((e) => e.level === "error"),
        [],
        `${name} logged errors`,
      );
    }
  });
});
