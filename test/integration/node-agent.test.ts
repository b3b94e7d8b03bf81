/**
 * serve-node's CP agent against a REAL Control Plane started in process (admin API, node API
 * over mTLS, OCSP responder, on port 0), with the node's package built by the real onboarding
 * job, on SQLite and on PostgreSQL. The node shares the CP's Runtime DB, as nodes of one
 * deployment do.
 *
 * The CP is set to poll slowly (10 minutes) while SSE is healthy, so a change that reaches the
 * node in well under a second can only have come through its SSE hint and the matching pull;
 * with the stream cut, the degraded intervals (set to 100 ms / 200 ms here) carry it instead.
 * The documented failure modes (docs/node-api.md): SSE cut (degraded, recovery), node offline while changes pile
 * up (cursors catch up, nothing missed, nothing run twice), CP stopped and restarted (cached
 * data and the last OCSP response kept, backoff, recovery), and a disabled node (revoked OCSP
 * response stapled, node keeps running, recovers when re-enabled).
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { resolveCpConfig } from "../../src/cp/config.js";
import { type ControlPlane, startControlPlane } from "../../src/cp/control-plane.js";
import { CpCallError } from "../../src/node/agent/cp-call-error.js";
import { resolveNodeConfig } from "../../src/node/config.js";
import { type ServerNode, startServerNode } from "../../src/node/server-node.js";
import type { DbOptions } from "../../src/shared/config/db-options.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { systemClock, systemScheduler } from "../../src/shared/time/index.js";
import { canConnect } from "../helpers/authnexus-process.js";
import { ROOT_PASSWORD } from "../helpers/cp-context.js";
import { dbFlagRecord, dbVariants } from "../helpers/databases.js";
import { waitFor } from "../helpers/node-agent.js";
import { type ProvisionedNode, unpackPackage } from "../helpers/nodes.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

/** Healthy polls so slow that only an SSE hint (or a checkin) can explain a fast delivery. */
const SLOW_MS = 600_000;
const AGENT_RUNTIME = {
  checkin_interval_ms: SLOW_MS,
  epoch_poll_ms: SLOW_MS,
  blacklist_poll_ms: SLOW_MS,
  command_poll_ms: SLOW_MS,
  config_poll_ms: SLOW_MS,
  degraded_epoch_poll_ms: 100,
  degraded_blacklist_poll_ms: 200,
  ocsp_refresh_ms: 1000,
  backoff_base_ms: 50,
  backoff_max_ms: 400,
  request_timeout_ms: 2000,
};

for (const variant of dbVariants()) {
  describe(`serve-node agent against a real CP on ${variant.name}`, { skip: variant.skip }, () => {
    let dataDir: TempDir;
    let controlDb: DbOptions;
    let runtimeDb: DbOptions;
    let cp: ControlPlane;
    let ports: { admin: number; cp: number; ocsp: number };
    let token = "";
    let appId = "";
    let provisioned: Pick<ProvisionedNode, "nodeId" | "agentJsonPath" | "manifest" | "files" | "cleanup">;
    let node: ServerNode;
    const nodeLogs = createMemoryLogger("Server");
    const cpLogs = createMemoryLogger("Server");

    const startCp = async (listen: { admin: number; cp: number; ocsp: number }) => {
      const config = resolveCpConfig(
        {
          "data-dir": dataDir.path,
          "admin-listen": `127.0.0.1:${listen.admin}`,
          "cp-listen": `127.0.0.1:${listen.cp}`,
          "ocsp-listen": `127.0.0.1:${listen.ocsp}`,
          "public-cp-url": "https://localhost:9091",
          ...dbFlagRecord("", controlDb),
          ...dbFlagRecord("runtime-", runtimeDb),
        },
        {},
      );
      return startControlPlane(config, { scheduler: systemScheduler, log: cpLogs.logger, shutdownGraceMs: 200 });
    };
    const admin = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`http://127.0.0.1:${ports.admin}/admin/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const json = (await res.json()) as Record<string, unknown>;
      assert.ok(res.status < 300, `${method} ${path} → ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    const health = async (path: string) => {
      const res = await fetch(`http://127.0.0.1:${node.healthAddress.port}${path}`);
      return { status: res.status, json: (await res.json()) as Record<string, any> };
    };
    const startNode = () =>
      startServerNode(
        resolveNodeConfig(
          { agent: provisioned.agentJsonPath, "data-dir": dataDir.path, "health-listen": "127.0.0.1:0", ...dbFlagRecord("", runtimeDb) },
          {},
        ),
        { log: nodeLogs.logger, clock: systemClock, shutdownGraceMs: 200 },
      );
    const stageOrder = () =>
      nodeLogs
        .events()
        .filter((e) => e.msg === "stage.entered")
        .map((e) => e.stage);

    before(async () => {
      dataDir = await makeTempDir("authnexus-node-agent");
      controlDb = await variant.fresh("agent_control");
      runtimeDb = await variant.fresh("agent_runtime");
      cp = await startCp({ admin: 0, cp: 0, ocsp: 0 });
      ports = { admin: cp.adminAddress.port, cp: 0, ocsp: 0 };
      const init = await fetch(`http://127.0.0.1:${ports.admin}/admin/v1/setup/initialize`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ console_token: cp.consoleToken, admin_username: "root", admin_password: ROOT_PASSWORD }),
      });
      assert.equal(init.status, 201);
      await waitFor("node API and OCSP listeners", () => cp.cpAddress() && cp.ocspAddress());
      ports = { admin: ports.admin, cp: cp.cpAddress()?.port ?? 0, ocsp: cp.ocspAddress()?.port ?? 0 };
      const login = await fetch(`http://127.0.0.1:${ports.admin}/admin/v1/auth/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "root", password: ROOT_PASSWORD }),
      });
      token = ((await login.json()) as { access_token: string }).access_token;
      appId = (await admin("POST", "/applications", { name: "Agent Test App" })).app_id as string;
      await admin("PUT", "/configs/cp_agent_runtime", { content: AGENT_RUNTIME });
      await admin("PUT", `/applications/${appId}/configs/app_policy`, { content: { max_devices_per_user: 2 } });

      // The operator's path: create the node, let the CP's job worker onboard it, download the package.
      const created = await admin("POST", "/nodes", { name: `agent-${variant.name}`, host: "localhost", business_port: 8443 });
      const pkg = await waitFor(
        "deploy package built",
        async () =>
          ((await admin("GET", `/nodes/${created.id}/deploy-packages`)).items as { id: string; current: boolean }[]).find((p) => p.current),
        15_000,
      );
      const download = await fetch(`http://127.0.0.1:${ports.admin}/admin/v1/nodes/${created.id}/deploy-packages/${pkg.id}/download`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(download.status, 200);
      provisioned = { nodeId: created.id as string, ...(await unpackPackage(Buffer.from(await download.arrayBuffer()))) };
      // The package names the CP's public URLs; this CP listens on ports chosen at start.
      const manifest = {
        ...provisioned.manifest,
        cp_url: `https://127.0.0.1:${ports.cp}`,
        ocsp_url: `http://127.0.0.1:${ports.ocsp}/ocsp/`,
      };
      await fs.writeFile(provisioned.agentJsonPath, JSON.stringify(manifest, null, 2));
      node = await startNode();
    });

    after(async () => {
      await node?.stop();
      await cp?.stop();
      await provisioned?.cleanup();
      await dataDir?.cleanup();
      await variant.cleanup();
    });

    test("staged startup: every stage in order, then ready; the CP shows the node online with SSE and OCSP", async () => {
      assert.equal(await node.ready, true);
      assert.deepEqual(stageOrder(), ["load_package", "open_db", "connect_cp", "initial_configs", "first_ocsp", "ready"]);
      assert.equal((await health("/healthz")).status, 200);
      assert.deepEqual(await health("/readyz"), { status: 200, json: { ready: true, stage: "ready" } });
      const status = (await health("/status")).json;
      assert.equal(status.node_id, provisioned.nodeId);
      assert.equal(status.ocsp.status, "good");
      assert.ok(status.ocsp.fetched_at > 0);
      assert.equal(status.last_checkin.ok, true);
      assert.ok(status.configs.some((c: { type: string; version: number }) => c.type === "cp_agent_runtime" && c.version === 1));
      assert.ok(status.configs.some((c: { type: string; scope: string }) => c.type === "app_policy" && c.scope === `app:${appId}`));
      assert.equal(node.agent.store.cpAgentRuntime().degraded_epoch_poll_ms, 100, "the delivered cp_agent_runtime is in force");
      await waitFor("SSE connected", () => node.agent.sse.connected);
      assert.ok(node.currentStaple(), "a staple is ready for the business listener");
      // Checkins run every 10 minutes here; the one sent on reaching "ready" carries the OCSP fetch time.
      const view = await waitFor("CP view: online, SSE connected, OCSP applied", async () => {
        const v = await admin("GET", `/nodes/${provisioned.nodeId}`);
        return v.status === "online" && v.sse_connected === true && typeof v.ocsp_last_applied_at === "number" ? v : null;
      });
      assert.equal(view.software_version, "0.1.0");
      const states = await admin("GET", `/nodes/${provisioned.nodeId}/configs`);
      assert.ok(
        (states.items as { state: string }[]).every((i) => i.state === "SYNCED"),
        JSON.stringify(states.items),
      );
    });

    test("a config change arrives by its SSE hint and is acked (SYNCED); a bad one is reported (ERROR) and the old one stays", async () => {
      const started = Date.now();
      await admin("PUT", "/configs/server_runtime_settings", { content: { max_connections: 1234 } });
      await waitFor("server_runtime_settings applied", () => node.agent.store.serverRuntimeSettings().max_connections === 1234, 3000);
      assert.ok(Date.now() - started < 3000);
      await waitFor("SYNCED on the CP", async () => {
        const states = await admin("GET", `/nodes/${provisioned.nodeId}/configs`);
        return (states.items as { type: string; state: string }[]).find((i) => i.type === "server_runtime_settings")?.state === "SYNCED";
      });
      // The CP checks a bundle's shape; the node parses each certificate and refuses a leaf.
      const leafPem = provisioned.files["tls/node_client.pem"]?.toString() ?? "";
      await admin("PUT", `/applications/${appId}/configs/app_client_ca_bundle`, {
        content: { pem: provisioned.files["tls/app_client_ca.pem"]?.toString() },
      });
      await waitFor("bundle v1 applied", () => node.agent.store.version("app_client_ca_bundle", `app:${appId}`) === 1);
      await admin("PUT", `/applications/${appId}/configs/app_client_ca_bundle`, { content: { pem: leafPem } });
      const error = await waitFor("ERROR on the CP", async () => {
        const states = await admin("GET", `/nodes/${provisioned.nodeId}/configs`);
        const item = (states.items as Record<string, unknown>[]).find((i) => i.type === "app_client_ca_bundle");
        return item?.state === "ERROR" ? item : null;
      });
      assert.equal(error.error_version, 2);
      assert.equal(error.applied_version, 1);
      assert.match(String(error.error_message), /not a CA certificate/);
      assert.equal(node.agent.store.version("app_client_ca_bundle", `app:${appId}`), 1, "version 1 stays in force");
    });

    test("commands reach the node by hint, run once, and the CP shows each result", async () => {
      const announcement = await admin("POST", `/nodes/${provisioned.nodeId}/commands`, {
        kind: "announcement",
        payload: { message: "maintenance at 10" },
      });
      const reload = await admin("POST", "/commands", { kind: "reload_configs" });
      for (const command of [announcement, reload]) {
        const result = await waitFor(
          `result of ${command.kind}`,
          async () => {
            const view = await admin("GET", `/commands/${command.id}`);
            const mine = (view.results as { node_id: string; status: string; output: unknown }[]).find(
              (r) => r.node_id === provisioned.nodeId,
            );
            return mine?.status === "succeeded" ? mine : null;
          },
          3000,
        );
        if (command.kind === "announcement")
          assert.deepEqual(result.output, { delivered: 0 }, "no business listener yet: reached nobody, and says so");
        else assert.deepEqual(result.output, { applied: 0, rejected: 0 });
      }
      assert.equal(node.status().cursors?.commands, reload.seq);
    });

    test("a blacklist entry and an epoch bump reach the Runtime DB and the caches by their SSE hints", async () => {
      const started = Date.now();
      const entry = await admin("POST", "/security/blacklist", { kind: "ip", value: "203.0.113.9", reason: "credential stuffing" });
      await admin("POST", "/security/auth-epochs", { user_id: "usr_agent_1", app_id: appId });
      await waitFor(
        "both applied",
        () => node.agent.blacklist.isBlocked("ip", "203.0.113.9", Date.now()) && node.agent.epochs.epochOf("usr_agent_1") !== null,
        3000,
      );
      assert.ok(Date.now() - started < 3000, "well inside the 10-minute healthy polls: the hints did it");
      const status = (await health("/status")).json;
      assert.equal(status.sse.state, "connected");
      assert.equal(status.caches.blacklist_entries, 1);
      assert.ok(status.cursors.blacklist >= 1 && status.cursors["auth-epochs"] >= 1);
      await admin("DELETE", `/security/blacklist/${entry.id}`);
      await waitFor("removal applied", () => !node.agent.blacklist.isBlocked("ip", "203.0.113.9", Date.now()), 3000);
    });

    test("SSE cut: [SSE] degraded, the degraded intervals carry changes, then the stream comes back by itself", async () => {
      const client = node.agent.client;
      const open = client.openEventStream.bind(client);
      client.openEventStream = async () => {
        throw new CpCallError("network", "long-lived connection dropped by a firewall (test)");
      };
      node.agent.sse.dropConnection();
      await waitFor("degraded", () => node.agent.sse.status().state === "degraded");
      assert.ok(nodeLogs.events().some((e) => e.category === "SSE" && e.msg === "degraded" && e.level === "warn"));
      const started = Date.now();
      await admin("POST", "/security/auth-epochs", { user_id: "usr_agent_2" });
      await admin("POST", "/security/blacklist", { kind: "device", value: "dev-degraded", reason: "test" });
      await waitFor("epoch by degraded polling", () => node.agent.epochs.epochOf("usr_agent_2") !== null, 2000);
      const epochMs = Date.now() - started;
      await waitFor("blacklist by degraded polling", () => node.agent.blacklist.isBlocked("device", "dev-degraded", Date.now()), 2000);
      assert.ok(epochMs < 1500, `degraded epoch propagation took ${epochMs} ms`);
      assert.equal((await health("/status")).json.sse.state, "degraded");
      assert.equal((await health("/readyz")).status, 200, "degraded SSE is not an outage");
      const reconnectsBefore = node.agent.sse.status().reconnects;
      client.openEventStream = open;
      await waitFor("reconnected", () => node.agent.sse.connected, 3000);
      assert.equal(node.agent.sse.status().reconnects, reconnectsBefore + 1);
      assert.equal(node.agent.store.cpAgentRuntime().epoch_poll_ms, SLOW_MS);
    });

    test("node offline while changes pile up: on restart the persisted cursors catch up, nothing missed, nothing run twice", async () => {
      const cursorsBefore = node.status().cursors;
      await node.stop();
      assert.equal(await canConnect(node.healthAddress.port), false, "health listener closed");
      const values = Array.from({ length: 25 }, (_, i) => `198.51.100.${i + 1}`);
      for (const value of values) await admin("POST", "/security/blacklist", { kind: "ip", value, reason: "while offline" });
      for (let i = 0; i < 5; i++) await admin("POST", "/security/auth-epochs", { user_id: "usr_agent_3" });
      const command = await admin("POST", `/nodes/${provisioned.nodeId}/commands`, { kind: "kill_process", payload: { app_id: appId } });
      node = await startNode();
      assert.equal(await node.ready, true);
      assert.ok((node.status().cursors?.blacklist ?? 0) >= (cursorsBefore?.blacklist ?? 0), "resumed from the persisted cursor");
      await waitFor(
        "caught up",
        () => values.every((v) => node.agent.blacklist.isBlocked("ip", v, Date.now())) && node.agent.epochs.epochOf("usr_agent_3") !== null,
        5000,
      );
      const view = await waitFor("command result", async () => {
        const v = await admin("GET", `/commands/${command.id}`);
        return (v.results as { node_id: string; status: string }[]).find(
          (r) => r.node_id === provisioned.nodeId && r.status === "succeeded",
        );
      });
      assert.ok(view);
      const executions = nodeLogs.events().filter((e) => e.msg === "command.executed" && e.command_id === command.id);
      assert.equal(executions.length, 1, "run exactly once");
      const epochs = await admin("GET", "/security/auth-epochs?user_id=usr_agent_3");
      const newest = Math.max(...(epochs.items as { epoch: number }[]).map((e) => e.epoch));
      assert.equal(node.agent.epochs.epochOf("usr_agent_3"), newest, "the newest epoch, not an intermediate one");
    });

    test("CP stopped and restarted: the node keeps its cached data and last OCSP response, backs off, and recovers", async () => {
      await waitFor("SSE connected", () => node.agent.sse.connected);
      const blocked = node.agent.blacklist.size;
      await cp.stop();
      await waitFor("SSE degraded", () => !node.agent.sse.connected, 5000);
      await waitFor("OCSP fetch failing", () => node.status().ocsp?.last_error !== null, 5000);
      node.agent.wake("checkin");
      await waitFor("checkin failing", () => node.status().last_checkin?.ok === false, 5000);
      const during = (await health("/status")).json;
      assert.equal(during.ocsp.status, "good", "the cached OCSP response is kept (valid until its nextUpdate)");
      assert.ok(node.currentStaple());
      assert.equal(during.caches.blacklist_entries, blocked, "cached security data kept");
      assert.equal((await health("/readyz")).status, 200, "the node keeps serving");
      const failures = nodeLogs
        .events()
        .filter((e) => e.msg === "ocsp.fetch_failed" || e.msg === "sse.connect_failed" || e.msg === "checkin.failed");
      assert.ok(failures.length > 0);

      cp = await startCp(ports);
      await waitFor("SSE back", () => node.agent.sse.connected, 8000);
      node.agent.wake("checkin");
      await waitFor("checkin back", () => node.status().last_checkin?.ok === true, 5000);
      await waitFor("OCSP back", () => node.status().ocsp?.last_error === null, 5000);
      assert.ok(nodeLogs.events().some((e) => e.msg === "cp.reachable" || e.msg === "ocsp.recovered"));
      await admin("POST", "/security/auth-epochs", { user_id: "usr_agent_4" });
      await waitFor("a change after the restart", () => node.agent.epochs.epochOf("usr_agent_4") !== null, 3000);
    });

    test("a disabled node staples its revoked OCSP response and keeps running; re-enabled, it recovers by itself", async () => {
      await admin("POST", `/nodes/${provisioned.nodeId}/disable`, {});
      await waitFor("revoked", () => node.status().ocsp?.status === "revoked", 5000);
      assert.ok(node.currentStaple(), "the revoked response is stapled");
      assert.ok(nodeLogs.events().some((e) => e.category === "TLS" && e.msg === "ocsp.revoked"));
      node.agent.wake("checkin");
      await waitFor("checkin says disabled", () => node.status().last_checkin?.node_status === "disabled", 3000);
      assert.equal(node.stage(), "ready", "the node never shuts itself down");
      await admin("POST", `/nodes/${provisioned.nodeId}/enable`, {});
      await waitFor("good again", () => node.status().ocsp?.status === "good", 5000);
    });

    test("graceful stop closes the health listener and leaves nothing running", async () => {
      const port = node.healthAddress.port;
      await node.stop();
      assert.equal(node.stage(), "stopped");
      assert.equal(await canConnect(port), false);
    });
  });
}
