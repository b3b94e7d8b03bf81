/**
 * A whole AuthNexus deployment in this process, for development: a Control Plane and one server
 * node on SQLite in one folder, everything bound on 127.0.0.1, with first-run setup completed, a
 * demo application, a client certificate with its SDK files, and a demo user. Every piece goes
 * through the real code paths — startControlPlane and startServerNode as serve-cp and serve-node
 * run them, setup over the admin API, the rest through the CP's services — and every piece that
 * already exists in the folder is reused, so a rerun finds the same admin password, node,
 * application and user. See folder.ts for what survives a rerun and how an interrupted start is
 * completed.
 */
import fs from "node:fs";
import path from "node:path";
import { resolveCpConfig } from "../../cp/config.js";
import { type ControlPlane, startControlPlane } from "../../cp/control-plane.js";
import { listAgents } from "../../cp/services/agents/agents.js";
import {
  createApplication,
  getApplication,
  listApplications,
  purgeApplication,
  softDeleteApplication,
} from "../../cp/services/applications/applications.js";
import { createUser, getUser, listUsers, resetUserPassword } from "../../cp/services/business/users.js";
import type { Actor, CpContext } from "../../cp/services/context.js";
import { downloadDeployPackage } from "../../cp/services/nodes/deploy-packages.js";
import { createNode } from "../../cp/services/nodes/lifecycle.js";
import { getNode, listNodes } from "../../cp/services/nodes/views.js";
import { issueClientCertificate } from "../../cp/services/pki/client-certs.js";
import { revokeCertificate } from "../../cp/services/pki/inventory.js";
import { consoleTokenPath, isSetupComplete } from "../../cp/services/setup/setup.js";
import { resolveNodeConfig } from "../../node/config.js";
import { type ServerNode, startServerNode } from "../../node/server-node.js";
import { DEFAULT_CP_PORT, DEFAULT_OCSP_PORT } from "../../shared/config/defaults.js";
import { formatHostPort, type HostPort } from "../../shared/config/host-port.js";
import { isAuthNexusError } from "../../shared/errors/index.js";
import type { Logger } from "../../shared/log/index.js";
import { SDK_CONFIG_FILE_NAME } from "../../shared/sdk-config.js";
import { type Scheduler, systemScheduler } from "../../shared/time/index.js";
import { SDK_FILES, writeSdkFiles } from "../sdk-files.js";
import { DevError, DevInterrupted } from "./errors.js";
import { claimFolder, type DevFolder, generateUserPassword, statOrNull, writeAtomically } from "./folder.js";
import { openDevLogs } from "./logs.js";
import { installDeployPackage, pointAgentAt, readInstalledManifest } from "./node-package.js";
import { assertPortsFree, DEV_BUSINESS_PORT, DEV_HOST, type DevPortName, type DevPorts, listenError } from "./ports.js";
import { type DevSummary, findPackageRoot } from "./summary.js";

export const DEV_ADMIN_USERNAME = "root";
export const DEV_NODE_NAME = "dev-node";
export const DEV_APP_NAME = "Demo App";
export const DEV_USERNAME = "demo";
const NODE_DIR_NAME = "node";
const SDK_DIR_NAME = "sdk";

/** How long a stop lets in-flight requests finish before cutting them (ms): a development deployment has no one to wait for. */
const DEV_SHUTDOWN_GRACE_MS = 2_000;
/** How long the node's onboarding job (certificates and deploy package) may take (ms). */
const ONBOARDING_TIMEOUT_MS = 60_000;
/** How long the node may take through its staged startup (ms). */
const NODE_READY_TIMEOUT_MS = 60_000;
/** How long the node may take to learn the demo application after it is ready (ms). */
const APP_SYNC_TIMEOUT_MS = 15_000;
/** Polling interval for the two waits above (ms). */
const POLL_INTERVAL_MS = 100;

export interface DevDeploymentOptions {
  /** Absolute path of the folder. */
  dir: string;
  ports: DevPorts;
  /** Logs to stderr instead of <dir>/logs. */
  verbose: boolean;
  /** Aborting it (SIGINT/SIGTERM) ends a start that is still under way: what started is stopped, then DevInterrupted. */
  signal: AbortSignal;
  /** One short line per stage, for the operator to watch a first start. */
  progress(line: string): void;
  scheduler?: Scheduler;
  /** Default true: bind and release every fixed port before starting anything. False leaves a taken port to the real listeners (tests of that path). */
  checkPorts?: boolean;
}

export interface DevDeployment {
  summary: DevSummary;
  cp: ControlPlane;
  node: ServerNode;
  /** Stops the node, then the CP (databases closed), then releases the folder. */
  stop(): Promise<void>;
}

export async function startDevDeployment(options: DevDeploymentOptions): Promise<DevDeployment> {
  const { dir, ports, signal, progress } = options;
  const scheduler = options.scheduler ?? systemScheduler;
  const folder = claimFolder(dir, DEV_ADMIN_USERNAME);
  // Stopped in reverse order of starting; run by stop() or by a failed start.
  const stack: Array<() => Promise<void> | void> = [() => folder.release()];
  const unwind = async () => {
    const errors: unknown[] = [];
    for (const step of stack.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw errors[0];
  };
  const checkpoint = () => {
    if (signal.aborted) throw new DevInterrupted();
  };
  const wait = (ms: number) =>
    new Promise<void>((resolve, reject) => {
      if (signal.aborted) return reject(new DevInterrupted());
      const onAbort = () => {
        cancel();
        reject(new DevInterrupted());
      };
      const cancel = scheduler.setTimer(ms, () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      });
      signal.addEventListener("abort", onAbort, { once: true });
    });

  try {
    const logs = openDevLogs(dir, options.verbose);
    stack.push(() => logs.close());
    stack.push(() => logs.cp.info("shutdown.completed"));
    if (options.checkPorts !== false) await assertPortsFree(ports);
    checkpoint();

    progress(folder.fresh ? `creating a development deployment in ${dir}` : `reusing the development deployment in ${dir}`);
    const cp = await startCp(dir, ports, logs.cp, scheduler);
    stack.push(() => cp.stop());
    checkpoint();

    const adminUrl = `http://${DEV_HOST}:${cp.adminAddress.port}/admin/v1`;
    if (!(await isSetupComplete(cp.context))) {
      progress("completing first-run setup (creating the four CAs)");
      await completeSetup(cp, adminUrl, folder);
    }
    const cpAddress = cp.cpAddress();
    if (!cpAddress) throw listenError("cp", ports.cp, logs.failures.get("node-api"));
    const ocspAddress = cp.ocspAddress();
    if (!ocspAddress) throw listenError("ocsp", ports.ocsp, logs.failures.get("ocsp"));
    checkpoint();

    const ctx = cp.context;
    const actor = await rootActor(ctx, folder);
    const warnings: string[] = [];
    const provision: Provisioning = { ctx, actor, folder, warnings, progress, checkpoint, wait, businessPort: ports.business };
    const nodeId = await ensureNode(provision);
    const nodeDir = await ensureNodePackage(provision, nodeId, path.join(dir, NODE_DIR_NAME));
    const app = await ensureApplication(provision);
    const sdkConfigPath = await ensureSdkFiles(provision, app.id, path.join(dir, SDK_DIR_NAME));
    const demoUser = await ensureDemoUser(provision, app.id);
    checkpoint();

    progress("starting the node");
    const agentFile = pointAgentAt(nodeDir, `https://${DEV_HOST}:${cpAddress.port}`, `http://${DEV_HOST}:${ocspAddress.port}/ocsp/`);
    const node = await startNode(agentFile, dir, ports, logs.node, scheduler);
    stack.push(() => node.stop());
    const ready = await raceReady(node, signal, scheduler);
    if (ready === "interrupted") throw new DevInterrupted();
    const business = node.businessAddress();
    if (ready === "timeout")
      throw new DevError(`the node did not become ready within ${NODE_READY_TIMEOUT_MS / 1000} s: see ${logHint(logs.files)}`);
    if (!ready || !business) {
      const failure = logs.failures.get("node");
      if (failure?.includes("business port")) throw listenError("business", ports.business, failure);
      throw new DevError(`the node could not start${failure ? `: ${failure}` : ""} (see ${logHint(logs.files)})`);
    }
    writeSdkNodes(sdkConfigPath, business);
    if (!(await nodeKnowsApp(provision, node, app.id))) {
      warnings.push(
        `the node has not applied the configuration of ${app.id} yet: the first SDK login may be refused (see ${logHint(logs.files)})`,
      );
    }
    if (!(await adminLoginWorks(adminUrl, folder.state.admin))) {
      warnings.push(`the admin password in ${folder.statePath} was refused: was it changed through the admin API since?`);
    }
    checkpoint();

    const summary: DevSummary = {
      dir,
      statePath: folder.statePath,
      logs: logs.files,
      adminUrl,
      admin: folder.state.admin,
      node: {
        id: nodeId,
        business: formatHostPort(business),
        healthUrl: `http://${formatHostPort(node.healthAddress)}/readyz`,
      },
      application: app,
      sdkConfigPath,
      demoUser,
      packageRoot: findPackageRoot(),
      warnings,
    };
    let stopping: Promise<void> | null = null;
    const stop = () => {
      stopping ??= (async () => {
        logs.cp.info("shutdown.started");
        await unwind();
      })();
      return stopping;
    };
    return { summary, cp, node, stop };
  } catch (error) {
    await unwind().catch(() => undefined);
    throw error;
  }
}

// ---- the two roles -----------------------------------------------------------------------------

async function startCp(dir: string, ports: DevPorts, log: Logger, scheduler: Scheduler): Promise<ControlPlane> {
  // The environment is not consulted: AUTHNEXUS_* variables meant for serve-cp must not point a
  // development deployment at another database or master key.
  const config = resolveCpConfig(
    {
      "data-dir": dir,
      "admin-listen": `${DEV_HOST}:${ports.admin}`,
      "cp-listen": `${DEV_HOST}:${ports.cp}`,
      "ocsp-listen": `${DEV_HOST}:${ports.ocsp}`,
      // Nodes are pointed at the bound addresses (pointAgentAt); these go into certificates.
      "public-cp-url": `https://${DEV_HOST}:${ports.cp || DEFAULT_CP_PORT}`,
      "public-ocsp-url": `http://${DEV_HOST}:${ports.ocsp || DEFAULT_OCSP_PORT}/ocsp/`,
    },
    {},
  );
  try {
    return await startControlPlane(config, { scheduler, log, shutdownGraceMs: DEV_SHUTDOWN_GRACE_MS });
  } catch (error) {
    throw bindFailure(error, "admin", ports.admin) ?? error;
  }
}

async function startNode(agentFile: string, dir: string, ports: DevPorts, log: Logger, scheduler: Scheduler): Promise<ServerNode> {
  // The node's Runtime DB is the CP's (<dir>/runtime.db), as nodes on one host share it.
  const config = resolveNodeConfig(
    {
      agent: agentFile,
      "data-dir": dir,
      "health-listen": `${DEV_HOST}:${ports.health}`,
      listen: `${DEV_HOST}:${ports.business}`,
    },
    {},
  );
  try {
    return await startServerNode(config, { log, scheduler, shutdownGraceMs: DEV_SHUTDOWN_GRACE_MS });
  } catch (error) {
    throw bindFailure(error, "health", ports.health) ?? error;
  }
}

/** A listener's bind failure (serve-cp and serve-node say "cannot listen on …") as the dev error naming the port; null for anything else. */
function bindFailure(error: unknown, name: DevPortName, port: number): DevError | null {
  const message = error instanceof Error ? error.message : String(error);
  if (!message.startsWith("cannot listen on")) return null;
  const code = (error as { cause?: NodeJS.ErrnoException }).cause?.code ?? "";
  return listenError(name, port, `${code} ${message}`);
}

function raceReady(node: ServerNode, signal: AbortSignal, scheduler: Scheduler): Promise<boolean | "interrupted" | "timeout"> {
  return new Promise((resolve) => {
    const cancel = scheduler.setTimer(NODE_READY_TIMEOUT_MS, () => finish("timeout"));
    const onAbort = () => finish("interrupted");
    const finish = (result: boolean | "interrupted" | "timeout") => {
      cancel();
      signal.removeEventListener("abort", onAbort);
      resolve(result);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) finish("interrupted");
    node.ready.then(finish, () => finish(false));
  });
}

function logHint(files: { cp: string; node: string } | null): string {
  return files ? `${files.node} and ${files.cp}` : "the log lines above";
}

// ---- setup ---------------------------------------------------------------------------------

/**
 * First-run setup through the admin API, as `authnexus ops setup` does it: the route also binds
 * the node API and OCSP listeners. The root password was generated (and saved) before.
 */
async function completeSetup(cp: ControlPlane, adminUrl: string, folder: DevFolder): Promise<void> {
  const token = cp.consoleToken ?? readConsoleToken(cp.context.dataDir);
  const res = await fetch(`${adminUrl}/setup/initialize`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      console_token: token,
      admin_username: folder.state.admin.username,
      admin_password: folder.state.admin.password,
    }),
  });
  if (res.status !== 201) {
    const body = (await res.json().catch(() => null)) as { error?: string; message?: string } | null;
    throw new DevError(`first-run setup failed: ${body?.error ?? res.status}: ${body?.message ?? "no answer"}`);
  }
}

function readConsoleToken(dataDir: string): string {
  const file = consoleTokenPath(dataDir);
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    throw new DevError(`setup has not completed and ${file} cannot be read: remove the folder to start over`);
  }
}

/** The root agent, as the actor of everything provisioned (so the audit trails name who did it). */
async function rootActor(ctx: CpContext, folder: DevFolder): Promise<Actor> {
  const wanted = folder.state.admin.username;
  const { items } = await listAgents(ctx, { page: 1, pageSize: 200 });
  const agent = items.find((a) => a.username === wanted);
  return { agentId: agent?.id ?? null, username: agent?.username ?? wanted, ip: null, requestId: null };
}

async function adminLoginWorks(adminUrl: string, admin: { username: string; password: string }): Promise<boolean> {
  try {
    const res = await fetch(`${adminUrl}/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(admin),
    });
    if (res.status !== 200) return false;
    // A check, not a session anyone will use: end it at once.
    const { access_token: token } = (await res.json()) as { access_token: string };
    await fetch(`${adminUrl}/auth/logout`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    return true;
  } catch {
    return false;
  }
}

// ---- provisioning (each step reuses what the folder already has) -----------------------------

interface Provisioning {
  ctx: CpContext;
  actor: Actor;
  folder: DevFolder;
  warnings: string[];
  progress(line: string): void;
  checkpoint(): void;
  wait(ms: number): Promise<void>;
  businessPort: number;
}

const notFound = (error: unknown) => isAuthNexusError(error, "NOT_FOUND");
const conflict = (error: unknown) => isAuthNexusError(error, "CONFLICT");

/** The node named in the state, or a new one (host 127.0.0.1: the business certificate must name the address the SDK dials). */
async function ensureNode(p: Provisioning): Promise<string> {
  const { ctx, actor, folder } = p;
  const known = folder.state.node;
  if (known) {
    try {
      const node = await getNode(ctx, known.id);
      if (node.status === "disabled") p.warnings.push(`node ${known.id} is disabled: SDK clients refuse its revoked certificate status`);
      return known.id;
    } catch (error) {
      if (!notFound(error)) throw error;
      p.warnings.push(`node ${known.id} was deleted from the CP: a new one was onboarded`);
    }
  }
  p.progress("onboarding the node (certificates and deploy package)");
  let nodeId: string;
  try {
    nodeId = (
      await createNode(ctx, actor, {
        name: DEV_NODE_NAME,
        host: DEV_HOST,
        businessPort: p.businessPort || DEV_BUSINESS_PORT,
      })
    ).id;
  } catch (error) {
    if (!conflict(error)) throw error;
    // Created by a start that was interrupted before it could save the id: adopt it.
    const { items } = await listNodes(ctx, {}, { page: 1, pageSize: 200 });
    const orphan = items.find((n) => n.name === DEV_NODE_NAME);
    if (!orphan) throw error;
    nodeId = orphan.id;
  }
  folder.state.node = { id: nodeId, name: DEV_NODE_NAME };
  folder.save();
  return nodeId;
}

/** Waits for the node's current deploy package and unpacks it into `dir` unless that very package is already there. */
async function ensureNodePackage(p: Provisioning, nodeId: string, dir: string): Promise<string> {
  const { ctx } = p;
  const deadline = ctx.clock.now() + ONBOARDING_TIMEOUT_MS;
  for (;;) {
    const node = await getNode(ctx, nodeId);
    const current = node.current_package;
    if (current) {
      const installed = readInstalledManifest(dir);
      if (installed?.node_id !== nodeId || installed.package_id !== current.id) {
        const pkg = await downloadDeployPackage(ctx, p.actor, nodeId, current.id);
        installDeployPackage(pkg.archive, dir);
      }
      return dir;
    }
    const job = node.onboarding_job;
    if (job && (job.status === "failed" || job.status === "cancelled")) {
      throw new DevError(`the node's onboarding job ${job.id} ${job.status}: ${job.last_error ?? "no error recorded"}`);
    }
    if (ctx.clock.now() > deadline) {
      throw new DevError(
        `the node's onboarding job did not finish within ${ONBOARDING_TIMEOUT_MS / 1000} s${job ? ` (job ${job.id}: ${job.status})` : ""}`,
      );
    }
    await p.wait(POLL_INTERVAL_MS);
  }
}

/** The demo application and its secret (shown once at creation, so it lives in the state file). */
async function ensureApplication(p: Provisioning): Promise<{ id: string; name: string; secret: string }> {
  const { ctx, actor, folder } = p;
  const known = folder.state.application;
  if (known) {
    try {
      const app = await getApplication(ctx, known.id);
      if (app.deleted_at !== null) p.warnings.push(`application ${known.id} is in the recycle bin: restore it, or the SDK is refused`);
      else if (app.status !== "active") p.warnings.push(`application ${known.id} is ${app.status}: the SDK is refused until it is active`);
      return known;
    } catch (error) {
      if (!notFound(error)) throw error;
      p.warnings.push(`application ${known.id} was purged from the CP: a new demo application was created`);
    }
  }
  p.checkpoint();
  const create = () => createApplication(ctx, actor, { name: DEV_APP_NAME, description: "Created by `authnexus dev`." });
  let created: Awaited<ReturnType<typeof create>>;
  try {
    created = await create();
  } catch (error) {
    if (!conflict(error)) throw error;
    // Created by a start interrupted before its secret was saved: without the secret it is of
    // no use (it has no users yet), so it is purged and made again.
    const { items } = await listApplications(ctx, "live", { page: 1, pageSize: 200 });
    const orphan = items.find((a) => a.name === DEV_APP_NAME);
    if (!orphan) throw error;
    await softDeleteApplication(ctx, actor, orphan.app_id);
    await purgeApplication(ctx, orphan.app_id);
    created = await create();
  }
  folder.state.application = { id: created.app_id, name: created.name, secret: created.app_secret };
  delete folder.state.demo_user?.id;
  folder.save();
  return folder.state.application;
}

/**
 * <dir>/sdk: the client certificate, its key, the CA bundles and authnexus-sdk.json, written by
 * the same code as `pki issue-client`. Kept while complete and for this application; otherwise
 * issued again (and the previous certificate revoked as superseded).
 */
async function ensureSdkFiles(p: Provisioning, appId: string, dir: string): Promise<string> {
  const { ctx, actor, folder } = p;
  const configPath = path.join(dir, SDK_CONFIG_FILE_NAME);
  const complete = SDK_FILES.every((f) => statOrNull(path.join(dir, f.name))?.isFile()) && readSdkConfig(configPath)?.app_id === appId;
  if (complete) return configPath;

  p.checkpoint();
  const issued = await issueClientCertificate(ctx, actor, appId);
  const partial = `${dir}.partial`;
  fs.rmSync(partial, { recursive: true, force: true });
  writeSdkFiles(partial, {
    client_cert: issued.certificate_pem,
    client_key: issued.private_key_pem,
    server_ca: issued.server_ca_pem,
    ocsp_signer_ca: issued.ocsp_signer_ca_pem,
    sdk_config: `${JSON.stringify(issued.sdk_config, null, 2)}\n`,
  });
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(partial, dir);
  const previous = folder.state.client_certificate_id;
  if (previous && previous !== issued.certificate_id) {
    await revokeCertificate(ctx, previous, "superseded", actor.username ?? "dev").catch(() => undefined);
  }
  folder.state.client_certificate_id = issued.certificate_id;
  folder.save();
  return configPath;
}

function readSdkConfig(file: string): Record<string, unknown> | null {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** authnexus-sdk.json names exactly the node's bound business address (it may change between runs). */
function writeSdkNodes(configPath: string, business: HostPort): void {
  const config = readSdkConfig(configPath);
  if (!config) throw new DevError(`${configPath} is missing or not JSON: remove ${path.dirname(configPath)} and start again`);
  const nodes = [{ host: DEV_HOST, port: business.port }];
  if (JSON.stringify(config.nodes) === JSON.stringify(nodes)) return;
  writeAtomically(configPath, `${JSON.stringify({ ...config, nodes }, null, 2)}\n`, 0o644);
}

/** The demo user; its password is generated and saved before the user is created, so a rerun can always finish the job. */
async function ensureDemoUser(p: Provisioning, appId: string): Promise<{ id: string; username: string; password: string }> {
  const { ctx, actor, folder } = p;
  if (!folder.state.demo_user) {
    folder.state.demo_user = { username: DEV_USERNAME, password: generateUserPassword() };
    folder.save();
  }
  const user = folder.state.demo_user;
  if (user.id) {
    try {
      await getUser(ctx, appId, user.id);
      return { id: user.id, username: user.username, password: user.password };
    } catch (error) {
      if (!notFound(error)) throw error;
      p.warnings.push(`the demo user was deleted from the CP: it was created again`);
    }
  }
  p.checkpoint();
  let id: string;
  try {
    id = (await createUser(ctx, actor, appId, { username: user.username, password: user.password })).id;
  } catch (error) {
    if (!conflict(error)) throw error;
    // The name exists (an interrupted start, or made by hand): give it the saved password.
    const { items } = await listUsers(ctx, appId, { q: user.username }, { page: 1, pageSize: 200 });
    const existing = items.find((u) => u.username === user.username);
    if (!existing) throw error;
    await resetUserPassword(ctx, actor, appId, existing.id, user.password);
    id = existing.id;
  }
  user.id = id;
  folder.save();
  return { id, username: user.username, password: user.password };
}

/** Whether the node has applied the application and its client CA trust bundle (what an SDK login needs). */
async function nodeKnowsApp(p: Provisioning, node: ServerNode, appId: string): Promise<boolean> {
  const deadline = p.ctx.clock.now() + APP_SYNC_TIMEOUT_MS;
  for (;;) {
    const app = node.agent.store.application(appId);
    if (app?.status === "active" && node.agent.store.appTrustPems(appId).length > 0) return true;
    if (p.ctx.clock.now() > deadline) return false;
    await p.wait(POLL_INTERVAL_MS);
  }
}
