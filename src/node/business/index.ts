/**
 * The business plane of a node, assembled: the security state over the agent's caches, the
 * login throttle, the auth flows, the request service and the TLS edge, bound to the business
 * port once staged startup has passed its last stage.
 */
import type { Kysely } from "kysely";
import type { HostPort } from "../../shared/config/host-port.js";
import { groupCommit, type RuntimeSchema } from "../../shared/db/index.js";
import type { Logger } from "../../shared/log/index.js";
import { DEFAULT_MAX_FRAME_BYTES } from "../../shared/protocol/index.js";
import type { Scheduler } from "../../shared/time/index.js";
import type { CpAgent } from "../agent/agent.js";
import { FunctionPool } from "../functions/pool.js";
import type { NodeMetrics } from "../metrics.js";
import type { LoadedAgentPackage } from "../package/load-agent-package.js";
import { AuthFlows } from "./auth-flows.js";
import type { LiveBusinessPlane } from "./business-plane.js";
import { CloudCalls } from "./cloud-calls.js";
import { BusinessEdge } from "./edge.js";
import { LoginThrottle } from "./login-throttle.js";
import type { ConnectionRegistry } from "./registry.js";
import { SecurityState } from "./security-state.js";
import { BusinessService } from "./service.js";

export type { BusinessPlane } from "./business-plane.js";
export { LiveBusinessPlane } from "./business-plane.js";
export { ConnectionRegistry } from "./registry.js";

export interface BusinessListenerOptions {
  pkg: LoadedAgentPackage;
  agent: CpAgent;
  db: Kysely<RuntimeSchema>;
  plane: LiveBusinessPlane;
  registry: ConnectionRegistry;
  scheduler: Scheduler;
  log: Logger;
  listen: HostPort;
  blacklistFailClosed: boolean;
  /** The worker pool cloud functions run on: threads, and calls that may wait for one. */
  functions: { workers: number; queue: number };
  /** Handshakes, requests, logins, cloud function calls and group commits, for GET /metrics. */
  metrics?: NodeMetrics;
}

export interface BusinessListener {
  address: HostPort;
  close(): Promise<void>;
}

export async function startBusinessListener(options: BusinessListenerOptions): Promise<BusinessListener> {
  const { pkg, agent, db, scheduler, registry } = options;
  const clock = scheduler.clock;
  const nodeId = pkg.manifest.node_id;
  const log = { tls: options.log.category("TLS"), security: options.log.category("Security"), server: options.log.category("Server") };
  const security = new SecurityState({
    blacklist: agent.blacklist,
    epochs: agent.epochs,
    clock,
    freshness: () => agent.securityFreshness(),
    failClosed: options.blacklistFailClosed,
  });
  const throttle = new LoginThrottle(clock, () => agent.store.serverRuntimeSettings().login_attempts_per_minute);
  const { metrics } = options;
  const writes = groupCommit(db, metrics ? { onBatch: (units) => metrics.groupCommitted(units) } : {});
  const auth = new AuthFlows({
    db,
    writes,
    nodeId,
    clock,
    log: log.security,
    passwordHashKey: pkg.passwordHashKey,
    security,
    throttle,
    policy: (appId) => agent.store.appPolicy(appId),
    settings: () => agent.store.serverRuntimeSettings(),
  });
  const pool = await FunctionPool.start({
    size: options.functions.workers,
    maxQueue: options.functions.queue,
    scheduler,
    log: log.server,
  });
  const cloud = new CloudCalls({ db, writes, store: agent.store, pool: countedPool(pool, metrics), clock });
  const service = new BusinessService({
    nodeId,
    db,
    store: agent.store,
    registry,
    auth,
    cloud,
    security,
    clock,
    maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    log,
    onRequest: (failed) => options.plane.countRequest(failed),
    ...(metrics ? { metrics } : {}),
  });
  const edge = new BusinessEdge({
    pkg,
    store: agent.store,
    registry,
    scheduler,
    log: { tls: log.tls, server: log.server },
    credentials: agent.credentials,
    staple: (certificate) => agent.stapler.stapleFor(certificate),
    host: service,
    ...(metrics ? { onRefused: (layer: "connection_limit" | "1" | "2" | "3") => metrics.handshakeRefused(layer) } : {}),
  });
  let address: HostPort;
  try {
    address = await edge.listen(options.listen);
  } catch (error) {
    await pool.close();
    throw error;
  }
  return {
    address,
    close: async () => {
      options.plane.detach();
      await edge.close();
      // After the edge: no connection is left to call a function.
      await pool.close();
    },
  };
}

/** The pool as cloud calls see it, its calls counted and timed when metrics are kept. */
function countedPool(pool: FunctionPool, metrics: NodeMetrics | undefined): FunctionPool {
  if (!metrics) return pool;
  const call = metrics.countingCalls((request) => pool.call(request));
  return new Proxy(pool, {
    get: (target, property, receiver) => (property === "call" ? call : Reflect.get(target, property, receiver)),
  });
}
