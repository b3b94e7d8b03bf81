/**
 * Starts and stops the Control Plane: databases and migrations, the master key, then the
 * admin listener. The node (9091, mTLS) and OCSP (9092) listeners are bound only once setup has
 * completed — before that there is no PKI to serve them from — and setup starts them without a
 * restart.
 */
import http from "node:http";
import https from "node:https";
import { getRequestListener } from "@hono/node-server";
import { controlMigrationSet } from "../../migrations/control/index.js";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import { CP_TLS_IDENTITY_CHECK_MS, NODE_API_KEEP_ALIVE_MS, SHUTDOWN_GRACE_MS } from "../shared/config/defaults.js";
import { formatHostPort, type HostPort } from "../shared/config/host-port.js";
import { type ControlSchema, openMigratedDatabase, type RuntimeSchema } from "../shared/db/index.js";
import { newId } from "../shared/ids.js";
import type { Logger } from "../shared/log/index.js";
import { type BoundListener, bindListener } from "../shared/net/listener.js";
import { every, type Scheduler } from "../shared/time/index.js";
import { createAdminApp } from "./admin/app.js";
import type { CpConfig } from "./config.js";
import { createPkiJobWorker } from "./jobs/index.js";
import { CpMetrics } from "./metrics.js";
import { createNodeApiApp } from "./node-api/app.js";
import { createSseHub, type SseHub } from "./node-api/sse-hub.js";
import { createOcspAnswerer, createOcspListener } from "./ocsp/index.js";
import { ensureClientCaBundles } from "./services/applications/applications.js";
import { startAuditChains } from "./services/audit/chains.js";
import type { CpContext } from "./services/context.js";
import { createEventBus } from "./services/event-bus.js";
import { createCheckinCache } from "./services/nodes/checkin-cache.js";
import { type CpTlsIdentity, ensureCpServerCertificate, loadCpTlsIdentity, nodeApiTlsOptions } from "./services/pki/cp-identity.js";
import { createInventoryResolver, loadOcspIssuers } from "./services/pki/ocsp-status.js";
import { scheduleRenewal } from "./services/pki/renewal.js";
import { scheduleRetentionPass } from "./services/security/retention.js";
import { loadMasterKey } from "./services/setup/master-key.js";
import { ensureSetupRow, isSetupComplete, prepareConsoleToken, verifyMasterKey } from "./services/setup/setup.js";

export interface ControlPlane {
  context: CpContext;
  /** Its Prometheus metrics (GET /metrics on the admin listener). */
  metrics: CpMetrics;
  adminAddress: HostPort;
  /** Bound after setup; null while the CP is in setup-only mode. */
  cpAddress(): HostPort | null;
  ocspAddress(): HostPort | null;
  /** The console token when this start minted one (print it once), else null. */
  consoleToken: string | null;
  consoleTokenPath: string | null;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Every timer of the CP, and its clock. */
  scheduler: Scheduler;
  log: Logger;
  shutdownGraceMs?: number;
}

export async function startControlPlane(config: CpConfig, options: StartOptions): Promise<ControlPlane> {
  const { log, scheduler } = options;
  const clock = scheduler.clock;
  const setupLog = log.category("Setup");
  const masterKey = loadMasterKey({ envValue: config.masterKeyValue, file: config.masterKeyFile, dataDir: config.dataDir }, setupLog);
  const controlDb = await openMigratedDatabase<ControlSchema>(config.controlDb, controlMigrationSet, log, { server: true });
  const runtimeDb = await openMigratedDatabase<RuntimeSchema>(config.runtimeDb, runtimeMigrationSet, log, { server: true }).catch(
    async (error) => {
      await controlDb.destroy();
      throw error;
    },
  );
  const events = createEventBus((error) => log.category("SSE").error("event_bus.listener_failed", { error: (error as Error).message }));
  const ctx: CpContext = {
    controlDb,
    runtimeDb,
    clock,
    scheduler,
    log,
    masterKey,
    publicCpUrl: config.publicCpUrl,
    publicOcspUrl: config.publicOcspUrl,
    dataDir: config.dataDir,
    events,
    checkinCache: createCheckinCache(controlDb, events),
    instanceId: newId("cp"),
    pki: config.pki,
    reportTimeZone: config.reportTimeZone,
  };
  startAuditChains(ctx);
  const listeners: BoundListener[] = [];
  const lifecycle = { stopping: false };
  const sse = createSseHub(ctx);
  const metrics = new CpMetrics();
  metrics.watchSse(() => sse.size);
  metrics.watchDatabases(ctx);
  const stopRetention = scheduleRetentionPass(ctx);
  const jobWorker = createPkiJobWorker(ctx);
  let stopRenewal: (() => void) | undefined;
  const closeAll = async () => {
    lifecycle.stopping = true;
    // Open SSE streams would otherwise hold the node listener for the whole grace period.
    stopRetention();
    stopRenewal?.();
    ctx.checkinCache.close();
    await sse.closeAll();
    await jobWorker.stop();
    await Promise.all(listeners.splice(0).map((l) => l.close(options.shutdownGraceMs ?? SHUTDOWN_GRACE_MS)));
    await Promise.all([controlDb.destroy(), runtimeDb.destroy()]);
  };

  try {
    await ensureSetupRow(ctx);
    await verifyMasterKey(ctx);
    let setupComplete = await isSetupComplete(ctx);
    let channelListeners: Promise<void> | null = null;
    const startChannels = () => {
      setupComplete = true;
      if (!lifecycle.stopping) jobWorker.start();
      if (!lifecycle.stopping) stopRenewal ??= scheduleRenewal(ctx);
      channelListeners ??= startChannelListeners(ctx, config, listeners, lifecycle, sse, metrics);
      return channelListeners;
    };

    // While pending, ask the Control DB: another CP process sharing it may have completed setup.
    const setupDone = async () => {
      if (!setupComplete && (await isSetupComplete(ctx))) await startChannels();
      return setupComplete;
    };
    const admin = createAdminApp(ctx, { isSetupComplete: setupDone, onSetupComplete: startChannels, metrics });
    const adminListener = await bindListener("admin", http.createServer(getRequestListener(admin.fetch)), config.adminListen, scheduler);
    listeners.push(adminListener);
    log.category("Server").info("listener.bound", { listener: "admin", address: formatHostPort(adminListener.address) });

    let token: { token: string | null; path: string } | null = null;
    if (setupComplete) await startChannels();
    else {
      token = await prepareConsoleToken(ctx);
      setupLog.warn("setup required: the CP serves only /admin/v1/setup/* until POST /admin/v1/setup/initialize", {
        console_token_path: token.path,
      });
    }
    const address = (name: string) => () => listeners.find((l) => l.name === name)?.address ?? null;
    return {
      context: ctx,
      metrics,
      adminAddress: adminListener.address,
      cpAddress: address("node-api"),
      ocspAddress: address("ocsp"),
      consoleToken: token?.token ?? null,
      consoleTokenPath: token?.path ?? null,
      stop: closeAll,
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/**
 * Node API and OCSP are separate fault domains: one failing to start (a port in use, no usable
 * certificate) never keeps the other down. Setup has committed by the time this runs, so a
 * failure is logged rather than turned into an error answer; the next start tries again.
 */
async function startChannelListeners(
  ctx: CpContext,
  config: CpConfig,
  listeners: BoundListener[],
  lifecycle: { stopping: boolean },
  sse: SseHub,
  metrics: CpMetrics,
): Promise<void> {
  const serverLog = ctx.log.category("Server");
  await ensureClientCaBundles(ctx).then(
    (published) => published > 0 && ctx.log.category("PKI").info("app_trust_bundles.published", { applications: published }),
    (error: unknown) => ctx.log.category("PKI").error("app_trust_bundles.failed", { error: (error as Error).message }),
  );
  const attempt = async (name: string, start: () => Promise<BoundListener>) => {
    try {
      const bound = await start();
      // A stop that arrived while this one was binding has already closed the others.
      if (lifecycle.stopping) return bound.close(0);
      listeners.push(bound);
      serverLog.info("listener.bound", { listener: name, address: formatHostPort(bound.address) });
    } catch (error) {
      serverLog.error("listener.failed", { listener: name, error: (error as Error).message });
    }
  };
  await Promise.all([
    attempt("node-api", () => startNodeApiListener(ctx, config, sse, metrics)),
    attempt("ocsp", () => startOcspListener(ctx, config, metrics)),
  ]);
}

async function startNodeApiListener(ctx: CpContext, config: CpConfig, sse: SseHub, metrics: CpMetrics): Promise<BoundListener> {
  await ensureCpServerCertificate(ctx);
  let identity = await loadCpTlsIdentity(ctx);
  const tlsLog = ctx.log.category("TLS");
  const nodeServer = https.createServer(nodeApiTlsOptions(identity), getRequestListener(createNodeApiApp(ctx, sse, metrics).fetch));
  // New handshakes get a renewed certificate or a changed set of trusted node CAs; connections
  // already open keep theirs. Another CP process may have made the change: the check compares.
  const reload = async (trigger: string) => {
    const next = await loadCpTlsIdentity(ctx);
    if (sameIdentity(next, identity)) return;
    nodeServer.setSecureContext(nodeApiTlsOptions(next));
    identity = next;
    tlsLog.info("identity.reloaded", { listener: "node-api", trigger, node_client_cas: next.nodeClientCaPems.length });
  };
  // One reload at a time: two at once could each issue a CP certificate.
  let reloading: Promise<void> = Promise.resolve();
  const reloadLogged = (trigger: string) => {
    reloading = reloading
      .then(async () => {
        await ensureCpServerCertificate(ctx);
        await reload(trigger);
      })
      .catch((error: unknown) => tlsLog.error("identity.reload_failed", { trigger, error: (error as Error).message }));
  };
  const stopCheck = every(ctx.scheduler, CP_TLS_IDENTITY_CHECK_MS, () => reloadLogged("check"), { background: true });
  const unsubscribe = ctx.events.onTlsIdentityChanged(() => reloadLogged("event"));
  // Nodes call every few seconds (5 s epoch polls): keep their connections past that, so a
  // pull reuses its mTLS session instead of paying a full handshake each time.
  nodeServer.keepAliveTimeout = NODE_API_KEEP_ALIVE_MS;
  nodeServer.headersTimeout = NODE_API_KEEP_ALIVE_MS + 5_000;
  nodeServer.on("tlsClientError", (error, socket) => {
    tlsLog.warn("handshake.failed", {
      listener: "node-api",
      ip: socket.remoteAddress,
      code: (error as NodeJS.ErrnoException).code,
      error: error.message,
    });
  });
  const bound = await bindListener("node-api", nodeServer, config.cpListen, ctx.scheduler).catch((error: unknown) => {
    stopCheck();
    unsubscribe();
    throw error;
  });
  return {
    ...bound,
    close: async (graceMs) => {
      stopCheck();
      unsubscribe();
      await bound.close(graceMs);
    },
  };
}

function sameIdentity(a: CpTlsIdentity, b: CpTlsIdentity): boolean {
  return a.certPem === b.certPem && a.serverCaPem === b.serverCaPem && a.nodeClientCaPems.join("\n") === b.nodeClientCaPems.join("\n");
}

async function startOcspListener(ctx: CpContext, config: CpConfig, metrics: CpMetrics): Promise<BoundListener> {
  const pkiLog = ctx.log.category("PKI");
  const resolve = createInventoryResolver(ctx, await loadOcspIssuers(ctx));
  const answer = createOcspAnswerer({
    // Counted per certificate looked up: its status, or unauthorized when no CA here issued it.
    resolve: async (query) => {
      const resolved = await resolve(query);
      metrics.ocspResponses.inc({ status: resolved ? resolved.status.kind : "unauthorized" });
      return resolved;
    },
    clock: ctx.clock,
    onError: (error, answeredWith) => {
      metrics.ocspResponses.inc({ status: answeredWith });
      pkiLog.warn("ocsp.request_failed", { answered_with: answeredWith, error: (error as Error).message });
    },
  });
  return bindListener("ocsp", http.createServer(createOcspListener({ answer })), config.ocspListen, ctx.scheduler);
}
