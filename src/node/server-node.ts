/**
 * Starts and stops a server node. Staged startup, in order: load the deploy package, open and
 * migrate the Runtime DB, connect to the CP (first successful checkin; retried with backoff for
 * as long as it takes), apply the initial configs, fetch the first OCSP response — and only
 * then bind the business listener. A node that cannot reach the CP never binds it. The local
 * health endpoint is up from the first moment, so /readyz and /status show which stage a
 * starting node is waiting in.
 */

import http from "node:http";
import { getRequestListener } from "@hono/node-server";
import type { Kysely } from "kysely";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import { deriveAuditKey } from "../shared/audit/chain-hash.js";
import { DEFAULT_BUSINESS_HOST, SHUTDOWN_GRACE_MS } from "../shared/config/defaults.js";
import { formatHostPort, type HostPort } from "../shared/config/host-port.js";
import { configureAuditChains } from "../shared/db/audit-chains.js";
import { openMigratedDatabase, type RuntimeSchema } from "../shared/db/index.js";
import type { Logger } from "../shared/log/index.js";
import { bindListener } from "../shared/net/listener.js";
import { type Clock, realScheduler, type Scheduler, systemClock } from "../shared/time/index.js";
import { softwareVersion } from "../shared/version.js";
import { CpAgent, type CpAgentStatus, createNodeState } from "./agent/agent.js";
import type { RandomSource } from "./agent/backoff.js";
import type { OcspTransport } from "./agent/ocsp-stapler.js";
import { type BusinessListener, ConnectionRegistry, LiveBusinessPlane, startBusinessListener } from "./business/index.js";
import type { NodeConfig } from "./config.js";
import { createHealthApp } from "./health/health-app.js";
import { NodeMetrics } from "./metrics.js";
import { type LoadedAgentPackage, loadAgentPackage } from "./package/load-agent-package.js";

export const NODE_STAGES = [
  "load_package",
  "open_db",
  "connect_cp",
  "initial_configs",
  "first_ocsp",
  "ready",
  "stopping",
  "stopped",
] as const;
export type NodeStage = (typeof NODE_STAGES)[number];

export interface StartServerNodeOptions {
  log: Logger;
  /** Defaults to the system clock; the scheduler's clock wins when both are given. */
  clock?: Clock;
  scheduler?: Scheduler;
  random?: RandomSource;
  sseSilenceTimeoutMs?: number;
  ocspTransport?: OcspTransport;
  deltaPageLimit?: number;
  shutdownGraceMs?: number;
}

export interface NodeStatusReport extends Partial<CpAgentStatus> {
  /** The business port: where it is bound (null until staged startup is done) and what it serves. */
  business: {
    address: string | null;
    connections: number;
    blacklist_fail_closed: boolean;
    metrics?: ReturnType<LiveBusinessPlane["metrics"]>;
  };
  node_id: string | null;
  node_name: string | null;
  stage: NodeStage;
  ready: boolean;
  software_version: string;
  started_at: number;
}

export interface ServerNode {
  healthAddress: HostPort;
  /** Its Prometheus metrics (GET /metrics on the health listener). */
  metrics: NodeMetrics;
  agent: CpAgent;
  pkg: LoadedAgentPackage;
  /** Settles true once ready, false if stopped first. */
  ready: Promise<boolean>;
  stage(): NodeStage;
  status(): NodeStatusReport;
  currentStaple(): Buffer | null;
  /** Where the business port is bound; null until staged startup is done. */
  businessAddress(): HostPort | null;
  stop(): Promise<void>;
}

export async function startServerNode(config: NodeConfig, options: StartServerNodeOptions): Promise<ServerNode> {
  const scheduler = options.scheduler ?? realScheduler(options.clock ?? systemClock);
  const clock = scheduler.clock;
  const log = options.log;
  const serverLog = log.category("Server");
  const startedAt = clock.now();
  let stage: NodeStage = "load_package";
  let pkg: LoadedAgentPackage | null = null;
  let agent: CpAgent | null = null;
  let plane: LiveBusinessPlane | null = null;
  const registry = new ConnectionRegistry();
  const metrics = new NodeMetrics();
  metrics.watchConnections(() => registry.size);
  const enter = (next: NodeStage) => {
    stage = next;
    serverLog.info("stage.entered", { stage: next });
  };
  let businessListener: BusinessListener | null = null;
  const status = (): NodeStatusReport => ({
    node_id: pkg?.manifest.node_id ?? null,
    node_name: pkg?.manifest.node_name ?? null,
    stage,
    ready: stage === "ready",
    software_version: softwareVersion(),
    started_at: startedAt,
    business: {
      address: businessListener ? formatHostPort(businessListener.address) : null,
      connections: registry.size,
      blacklist_fail_closed: config.blacklistFailClosed,
      ...(plane ? { metrics: plane.metrics() } : {}),
    },
    ...(agent ? agent.status() : {}),
  });

  const health = await bindListener(
    "health",
    http.createServer(
      getRequestListener(
        createHealthApp({ stage: () => stage, ready: () => stage === "ready", status, metrics: () => metrics.registry.exposition() }).fetch,
      ),
    ),
    config.healthListen,
    scheduler,
  );
  serverLog.info("listener.bound", { listener: "health", address: formatHostPort(health.address) });
  if (!isLoopback(health.address.host)) {
    serverLog.warn("health.exposed", {
      address: formatHostPort(health.address),
      note: "/status describes this node's sync state to anyone who can reach it; keep --health-listen on loopback or firewall it",
    });
  }

  let db: Kysely<RuntimeSchema> | null = null;
  try {
    enter("load_package");
    pkg = await loadAgentPackage(config.agentFile, clock);
    for (const warning of pkg.warnings) log.category("TLS").warn("package.insecure_file", { warning });
    serverLog.info("package.loaded", {
      node_id: pkg.manifest.node_id,
      package_id: pkg.manifest.package_id,
      cp_url: pkg.manifest.cp_url,
      ocsp_url: pkg.manifest.ocsp_url,
    });

    enter("open_db");
    db = await openMigratedDatabase<RuntimeSchema>(config.runtimeDb, runtimeMigrationSet, log, { server: true });
    configureAuditChains(db, { writerId: pkg.manifest.node_id, key: deriveAuditKey(pkg.passwordHashKey, "runtime") });

    const state = createNodeState();
    plane = new LiveBusinessPlane({ registry, db, clock, log: log.category("Server").with({ node_id: pkg.manifest.node_id }), ...state });
    agent = new CpAgent({
      pkg,
      db,
      scheduler,
      log: log.with({ node_id: pkg.manifest.node_id }),
      business: plane,
      state,
      ...(options.random ? { random: options.random } : {}),
      ...(options.sseSilenceTimeoutMs ? { sseSilenceTimeoutMs: options.sseSilenceTimeoutMs } : {}),
      ...(options.ocspTransport ? { ocspTransport: options.ocspTransport } : {}),
      ...(options.deltaPageLimit ? { deltaPageLimit: options.deltaPageLimit } : {}),
    });
    metrics.watchDatabase(db);
    metrics.watchAgent(agent, () => clock.now());
    await agent.loadState();
  } catch (error) {
    await db?.destroy().catch(() => undefined);
    await health.close(0);
    throw error;
  }

  const readyAgent = agent;
  const readyPkg = pkg;
  const openDb = db;
  let stopRequested = false;
  let resolveStopped!: () => void;
  const stopped = new Promise<"stopped">((resolve) => {
    resolveStopped = () => resolve("stopped");
  });
  const livePlane = plane;
  const until = async (work: Promise<void>) => (await Promise.race([work.then(() => "done" as const), stopped])) === "done";

  const runStages = async (): Promise<boolean> => {
    enter("connect_cp");
    if (!(await until(readyAgent.connect()))) return false;
    enter("initial_configs");
    if (!(await until(readyAgent.startChannels()))) return false;
    enter("first_ocsp");
    if (!(await until(readyAgent.startOcsp()))) return false;
    // The business port: bound here, after every stage, never before.
    const listener = await startBusinessListener({
      pkg: readyPkg,
      agent: readyAgent,
      db: openDb,
      plane: livePlane,
      registry,
      scheduler,
      log: log.with({ node_id: readyPkg.manifest.node_id }),
      listen: config.listen ?? { host: DEFAULT_BUSINESS_HOST, port: readyPkg.manifest.business.port },
      blacklistFailClosed: config.blacklistFailClosed,
      functions: { workers: config.functionWorkers, queue: config.functionQueue },
      metrics,
    });
    businessListener = listener;
    serverLog.info("listener.bound", {
      listener: "business",
      address: formatHostPort(listener.address),
      blacklist_fail_closed: config.blacklistFailClosed,
    });
    if (stopRequested) {
      // stop() ran while the port was being bound: it could not close what did not exist yet.
      await listener.close();
      return false;
    }
    enter("ready");
    // The first checkin went out before OCSP and SSE were up: tell the CP the full picture now.
    readyAgent.wake("checkin");
    serverLog.info("node.ready", {
      node_id: readyPkg.manifest.node_id,
      business_address: formatHostPort(listener.address),
      startup_ms: clock.now() - startedAt,
    });
    return true;
  };
  const ready = runStages().catch((error: unknown) => {
    serverLog.error("startup.failed", { stage, error: error instanceof Error ? error.message : String(error) });
    return false;
  });

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      stopRequested = true;
      enter("stopping");
      resolveStopped();
      await businessListener?.close();
      await readyAgent.stop();
      await ready;
      await health.close(options.shutdownGraceMs ?? SHUTDOWN_GRACE_MS);
      await openDb.destroy();
      enter("stopped");
    })();
    return stopping;
  };

  return {
    healthAddress: health.address,
    metrics,
    agent: readyAgent,
    pkg: readyPkg,
    ready,
    stage: () => stage,
    status,
    currentStaple: () => readyAgent.stapler.currentStaple(),
    businessAddress: () => businessListener?.address ?? null,
    stop,
  };
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}
