/**
 * Cloud functions and variables through the SDK, against a real CP and two real nodes in process
 * (test/helpers/deployment.ts) sharing one Runtime DB, on SQLite and PostgreSQL:
 *
 * - a function created on the admin API runs on both nodes for a logged-in client, with the
 *   caller's identity, its params and the application's variables; an update reaches both
 *   nodes within the propagation time; a disabled or deleted function answers
 *   FUNCTION_NOT_FOUND, and a client that is not logged in NOT_LOGGED_IN;
 * - escapes and runaways through the whole path end with their typed error, on time, while
 *   another client's heartbeats keep being answered: io.open, os.execute, require,
 *   `while true do end`, a pathological pattern, string.rep past the memory cap;
 * - cloud variables: before a login only the public ones, after it all of them;
 * - per-user variables: set and read through the SDK, seen from the other node, read and written
 *   by a function, bounded by app_policy (count and size), all or nothing.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { dbVariants } from "../helpers/databases.js";
import { type ClientMaterial, type DeployedNode, type Deployment, startDeployment, type TestApplication } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { connectProbe, expectCode, type Probe } from "../helpers/sdk-clients.js";

const PASSWORD = "correct-horse-1";
const POLICY = { max_devices_per_user: 50, user_variables_max_count: 3, user_variable_max_bytes: 32 };
const PROPAGATION_LIMIT_MS = 5000;

/** Maps decoded from the wire have no prototype (a key such as __proto__ is an ordinary key): compare as plain data. */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

const ECHO = `
return {
  greeting = "hello " .. (params.name or "world"),
  user_id = user_id, username = username, app_id = app_id, device_id = device_id,
  time_is_integer = math.type(server_time) == "integer",
  motd = app_vars.get("motd"),
}`;

for (const variant of dbVariants()) {
  describe(`cloud functions and variables through the SDK (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let n1: DeployedNode;
    let n2: DeployedNode;
    let app: TestApplication;
    let material: ClientMaterial;
    const open: Probe[] = [];
    let userCounter = 0;

    const connect = async (node: DeployedNode, deviceId: string) => {
      const probe = await connectProbe({ appId: app.appId, appSecret: app.secret, material, node: node.address, deviceId });
      open.push(probe);
      return probe;
    };
    /** A new user logged in on `node`. */
    const loggedIn = async (node: DeployedNode, tag: string) => {
      userCounter += 1;
      const username = `${tag}-${userCounter}`;
      const userId = await d.createUser(app.appId, username, PASSWORD);
      const probe = await connect(node, `${tag}-device-${userCounter}`);
      probe.session = await probe.client.loginPassword(username, PASSWORD);
      return { probe, userId, username };
    };
    const functions = `/applications/APP/cloud-functions`;
    const fnPath = (rest = "") => functions.replace("APP", app.appId) + rest;
    /** Every node holds `name` at `version` (or holds no `name` when version is null). */
    const onEveryNode = (name: string, version: number | null) =>
      waitFor(`every node holds ${name} at ${version}`, () =>
        d.nodes.every((n) => (n.server.agent.store.cloudFunction(app.appId, name)?.manifest.version ?? null) === version),
      );

    before(async () => {
      d = await startDeployment(variant, { label: `cloud_${variant.name}`, nodeFlags: { "function-workers": "2" } });
      n1 = await d.addNode("node-1");
      n2 = await d.addNode("node-2");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: { login_attempts_per_minute: 100_000 } });
      app = await d.createApp("Cloud", POLICY);
      material = await d.issueClient(app.appId);
      await d.admin("PUT", `/applications/${app.appId}/configs/app_variables`, {
        content: { variables: { motd: "welcome", latest: 7, secret_flag: true }, public: ["motd"] },
      });
      await d.waitForApp(app.appId);
      await waitFor("both nodes hold the policy and the variables", () =>
        d.nodes.every(
          (n) =>
            n.server.agent.store.appPolicy(app.appId).user_variables_max_count === POLICY.user_variables_max_count &&
            n.server.agent.store.appVariables(app.appId).public.includes("motd"),
        ),
      );
    });
    after(async () => {
      for (const probe of open) await probe.client.close().catch(() => undefined);
      await d?.stop();
    });

    test("a function runs on both nodes for a logged-in client, with the caller's identity, params and variables", async () => {
      await d.admin("POST", fnPath(), { name: "echo", script: ECHO });
      await onEveryNode("echo", 1);
      for (const node of [n1, n2]) {
        const { probe, userId, username } = await loggedIn(node, "echo");
        const result = await probe.client.callFunction("echo", { name: "ada" });
        assert.deepEqual(plain(result), {
          greeting: "hello ada",
          user_id: userId,
          username,
          app_id: app.appId,
          device_id: probe.deviceId,
          time_is_integer: true,
          motd: "welcome",
        });
      }
      const anonymous = await connect(n1, "anonymous-device");
      await expectCode(anonymous.client.callFunction("echo"), "NOT_LOGGED_IN", "a call before a login");
      const { probe } = await loggedIn(n1, "unknown");
      await expectCode(probe.client.callFunction("no_such_function"), "FUNCTION_NOT_FOUND");
    });

    test("an update reaches both nodes within the propagation time; disabled and deleted functions are not found", async () => {
      await d.admin("POST", fnPath(), { name: "version", script: "return 'v1'" });
      await onEveryNode("version", 1);
      const a = await loggedIn(n1, "version");
      const b = await loggedIn(n2, "version");
      assert.equal(await b.probe.client.callFunction("version"), "v1");
      const started = performance.now();
      await d.admin("PATCH", fnPath("/version"), { script: "return 'v2'" });
      for (const client of [a.probe.client, b.probe.client])
        await waitFor("the new version answers", async () => (await client.callFunction("version")) === "v2", PROPAGATION_LIMIT_MS);
      assert.ok(performance.now() - started < PROPAGATION_LIMIT_MS);

      await d.admin("PATCH", fnPath("/version"), { enabled: false });
      await onEveryNode("version", null);
      await expectCode(a.probe.client.callFunction("version"), "FUNCTION_NOT_FOUND", "a disabled function");
      await d.admin("PATCH", fnPath("/version"), { enabled: true });
      await onEveryNode("version", 2);
      assert.equal(await a.probe.client.callFunction("version"), "v2");
      await d.admin("DELETE", fnPath("/version"));
      await onEveryNode("version", null);
      await expectCode(b.probe.client.callFunction("version"), "FUNCTION_NOT_FOUND", "a deleted function");
    });

    test("escapes and runaways end with their typed error on time, and other clients' heartbeats keep their pace", async () => {
      const scripts: Array<[string, string, number, string]> = [
        ["esc_io", "return io.open('/etc/passwd')", 1000, "FUNCTION_ERROR"],
        ["esc_os", "return os.execute('id')", 1000, "FUNCTION_ERROR"],
        ["esc_require", "return require('os')", 1000, "FUNCTION_ERROR"],
        ["esc_loop", "while true do end", 300, "FUNCTION_TIMEOUT"],
        ["esc_pattern", "return string.find(string.rep('a', 40000), '.-.-.-.-.-.-.-.-.-.-b')", 300, "FUNCTION_TIMEOUT"],
        ["esc_memory", "local s = string.rep('x', 1024 * 1024) return #string.rep(s, 64)", 1000, "FUNCTION_MEMORY_EXCEEDED"],
      ];
      for (const [name, script, timeout_ms] of scripts) await d.admin("POST", fnPath(), { name, script, timeout_ms });
      for (const [name] of scripts) await onEveryNode(name, 1);
      const caller = await loggedIn(n1, "escape");
      const bystander = await loggedIn(n1, "bystander");
      let slowest = 0;
      let beating = true;
      const beats = (async () => {
        while (beating) {
          const sent = performance.now();
          await bystander.probe.client.heartbeat();
          slowest = Math.max(slowest, performance.now() - sent);
        }
      })();
      try {
        for (const [name, , timeoutMs, code] of scripts) {
          const started = performance.now();
          await expectCode(caller.probe.client.callFunction(name), code as "FUNCTION_ERROR", name);
          const took = performance.now() - started;
          assert.ok(took < timeoutMs + 1000, `${name} answered in ${took.toFixed(0)} ms (limit ${timeoutMs} ms)`);
        }
      } finally {
        beating = false;
        await beats;
      }
      // Generous: a replaced worker's start-up shares the machine's two cores with everything else.
      assert.ok(slowest < 250, `the slowest heartbeat took ${slowest.toFixed(1)} ms`);
      assert.equal(
        await caller.probe.client.callFunction("echo", { name: "again" }).then((r) => (r as { greeting: string }).greeting),
        "hello again",
      );
    });

    test("cloud variables: the public ones before a login, all of them after", async () => {
      const probe = await connect(n2, "variables-device");
      assert.deepEqual(plain(await probe.client.variables()), { motd: "welcome" });
      assert.equal(await probe.client.variables("latest"), undefined, "not public: hidden before a login");
      userCounter += 1;
      const username = `variables-${userCounter}`;
      await d.createUser(app.appId, username, PASSWORD);
      probe.session = await probe.client.loginPassword(username, PASSWORD);
      assert.deepEqual(plain(await probe.client.variables()), { motd: "welcome", latest: 7, secret_flag: true });
      assert.equal(await probe.client.variables("latest"), 7);
      assert.equal(await probe.client.variables("missing"), undefined);
      assert.equal(await probe.client.variables("toString"), undefined, "only the variables' own names");
      assert.equal(await probe.client.userVariables("constructor"), undefined, "only the user's own keys");
    });

    test("per-user variables: set and read through the SDK, shared by the nodes, used by functions, bounded by the policy", async () => {
      const { probe, userId, username } = await loggedIn(n1, "uservars");
      await expectCode((await connect(n1, "uservars-anonymous")).client.userVariables(), "NOT_LOGGED_IN");
      await probe.client.setUserVariable("theme", "dark");
      assert.deepEqual(plain(await probe.client.userVariables()), { theme: "dark" });
      const elsewhere = await connect(n2, `${username}-second`);
      elsewhere.session = await elsewhere.client.loginPassword(username, PASSWORD);
      assert.equal(await elsewhere.client.userVariables("theme"), "dark", "the other node reads the same variables");

      await d.admin("POST", fnPath(), {
        name: "counter",
        script: "local n = tonumber(user_vars.get('visits') or '0') + 1 user_vars.set('visits', tostring(n)) return n",
      });
      await onEveryNode("counter", 1);
      assert.equal(await probe.client.callFunction("counter"), 1);
      assert.equal(await elsewhere.client.callFunction("counter"), 2);
      // Two calls of the same user at once, on two nodes: neither overwrites the other's count.
      const together = await Promise.all([probe.client.callFunction("counter"), elsewhere.client.callFunction("counter")]);
      assert.deepEqual([...together].sort(), [3, 4], "each call counted once");
      await probe.client.setUserVariable("visits", "2");
      assert.deepEqual(plain(await probe.client.userVariables()), { theme: "dark", visits: "2" });

      // Limits (app_policy: 3 variables of at most 32 bytes): refused whole, nothing stored.
      await probe.client.setUserVariable("lang", "en");
      await expectCode(probe.client.setUserVariable("fourth", "x"), "USER_VARIABLE_LIMIT", "a fourth variable");
      await expectCode(probe.client.setUserVariable("theme", "x".repeat(33)), "USER_VARIABLE_INVALID", "a value over 32 bytes");
      await expectCode(probe.client.setUserVariable("bad key", "x"), "USER_VARIABLE_INVALID", "a key with a space");
      await d.admin("POST", fnPath(), {
        name: "greedy",
        script: "user_vars.set('theme', 'light') user_vars.set('extra', 'x') return true",
      });
      await onEveryNode("greedy", 1);
      await expectCode(probe.client.callFunction("greedy"), "USER_VARIABLE_LIMIT", "a function growing past the count");
      assert.deepEqual(
        plain(await probe.client.userVariables()),
        { theme: "dark", visits: "2", lang: "en" },
        "nothing of the call was stored",
      );
      await probe.client.setUserVariable("lang", null);
      assert.deepEqual(plain(await probe.client.userVariables()), { theme: "dark", visits: "2" });
      const admin = await d.admin("GET", `/applications/${app.appId}/users/${userId}/variables`);
      assert.deepEqual(
        (admin.items as { key: string; value: string }[]).map((item) => [item.key, item.value]),
        [
          ["theme", "dark"],
          ["visits", "2"],
        ],
      );
    });

    test("variables that do not fit in one answer are refused with ANSWER_TOO_LARGE; one at a time they are read", async () => {
      const big = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`big${i}`, "x".repeat(4000)]));
      await d.admin("PUT", `/applications/${app.appId}/configs/app_variables`, { content: { variables: big, public: ["big0"] } });
      await waitFor("both nodes hold the large variables", () =>
        d.nodes.every((n) => Object.keys(n.server.agent.store.appVariables(app.appId).variables).length === 20),
      );
      const { probe } = await loggedIn(n1, "large");
      await expectCode(probe.client.variables(), "ANSWER_TOO_LARGE", "all twenty at once");
      assert.equal(((await probe.client.variables("big7")) as string).length, 4000);
      assert.equal(probe.client.connected, true, "the refusal leaves the connection open");
    });
  });
}
