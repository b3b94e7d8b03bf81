/**
 * A whole deployment in this process for business-plane tests: a real Control Plane (admin API,
 * node API over mTLS, OCSP responder, all on 127.0.0.1 port 0, setup completed) and as many real
 * server nodes as a test asks for, each onboarded by the CP's own job worker, sharing the CP's
 * Runtime DB as the nodes of one deployment do, and serving their business port on 127.0.0.1
 * port 0. Applications, users and client certificates are made through the admin API, as an
 * operator would.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import { resolveCpConfig } from "../../src/cp/config.js";
import { type ControlPlane, startControlPlane } from "../../src/cp/control-plane.js";
import { resolveNodeConfig } from "../../src/node/config.js";
import { type ServerNode, startServerNode } from "../../src/node/server-node.js";
import type { DbOptions } from "../../src/shared/config/db-options.js";
import type { HostPort } from "../../src/shared/config/host-port.js";
import { createMemoryLogger, type LogFields } from "../../src/shared/log/index.js";
import type { SdkConfigFile } from "../../src/shared/sdk-config.js";
import { type Clock, systemClock, systemScheduler } from "../../src/shared/time/index.js";
import { ROOT_PASSWORD } from "./cp-context.js";
import type { DbVariant } from "./databases.js";
import { dbFlagRecord } from "./databases.js";
import { waitFor } from "./node-agent.js";
import { unpackPackage } from "./nodes.js";
import { makeTempDir, type TempDir } from "./temp-dir.js";

/** Fast agent loops, so CP changes reach the nodes within a test's patience. */
export const FAST_AGENT_RUNTIME = {
  checkin_interval_ms: 5_000,
  degraded_epoch_poll_ms: 200,
  degraded_blacklist_poll_ms: 200,
  backoff_base_ms: 50,
  backoff_max_ms: 400,
  request_timeout_ms: 3_000,
};

export interface AdminAnswer {
  status: number;
  json: any;
  text: string;
}

export interface DeployedNode {
  nodeId: string;
  server: ServerNode;
  /** The bound business port. */
  address: HostPort;
  /** The node's log lines, parsed. */
  events(): LogFields[];
  stop(): Promise<void>;
  /** Its node_agent.json (present for nodes added by the deployment). */
  agentFile?: string;
  /** Stops the node and starts it again from its agent file and data directory (new ports); resolves when ready. */
  restart?: () => Promise<void>;
}

export interface ClientMaterial {
  certificateId: string;
  certPem: string;
  keyPem: string;
  serverCaPem: string;
  ocspSignerCaPem: string;
  /** The CP's SDK config, its nodes replaced by the bound test addresses. */
  sdkConfig: SdkConfigFile;
}

export interface TestApplication {
  appId: string;
  secret: string;
}

export interface Deployment {
  cp: ControlPlane;
  adminUrl: string;
  dataDir: string;
  /** Admin API call as root; asserts a 2xx answer and returns its JSON. */
  admin(method: string, path: string, body?: unknown): Promise<any>;
  /** Admin API call as root, whatever the answer. */
  adminRaw(method: string, path: string, body?: unknown): Promise<AdminAnswer>;
  addNode(name?: string): Promise<DeployedNode>;
  nodes: DeployedNode[];
  createApp(name: string, policy?: Record<string, unknown>): Promise<TestApplication>;
  createUser(appId: string, username: string, password: string): Promise<string>;
  issueClient(appId: string): Promise<ClientMaterial>;
  /** Resolves once every node knows the application as `status` and trusts its client CA. */
  waitForApp(appId: string, status?: "active" | "disabled" | "gone"): Promise<void>;
  cpLogs(): LogFields[];
  stop(): Promise<void>;
}

export interface DeploymentOptions {
  label: string;
  clock?: Clock;
  /** serve-node flags for every node (e.g. { "blacklist-fail-closed": "true" }). */
  nodeFlags?: Record<string, string>;
  /** serve-cp flags (e.g. { "cert-rotation-grace": "1" }). */
  cpFlags?: Record<string, string>;
}

export async function startDeployment(variant: DbVariant, options: DeploymentOptions): Promise<Deployment> {
  const clock = options.clock ?? systemClock;
  const dir: TempDir = await makeTempDir(`authnexus-${options.label}`);
  const controlDb: DbOptions = await variant.fresh(`${options.label}_control`);
  const runtimeDb: DbOptions = await variant.fresh(`${options.label}_runtime`);
  const cpLogs = createMemoryLogger("Server");
  const cpConfig = resolveCpConfig(
    {
      "data-dir": dir.path,
      "admin-listen": "127.0.0.1:0",
      "cp-listen": "127.0.0.1:0",
      "ocsp-listen": "127.0.0.1:0",
      "public-cp-url": "https://localhost:9091",
      ...dbFlagRecord("", controlDb),
      ...dbFlagRecord("runtime-", runtimeDb),
      ...options.cpFlags,
    },
    {},
  );
  const cp = await startControlPlane(cpConfig, { scheduler: systemScheduler, log: cpLogs.logger, shutdownGraceMs: 200 });
  const adminUrl = `http://127.0.0.1:${cp.adminAddress.port}/admin/v1`;
  const nodes: DeployedNode[] = [];
  let token = "";

  const adminRaw = async (method: string, path: string, body?: unknown): Promise<AdminAnswer> => {
    const res = await fetch(`${adminUrl}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let json: any = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: res.status, json, text };
  };
  const admin = async (method: string, path: string, body?: unknown) => {
    const answer = await adminRaw(method, path, body);
    assert.ok(answer.status < 300, `${method} ${path} → ${answer.status} ${answer.text}`);
    return answer.json;
  };

  const stopAll = async () => {
    for (const node of nodes.splice(0)) await node.stop();
    await cp.stop();
    await dir.cleanup();
    await variant.cleanup();
  };

  try {
    await adminRaw("POST", "/setup/initialize", { console_token: cp.consoleToken, admin_username: "root", admin_password: ROOT_PASSWORD });
    await waitFor("node API and OCSP listeners", () => cp.cpAddress() && cp.ocspAddress());
    token = (await admin("POST", "/auth/login", { username: "root", password: ROOT_PASSWORD })).access_token;
    await admin("PUT", "/configs/cp_agent_runtime", { content: FAST_AGENT_RUNTIME });
  } catch (error) {
    await stopAll();
    throw error;
  }

  const addNode = async (name = `node-${nodes.length + 1}`): Promise<DeployedNode> => {
    // An IP literal: the business certificate names 127.0.0.1, where the test node listens.
    const created = await admin("POST", "/nodes", { name, host: "127.0.0.1", business_port: 8443 });
    const pkg = await waitFor(
      "deploy package built",
      async () =>
        ((await admin("GET", `/nodes/${created.id}/deploy-packages`)).items as { id: string; current: boolean }[]).find((p) => p.current),
      20_000,
    );
    const download = await fetch(`${adminUrl}/nodes/${created.id}/deploy-packages/${pkg.id}/download`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(download.status, 200);
    const unpacked = await unpackPackage(Buffer.from(await download.arrayBuffer()));
    // The package names the CP's public URLs; this CP listens on ports chosen at start.
    const manifest = {
      ...unpacked.manifest,
      cp_url: `https://127.0.0.1:${cp.cpAddress()?.port}`,
      ocsp_url: `http://127.0.0.1:${cp.ocspAddress()?.port}/ocsp/`,
    };
    await fs.writeFile(unpacked.agentJsonPath, JSON.stringify(manifest, null, 2));
    const logs = createMemoryLogger("Server");
    const nodeDir = `${dir.path}/${created.id}`;
    await fs.mkdir(nodeDir, { recursive: true });
    const start = async () => {
      const started = await startServerNode(
        resolveNodeConfig(
          {
            agent: unpacked.agentJsonPath,
            "data-dir": nodeDir,
            "health-listen": "127.0.0.1:0",
            listen: "127.0.0.1:0",
            ...dbFlagRecord("", runtimeDb),
            ...options.nodeFlags,
          },
          {},
        ),
        { log: logs.logger, clock, shutdownGraceMs: 200 },
      );
      if (!(await started.ready)) {
        await started.stop();
        throw new Error(`node ${name} did not become ready: ${JSON.stringify(logs.events().slice(-5))}`);
      }
      const bound = started.businessAddress();
      assert.ok(bound);
      return { started, bound };
    };
    const first = await start();
    let stopped = false;
    const deployed: DeployedNode = {
      nodeId: created.id,
      server: first.started,
      address: first.bound,
      events: logs.events,
      agentFile: unpacked.agentJsonPath,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await deployed.server.stop();
        await unpacked.cleanup();
      },
      restart: async () => {
        await deployed.server.stop();
        const next = await start();
        deployed.server = next.started;
        deployed.address = next.bound;
      },
    };
    nodes.push(deployed);
    return deployed;
  };

  return {
    cp,
    adminUrl,
    dataDir: dir.path,
    admin,
    adminRaw,
    addNode,
    nodes,
    createApp: async (name, policy) => {
      const app = await admin("POST", "/applications", { name });
      if (policy) await admin("PUT", `/applications/${app.app_id}/configs/app_policy`, { content: policy });
      return { appId: app.app_id, secret: app.app_secret };
    },
    createUser: async (appId, username, password) => (await admin("POST", `/applications/${appId}/users`, { username, password })).id,
    issueClient: async (appId) => {
      const issued = await admin("POST", `/applications/${appId}/client-certs`, {});
      return {
        certificateId: issued.certificate_id,
        certPem: issued.certificate_pem,
        keyPem: issued.private_key_pem,
        serverCaPem: issued.server_ca_pem,
        ocspSignerCaPem: issued.ocsp_signer_ca_pem,
        sdkConfig: { ...issued.sdk_config, nodes: nodes.map((n) => ({ host: "127.0.0.1", port: n.address.port })) },
      };
    },
    waitForApp: async (appId, status = "active") => {
      await waitFor(`every node sees ${appId} ${status}`, () =>
        nodes.every((n) => {
          const app = n.server.agent.store.application(appId);
          if (status === "gone") return app === undefined;
          return app?.status === status && n.server.agent.store.appTrustPems(appId).length > 0;
        }),
      );
    },
    cpLogs: cpLogs.events,
    stop: stopAll,
  };
}
