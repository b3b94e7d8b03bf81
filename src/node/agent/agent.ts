/**
 * The CP agent: wires the CP client, the loops (checkin, commands, configs, the two delta
 * streams), the SSE subscriber and the OCSP stapler to the node's state. Timing comes from the
 * applied cp_agent_runtime (defaults until the CP delivers one) and from SSE health: while the
 * stream is down, the delta, command and config polls tighten to the degraded intervals
 * (800 ms epochs / 5 s blacklist; commands and configs at most every degraded blacklist
 * interval), and when it comes back every loop pulls once, because hints may have been missed.
 * An `ocsp.refresh` hint (or a checkin reporting a new node status) fetches the staple at once;
 * a staple that turns revoked ends the live SDK connections with a force_logout push.
 */

import { EventEmitter } from "node:events";
import type { Kysely } from "kysely";
import { POLL_JITTER_RATIO } from "../../shared/config/defaults.js";
import type { RuntimeSchema } from "../../shared/db/index.js";
import type { Logger } from "../../shared/log/index.js";
import { type CpAgentRuntime, type DeltaStream, GLOBAL_SCOPE, type HintEvent } from "../../shared/node-protocol/index.js";
import { revocationReasonCode } from "../../shared/pki/index.js";
import type { OcspCertStatus } from "../../shared/pki/ocsp/index.js";
import type { Scheduler } from "../../shared/time/index.js";
import { softwareVersion } from "../../shared/version.js";
import type { BusinessPlane } from "../business/business-plane.js";
import type { LoadedAgentPackage } from "../package/load-agent-package.js";
import { BlacklistCache } from "../state/blacklist-cache.js";
import { type AppliedConfig, AppliedConfigStore } from "../state/config-store.js";
import { AuthEpochCache } from "../state/epoch-cache.js";
import { NodeCredentials, pemToDer } from "../state/node-credentials.js";
import { type CursorStream, loadBlacklist, loadEpochs } from "../state/runtime-sync.js";
import { Backoff, type RandomSource } from "./backoff.js";
import { CheckinLoop, type LastCheckin } from "./checkin-loop.js";
import { type CommandOutcome, CommandRunner, createCommandHandlers } from "./command-runner.js";
import { ConfigSync, type ConfigSyncResult } from "./config-sync.js";
import { CpCallError } from "./cp-call-error.js";
import { CpClient } from "./cp-client.js";
import { CredentialRotation } from "./credential-rotation.js";
import { DeltaPuller } from "./delta-puller.js";
import { OcspStapler, type OcspStatus, type OcspTransport } from "./ocsp-stapler.js";
import { PeriodicTask } from "./periodic-task.js";
import { delayAfterFailure } from "./retry-delay.js";
import { type SseState, SseSubscriber } from "./sse-subscriber.js";

/** What SDK clients are told when the node's own certificate stops vouching for it. */
/**
 * What an operator must do when the CP refuses this node's client certificate as revoked: the
 * node's package was reissued (or its certificates revoked), and retrying can never succeed.
 */
export const REVOKED_CREDENTIALS_ACTION =
  "the CP revoked this node's client certificate (its deploy package was reissued or its certificates revoked): stop the node, remove the old certificate files and enroll it with the new deploy package from GET /admin/v1/nodes/:nid/deploy-packages";

export const NODE_DISABLED_MESSAGE = "this node was disabled by the operator";
export const NODE_REVOKED_MESSAGE = "this node's certificate was revoked";

export interface CpAgentOptions {
  pkg: LoadedAgentPackage;
  db: Kysely<RuntimeSchema>;
  scheduler: Scheduler;
  log: Logger;
  business: BusinessPlane;
  /** The state to keep current; a fresh one when absent. */
  state?: NodeState;
  random?: RandomSource;
  /** Overrides SSE_SILENCE_TIMEOUT_MS (tests). */
  sseSilenceTimeoutMs?: number;
  ocspTransport?: OcspTransport;
  /** Page size for delta pulls (the CP's default when absent). */
  deltaPageLimit?: number;
}

/** What the agent emits, for the health endpoint's neighbours and for tests that wait on events. */
export interface CpAgentEvents {
  checkin: [LastCheckin];
  "command.reported": [{ commandId: string; kind: string; outcome: CommandOutcome }];
  "configs.synced": [ConfigSyncResult];
  "config.applied": [AppliedConfig];
  "delta.applied": [{ stream: string; changes: number; cursor: number }];
  "sse.state": [SseState];
  "ocsp.updated": [OcspStatus];
  "credentials.applied": [{ rotationId: string }];
}

/** The agent's state as /status reports it (snake_case JSON, like every AuthNexus API). */
export interface CpAgentStatus {
  sse: {
    state: SseState;
    since: number;
    reconnects: number;
    last_frame_at: number | null;
    last_error: string | null;
    hints_received: number;
  };
  cursors: Record<CursorStream, number>;
  /** The newest id of each log as of the last checkin. */
  heads: Record<CursorStream, number> | null;
  configs: { type: string; scope: string; version: number; applied_at: number }[];
  ocsp: {
    status: OcspStatus["status"];
    fetched_at: number | null;
    this_update: number | null;
    next_update: number | null;
    last_attempt_at: number | null;
    last_error: string | null;
  };
  /** cloud_functions: functions served; cloud_functions_rejected: functions whose newest body did not compile here. */
  caches: { blacklist_entries: number; auth_epochs: number; cloud_functions: number; cloud_functions_rejected: number };
  last_checkin: { at: number; ok: boolean; error: string | null; node_status: string | null; server_time: number | null } | null;
  loops: Record<
    string,
    { runs: number; last_success_at: number | null; last_error: string | null; consecutive_failures: number; next_run_at: number | null }
  >;
}

type LoopName = "checkin" | "commands" | "configs" | "auth-epochs" | "blacklist";

/** The node's in-memory state the agent keeps current (created by the node so the business plane shares it). */
export interface NodeState {
  store: AppliedConfigStore;
  blacklist: BlacklistCache;
  epochs: AuthEpochCache;
}

export function createNodeState(): NodeState {
  return { store: new AppliedConfigStore(), blacklist: new BlacklistCache(), epochs: new AuthEpochCache() };
}

export class CpAgent {
  readonly store: AppliedConfigStore;
  readonly blacklist: BlacklistCache;
  readonly epochs: AuthEpochCache;
  readonly events = new EventEmitter<CpAgentEvents>();
  readonly client: CpClient;
  readonly sse: SseSubscriber;
  readonly stapler: OcspStapler;
  /** What the node serves and presents now: the package's certificates, then each rotation's. */
  readonly credentials: NodeCredentials;
  private readonly rotation: CredentialRotation;
  private readonly checkin: CheckinLoop;
  private readonly commands: CommandRunner;
  private readonly configs: ConfigSync;
  private readonly deltas: Record<"auth-epochs" | "blacklist", DeltaPuller>;
  private readonly loops: Record<LoopName, PeriodicTask>;
  private readonly log: { agent: Logger; security: Logger; sse: Logger; tls: Logger };
  private configPendingBefore = false;
  private stateLoadedAt: number | null = null;

  constructor(private readonly options: CpAgentOptions) {
    const state = options.state ?? createNodeState();
    this.store = state.store;
    this.blacklist = state.blacklist;
    this.epochs = state.epochs;
    const { pkg, db, scheduler, business } = options;
    const nodeId = pkg.manifest.node_id;
    const clock = scheduler.clock;
    this.log = {
      agent: options.log.category("CP Agent"),
      security: options.log.category("Security"),
      sse: options.log.category("SSE"),
      tls: options.log.category("TLS"),
    };
    const rt = () => this.store.cpAgentRuntime();
    const backoff = () => new Backoff(() => ({ baseMs: rt().backoff_base_ms, maxMs: rt().backoff_max_ms }), options.random);
    this.credentials = new NodeCredentials({
      server: { certPem: pkg.server.pem, keyPem: pkg.server.keyPem },
      serverIssuerPem: pkg.serverIssuer.pem,
      client: { certPem: pkg.client.pem, keyPem: pkg.client.keyPem },
      cpCaPem: pkg.cpCaPem,
    });
    this.client = new CpClient({
      cpUrl: pkg.manifest.cp_url,
      nodeId,
      tls: { caPem: pkg.cpCaPem, certPem: pkg.client.pem, keyPem: pkg.client.keyPem },
      requestTimeoutMs: () => rt().request_timeout_ms,
      scheduler,
    });
    const caches = { blacklist: this.blacklist, epochs: this.epochs };
    const onDelta = (applied: { stream: string; changes: number; cursor: number }) => this.events.emit("delta.applied", applied);
    const puller = (stream: DeltaStream) =>
      new DeltaPuller({
        stream,
        nodeId,
        db,
        client: this.client,
        clock,
        log: this.log.security,
        caches,
        onApplied: onDelta,
        ...(options.deltaPageLimit ? { pageLimit: options.deltaPageLimit } : {}),
      });
    this.deltas = { "auth-epochs": puller("auth-epochs"), blacklist: puller("blacklist") };
    this.configs = new ConfigSync({
      client: this.client,
      store: this.store,
      clock,
      log: this.log.agent,
      onSynced: (result) => this.events.emit("configs.synced", result),
      onCredentials: (delivery) => this.rotation.apply(delivery),
    });
    this.commands = new CommandRunner({
      nodeId,
      db,
      client: this.client,
      clock,
      log: this.log.agent,
      handlers: createCommandHandlers({ business, reloadConfigs: () => this.reloadConfigs() }),
      onReported: ({ command, outcome }) => this.events.emit("command.reported", { commandId: command.id, kind: command.kind, outcome }),
    });
    this.sse = new SseSubscriber({
      client: this.client,
      scheduler,
      backoff: backoff(),
      log: this.log.sse,
      onHint: (hint) => this.onHint(hint),
      onStateChange: (state) => this.onSseState(state),
      failureDelayMs: (failure, b) => delayAfterFailure(failure, b, rt().backoff_max_ms),
      ...(options.sseSilenceTimeoutMs ? { silenceTimeoutMs: options.sseSilenceTimeoutMs } : {}),
    });
    this.stapler = new OcspStapler({
      url: pkg.manifest.ocsp_url,
      certDer: pemToDer(pkg.server.pem),
      issuerDer: pkg.serverIssuer.der,
      scheduler,
      backoff: backoff(),
      log: this.log.tls,
      refreshMs: () => rt().ocsp_refresh_ms,
      requestTimeoutMs: () => rt().request_timeout_ms,
      ...(options.ocspTransport ? { transport: options.ocspTransport } : {}),
      onUpdate: (status) => this.events.emit("ocsp.updated", status),
      onStatusChanged: (status) => this.onStapleStatusChanged(status),
    });
    this.rotation = new CredentialRotation({
      nodeId,
      agentFile: pkg.file,
      credentials: this.credentials,
      client: this.client,
      probeClient: (tls) =>
        new CpClient({
          cpUrl: pkg.manifest.cp_url,
          nodeId,
          tls,
          requestTimeoutMs: () => rt().request_timeout_ms,
          scheduler,
        }),
      cursors: () => this.cursors(),
      stapler: this.stapler,
      clock,
      log: { agent: this.log.agent, tls: this.log.tls },
      onApplied: (rotationId) => this.events.emit("credentials.applied", { rotationId }),
    });
    this.checkin = new CheckinLoop({
      client: this.client,
      clock,
      log: this.log.agent,
      softwareVersion: softwareVersion(),
      startedAt: clock.now(),
      business,
      store: this.store,
      cursors: () => this.cursors(),
      sseConnected: () => this.sse.connected,
      ocsp: () => this.stapler.status(),
      onBehind: ({ streams, configPending }) => {
        for (const stream of streams) this.loops[stream].wake();
        // "Pending" also describes a version this node rejected: pulling again would only fetch
        // it again. Wake on the change to pending, or when no rejection explains it.
        if (configPending && (!this.configPendingBefore || !this.configs.holdsRejections)) this.loops.configs.wake();
        this.configPendingBefore = configPending;
      },
      onNodeStatusChanged: (status) => this.onNodeStatusChanged(status),
    });

    this.loops = this.createLoops(backoff);
    this.store.onApplied((applied) => {
      this.events.emit("config.applied", applied);
      if (applied.type === "cp_agent_runtime" && applied.scope === GLOBAL_SCOPE) this.onRuntimeChanged(applied.content as CpAgentRuntime);
    });
  }

  /**
   * The five pull loops and their intervals. While SSE is down, the delta polls use the degraded
   * intervals and the command and config polls tighten to at most the degraded blacklist one
   * (cp_agent_runtime has no separate degraded value for them).
   */
  private createLoops(backoff: () => Backoff): Record<LoopName, PeriodicTask> {
    const { scheduler } = this.options;
    const rt = () => this.store.cpAgentRuntime();
    const degraded = () => !this.sse.connected;
    const random = this.options.random ?? Math.random;
    const loop = (name: LoopName, run: () => Promise<unknown>, intervalMs: () => number, log: Logger) =>
      new PeriodicTask({
        name,
        scheduler,
        backoff: backoff(),
        run: async () => {
          await run();
        },
        // Up to 10% shorter, never longer (the documented intervals stay upper bounds): a fleet
        // whose SSE dropped at the same moment must not poll the CP in lockstep waves.
        intervalMs: () => Math.round(intervalMs() * (1 - POLL_JITTER_RATIO * random())),
        failureDelayMs: (error, b) => delayAfterFailure(error, b, rt().backoff_max_ms),
        onFailure: (error, info) => this.logFailure(name, log, error, info),
        onRecovered: ({ failures }) => log.info("cp.reachable", { loop: name, after_failures: failures }),
      });
    const checkin = async () => {
      await this.checkin.run();
      if (this.checkin.last) this.events.emit("checkin", this.checkin.last);
    };
    const blacklist = async () => {
      await this.deltas.blacklist.pull();
      // Expired entries no longer block (lookup checks expiry); dropping them bounds the memory.
      this.blacklist.pruneExpired(scheduler.clock.now());
    };
    return {
      checkin: loop("checkin", checkin, () => rt().checkin_interval_ms, this.log.agent),
      commands: loop(
        "commands",
        () => this.commands.pull(),
        () => (degraded() ? Math.min(rt().command_poll_ms, rt().degraded_blacklist_poll_ms) : rt().command_poll_ms),
        this.log.agent,
      ),
      configs: loop(
        "configs",
        () => this.configs.run(),
        () => (degraded() ? Math.min(rt().config_poll_ms, rt().degraded_blacklist_poll_ms) : rt().config_poll_ms),
        this.log.agent,
      ),
      "auth-epochs": loop(
        "auth-epochs",
        () => this.deltas["auth-epochs"].pull(),
        () => (degraded() ? rt().degraded_epoch_poll_ms : rt().epoch_poll_ms),
        this.log.security,
      ),
      blacklist: loop(
        "blacklist",
        blacklist,
        () => (degraded() ? rt().degraded_blacklist_poll_ms : rt().blacklist_poll_ms),
        this.log.security,
      ),
    };
  }

  /** Loads what earlier runs persisted: cursors and the applied blacklist and epochs. */
  async loadState(): Promise<void> {
    const { db } = this.options;
    await Promise.all([this.commands.load(), this.deltas["auth-epochs"].load(), this.deltas.blacklist.load()]);
    this.blacklist.replaceAll(await loadBlacklist(db));
    this.epochs.replaceAll(await loadEpochs(db));
    this.stateLoadedAt = this.options.scheduler.clock.now();
    this.log.security.info("state.loaded", {
      cursors: this.cursors(),
      blacklist_entries: this.blacklist.size,
      auth_epochs: this.epochs.size,
    });
  }

  /** Starts checking in; settles at the first successful checkin (retries forever until then). */
  connect(): Promise<void> {
    this.loops.checkin.start();
    return this.loops.checkin.firstSuccess;
  }

  /** Starts Channels 1–3 beyond the checkin; settles when the first configs are applied and reported. */
  startChannels(): Promise<void> {
    this.sse.start();
    for (const name of ["configs", "commands", "auth-epochs", "blacklist"] as const) this.loops[name].start();
    return this.configs.firstApplied;
  }

  /** Starts Channel 4; settles at the first verified OCSP response. */
  startOcsp(): Promise<void> {
    this.stapler.start();
    return this.stapler.firstResponse;
  }

  /** Stops every loop (waiting for runs in progress), aborts SSE, closes the HTTP pools. */
  async stop(): Promise<void> {
    await Promise.all([...Object.values(this.loops).map((l) => l.stop()), this.sse.stop(), this.stapler.stop()]);
    await this.client.close();
  }

  /** Runs a loop now (as a hint would). */
  wake(name: LoopName): void {
    this.loops[name].wake();
  }

  cursors(): Record<CursorStream, number> {
    return { commands: this.commands.cursor, "auth-epochs": this.deltas["auth-epochs"].cursor, blacklist: this.deltas.blacklist.cursor };
  }

  /**
   * When the blacklist and the epochs were last known current: loaded from the Runtime DB at
   * start, the last successful pull of their log, or — while the event stream is up and no pull
   * has failed since the last success — the stream's last frame.
   */
  securityFreshness(): { blacklistAt: number | null; epochsAt: number | null } {
    // While the event stream is up, every change arrives as a hint that triggers a pull: a
    // cache whose last pull succeeded is current as of the stream's last frame (pings every
    // 30 s), however long the poll interval. A failed pull since, or a lost stream, stops that.
    const sse = this.sse.status();
    const streamAt = this.sse.connected ? sse.lastFrameAt : null;
    const latest = (loop: PeriodicTask) => {
      const { lastSuccessAt, lastFailureAt } = loop.state();
      const confirmedByStream =
        streamAt !== null && lastSuccessAt !== null && (lastFailureAt === null || lastFailureAt < lastSuccessAt) ? streamAt : null;
      const times = [lastSuccessAt, confirmedByStream, this.stateLoadedAt].filter((t): t is number => t !== null);
      return times.length === 0 ? null : Math.max(...times);
    };
    return { blacklistAt: latest(this.loops.blacklist), epochsAt: latest(this.loops["auth-epochs"]) };
  }

  status(): CpAgentStatus {
    const sse = this.sse.status();
    const ocsp = this.stapler.status();
    const checkin = this.checkin.last;
    return {
      sse: {
        state: sse.state,
        since: sse.since,
        reconnects: sse.reconnects,
        last_frame_at: sse.lastFrameAt,
        last_error: sse.lastError,
        hints_received: sse.hintsReceived,
      },
      cursors: this.cursors(),
      heads: this.checkin.heads,
      configs: this.store.refs().map((ref) => ({ ...ref, applied_at: this.store.get(ref.type, ref.scope)?.appliedAt ?? 0 })),
      ocsp: {
        status: ocsp.status,
        fetched_at: ocsp.fetchedAt,
        this_update: ocsp.thisUpdate,
        next_update: ocsp.nextUpdate,
        last_attempt_at: ocsp.lastAttemptAt,
        last_error: ocsp.lastError,
      },
      caches: {
        blacklist_entries: this.blacklist.size,
        auth_epochs: this.epochs.size,
        cloud_functions: this.store.cloudFunctionCount,
        cloud_functions_rejected: this.configs.rejectedCloudFunctions,
      },
      last_checkin: checkin && {
        at: checkin.at,
        ok: checkin.ok,
        error: checkin.error,
        node_status: checkin.nodeStatus,
        server_time: checkin.serverTime,
      },
      loops: Object.fromEntries(
        Object.entries(this.loops).map(([name, loop]) => {
          const state = loop.state();
          return [
            name,
            {
              runs: state.runs,
              last_success_at: state.lastSuccessAt,
              last_error: state.lastError,
              consecutive_failures: state.consecutiveFailures,
              next_run_at: state.nextRunAt,
            },
          ];
        }),
      ),
    };
  }

  private async reloadConfigs(): Promise<{ applied: number; rejected: number }> {
    const result = await this.configs.run();
    return { applied: result.applied.length, rejected: result.rejected.length };
  }

  private onHint(hint: HintEvent): void {
    if (hint === "ocsp.refresh") {
      this.refreshStaple("hint");
      return;
    }
    const target: Record<Exclude<HintEvent, "ocsp.refresh">, LoopName> = {
      "command.pending": "commands",
      "config.pending": "configs",
      "blacklist.changed": "blacklist",
      "epoch.bumped": "auth-epochs",
    };
    this.loops[target[hint]].wake();
  }

  private refreshStaple(trigger: "hint" | "checkin"): void {
    this.log.tls.info("ocsp.refresh_requested", { trigger });
    this.stapler.refreshNow();
  }

  /**
   * The fallback for a missed `ocsp.refresh` hint (stream down, or the change made on another CP
   * process): a checkin reporting a new node status refreshes the staple unless it already says
   * what that status implies.
   */
  private onNodeStatusChanged(status: "active" | "disabled"): void {
    const stapled = this.stapler.status().status;
    if (stapled === (status === "disabled" ? "revoked" : "good")) return;
    this.refreshStaple("checkin");
  }

  /**
   * A staple that turned revoked makes every new SDK handshake fail, but the connections already
   * open would go on: they are told why and ended here. Their sessions stay valid (the node was
   * withdrawn, not the users), so a client may log in with its token on another node. A staple
   * that turns good again needs nothing: the next handshakes carry it.
   */
  private onStapleStatusChanged(status: OcspCertStatus): void {
    if (status.kind !== "revoked") return;
    const onHold = status.reason === revocationReasonCode("certificateHold");
    this.options.business.endAllConnections(onHold ? NODE_DISABLED_MESSAGE : NODE_REVOKED_MESSAGE);
  }

  private onSseState(state: SseState): void {
    this.events.emit("sse.state", state);
    for (const name of ["commands", "configs", "auth-epochs", "blacklist"] as const) {
      // Back on the stream: pull everything once (hints may have been missed while it was down).
      if (state === "connected") this.loops[name].wake();
      else this.loops[name].reschedule();
    }
  }

  private onRuntimeChanged(runtime: CpAgentRuntime): void {
    this.log.agent.info("runtime.applied", {
      checkin_interval_ms: runtime.checkin_interval_ms,
      epoch_poll_ms: runtime.epoch_poll_ms,
      blacklist_poll_ms: runtime.blacklist_poll_ms,
    });
    for (const loop of Object.values(this.loops)) loop.reschedule();
    this.stapler.reschedule();
  }

  private logFailure(name: LoopName, log: Logger, error: unknown, info: { attempt: number; retryInMs: number }): void {
    const fields = {
      loop: name,
      attempt: info.attempt,
      retry_in_ms: info.retryInMs,
      error: error instanceof Error ? error.message : String(error),
      ...(error instanceof CpCallError ? { kind: error.kind, status: error.status, code: error.code, socket_code: error.socketCode } : {}),
    };
    if (error instanceof CpCallError && error.code === "NODE_CERT_REVOKED")
      this.log.security.error("credentials.revoked", { ...fields, action: REVOKED_CREDENTIALS_ACTION });
    else if (error instanceof CpCallError && error.kind === "tls")
      this.log.tls.warn("handshake.failed", { ...fields, peer: "control-plane" });
    else if (error instanceof CpCallError && error.kind === "aborted") log.debug("cp.call_aborted", fields);
    else log.warn(name === "checkin" ? "checkin.failed" : "pull.failed", fields);
  }
}
