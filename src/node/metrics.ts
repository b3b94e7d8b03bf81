/**
 * A server node's Prometheus metrics, defined in one place (docs/operations.md, "Metrics"),
 * served on the health listener's GET /metrics. The business port counts with the fast
 * counters (src/shared/metrics): per request two map lookups and a few additions, nothing
 * allocated. The agent's state (SSE, delta lag, OCSP staple) is read when scraped.
 */
import { isAuthNexusError } from "../shared/errors/index.js";
import { watchDatabasePools } from "../shared/metrics/database.js";
import { LATENCY_BUCKETS_SECONDS, type MetricsOptions, MetricsRegistry } from "../shared/metrics/index.js";
import type { CpAgent } from "./agent/agent.js";
import type { FunctionCallRequest, FunctionCallResult } from "./functions/pool.js";

/** Which layer refused a business handshake: the connection limits before TLS, then layers 1–4. */
export type RefusalLayer = "connection_limit" | "1" | "2" | "3" | "4";

/** Request names that are logins, and the method each stands for. */
const LOGIN_METHODS: Readonly<Record<string, string>> = {
  login_password: "password",
  login_card: "card",
  login_token: "token",
  register: "register",
};

/** Units per group-commit transaction: 1 to GROUP_COMMIT_MAX_UNITS (64). */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64];

export class NodeMetrics {
  readonly registry: MetricsRegistry;
  private readonly handshakesAccepted;
  private readonly handshakesRefused;
  private readonly requests;
  private readonly requestDuration;
  private readonly logins;
  private readonly configApplies;
  private readonly functionCalls;
  private readonly functionDuration;
  private readonly groupCommitBatch;
  private connections: () => number = () => 0;

  constructor(options: MetricsOptions = {}) {
    const r = new MetricsRegistry(options);
    this.registry = r;
    this.handshakesAccepted = r.counter(
      "authnexus_node_business_handshakes_accepted_total",
      "Business handshakes that passed all four layers (TLS, certificate, CP binding, hello).",
    );
    this.handshakesRefused = r.fastCounter(
      "authnexus_node_business_handshakes_refused_total",
      "Business connections refused, by layer: connection_limit (before TLS), 1 (TLS chain), 2 (certificate), 3 (CP binding), 4 (hello).",
      ["layer"],
    );
    this.requests = r.fastCounter(
      "authnexus_node_business_requests_total",
      "Requests answered on the business port by request type and result (ok, or the error code answered).",
      ["type", "result"],
    );
    this.requestDuration = r.fastHistogram(
      "authnexus_node_business_request_duration_seconds",
      "Time from a decoded request to its answer on the business port, by request type.",
      ["type"],
      LATENCY_BUCKETS_SECONDS,
    );
    this.logins = r.fastCounter(
      "authnexus_node_logins_total",
      "Logins by method (password, card, token, register) and result (success, or the error code answered).",
      ["method", "result"],
    );
    r.gauge("authnexus_node_business_connections", "Client connections open on the business port (after TLS).", [], (g) =>
      g.set(this.connections()),
    );
    this.configApplies = r.counter(
      "authnexus_node_config_applies_total",
      "Config versions pulled from the CP, by result: applied or rejected (reported to the CP as a config error).",
      ["result"],
    );
    this.functionCalls = r.fastCounter(
      "authnexus_node_cloud_function_calls_total",
      "Cloud function calls on the worker pool by result (ok, or the error code).",
      ["result"],
    );
    this.functionDuration = r.fastHistogram(
      "authnexus_node_cloud_function_duration_seconds",
      "Time a cloud function call took on the worker pool, queueing included.",
      ["result"],
      LATENCY_BUCKETS_SECONDS,
    );
    this.groupCommitBatch = r.fastHistogram(
      "authnexus_node_group_commit_batch_units",
      "Write units per Runtime DB transaction (SQLite group commit).",
      ["db"],
      BATCH_BUCKETS,
    );
  }

  handshakeAccepted(): void {
    this.handshakesAccepted.inc();
  }

  handshakeRefused(layer: RefusalLayer): void {
    this.handshakesRefused.inc(layer);
  }

  /** One answered request: `error` is what it failed with, undefined when it succeeded. */
  request(type: string, seconds: number, error?: unknown): void {
    const result = error === undefined ? "ok" : errorCode(error);
    this.requests.inc(type, result);
    this.requestDuration.observe(seconds, type);
    const method = LOGIN_METHODS[type];
    if (method !== undefined) this.logins.inc(method, error === undefined ? "success" : result);
  }

  groupCommitted(units: number): void {
    this.groupCommitBatch.observe(units, "runtime");
  }

  /** The pool's `call`, counted and timed. */
  countingCalls(call: (request: FunctionCallRequest) => Promise<FunctionCallResult>) {
    return async (request: FunctionCallRequest): Promise<FunctionCallResult> => {
      const started = performance.now();
      let result = "ok";
      try {
        return await call(request);
      } catch (error) {
        result = errorCode(error);
        throw error;
      } finally {
        this.functionCalls.inc(result);
        this.functionDuration.observe((performance.now() - started) / 1000, result);
      }
    };
  }

  watchConnections(count: () => number): void {
    this.connections = count;
  }

  watchDatabase(runtimeDb: object): void {
    watchDatabasePools(this.registry, { runtime: runtimeDb });
  }

  /** The agent's state, read when scraped, and its config pulls, counted as they happen. */
  watchAgent(agent: CpAgent, now: () => number): void {
    const r = this.registry;
    agent.events.on("configs.synced", (result) => {
      if (result.applied.length > 0) this.configApplies.inc({ result: "applied" }, result.applied.length);
      if (result.rejected.length > 0) this.configApplies.inc({ result: "rejected" }, result.rejected.length);
    });
    r.gauge("authnexus_node_sse_connected", "1 while the node's event stream from the CP is up (connected), 0 while degraded.", [], (g) =>
      g.set(agent.sse.status().state === "connected" ? 1 : 0),
    );
    r.gauge(
      "authnexus_node_delta_lag",
      "Entries of each CP log (commands, auth-epochs, blacklist) not yet applied here: the head at the last checkin minus the node's cursor.",
      ["stream"],
      (g) => {
        const { heads, cursors } = agent.status();
        if (!heads) return;
        for (const [stream, cursor] of Object.entries(cursors)) {
          const head = heads[stream as keyof typeof heads];
          if (head !== undefined) g.set({ stream }, Math.max(0, head - cursor));
        }
      },
    );
    r.gauge(
      "authnexus_node_ocsp_staple_age_seconds",
      "Age of the OCSP response the node staples (now minus its thisUpdate); absent while it holds none.",
      [],
      (g) => {
        g.reset();
        const { thisUpdate } = agent.stapler.status();
        if (thisUpdate !== null) g.set(Math.max(0, (now() - thisUpdate) / 1000));
      },
    );
    r.gauge(
      "authnexus_node_ocsp_staple_status",
      "1 for the status of the OCSP response the node staples: good, revoked, unknown, or none (no current response).",
      ["status"],
      (g) => {
        const current = agent.stapler.status().status;
        for (const status of ["good", "revoked", "unknown", "none"]) g.set({ status }, status === current ? 1 : 0);
      },
    );
  }
}

function errorCode(error: unknown): string {
  return isAuthNexusError(error) ? error.code : "INTERNAL";
}
