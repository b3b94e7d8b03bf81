/**
 * The Control Plane's Prometheus metrics, defined in one place (docs/operations.md, "Metrics").
 * Request counters are kept as requests happen; everything that describes state (SSE streams,
 * PKI jobs, config sync states, database pools) is read when Prometheus scrapes, the database
 * readings cached for CP_METRICS_DB_CACHE_MS so a tight scrape interval costs a query or two.
 */
import type { Context, MiddlewareHandler } from "hono";
import { matchedRoutes } from "hono/route";
import { watchDatabasePools } from "../shared/metrics/database.js";
import { cachedReading, LATENCY_BUCKETS_SECONDS, type MetricsOptions, MetricsRegistry, statusClass } from "../shared/metrics/index.js";
import { fleetConfigStateCounts } from "./services/configs/admin-read.js";
import type { CpContext } from "./services/context.js";

/** How long a scrape's database readings (PKI jobs, config states, node SSE) are reused (ms). */
export const CP_METRICS_DB_CACHE_MS = 5_000;

export type CpListenerName = "admin" | "node_api";
export type OcspAnswerLabel = "good" | "revoked" | "unknown" | "unauthorized" | "malformedRequest" | "internalError" | "tryLater";

export class CpMetrics {
  readonly registry: MetricsRegistry;
  readonly httpRequests;
  readonly httpDuration;
  readonly ocspResponses;
  private sseStreams: () => number = () => 0;

  constructor(options: MetricsOptions = {}) {
    const r = new MetricsRegistry(options);
    this.registry = r;
    this.httpRequests = r.counter(
      "authnexus_cp_http_requests_total",
      "Requests answered by the CP's admin and node APIs, by listener, method, route template and status class.",
      ["listener", "method", "route", "status_class"],
    );
    this.httpDuration = r.histogram(
      "authnexus_cp_http_request_duration_seconds",
      "Time to answer a request on the CP's admin and node APIs (an SSE stream: until its headers are sent).",
      ["listener", "method", "route"],
      LATENCY_BUCKETS_SECONDS,
    );
    this.ocspResponses = r.counter(
      "authnexus_cp_ocsp_responses_total",
      "OCSP answers by certificate status (good, revoked, unknown, unauthorized: no CA here issued it) or error answer.",
      ["status"],
    );
    r.gauge("authnexus_cp_sse_streams_open", "Node event streams (Channel 2) this CP process holds open.", [], (g) =>
      g.set(this.sseStreams()),
    );
  }

  /** Counts a node API or admin API answer. */
  request(listener: CpListenerName, method: string, route: string, status: number, seconds: number): void {
    this.httpRequests.inc({ listener, method, route, status_class: statusClass(status) });
    this.httpDuration.observe({ listener, method, route }, seconds);
  }

  /** Hono middleware: counts every answer under its route template, never the raw path. */
  middleware(listener: CpListenerName): MiddlewareHandler {
    const metrics = this;
    return async function metricsStep(c, next) {
      const started = performance.now();
      try {
        await next();
      } finally {
        metrics.request(listener, c.req.method, routeTemplate(c), c.res.status, (performance.now() - started) / 1000);
      }
    };
  }

  /** The SSE hub, once it exists. */
  watchSse(size: () => number): void {
    this.sseStreams = size;
  }

  /** The gauges read from the Control DB and the database pools (once the CP's context exists). */
  watchDatabases(ctx: Pick<CpContext, "controlDb" | "runtimeDb" | "clock">): void {
    const r = this.registry;
    const reading = <T>(read: () => Promise<T>) => cachedReading(() => ctx.clock.now(), CP_METRICS_DB_CACHE_MS, read);
    const jobs = reading(() => pkiJobCounts(ctx.controlDb));
    r.gauge("authnexus_cp_pki_jobs", "PKI jobs in the Control DB by kind and state.", ["kind", "state"], async (g) => {
      g.reset();
      for (const row of await jobs()) g.set({ kind: row.kind, state: row.status }, Number(row.n));
    });
    const configs = reading(() => fleetConfigStateCounts(ctx));
    r.gauge(
      "authnexus_cp_config_items",
      "Config items delivered to nodes (each node × item), by sync state: SYNCED, PENDING, ERROR, NOT_SENT.",
      ["state"],
      async (g) => {
        for (const [state, n] of Object.entries(await configs())) g.set({ state }, n);
      },
    );
    const sse = reading(() => nodeSseCounts(ctx.controlDb));
    r.gauge(
      "authnexus_cp_nodes_sse",
      "Enrolled nodes (not provisioning) by event stream state as the CP records it: connected or degraded (no stream).",
      ["state"],
      async (g) => {
        const counts = await sse();
        g.set({ state: "connected" }, counts.connected);
        g.set({ state: "degraded" }, counts.degraded);
      },
    );
    watchDatabasePools(this.registry, { control: ctx.controlDb, runtime: ctx.runtimeDb });
  }
}

/** The route template hono matched ("/admin/v1/nodes/:id"), or "unmatched": never the raw path. */
export function routeTemplate(c: Context): string {
  const routes = matchedRoutes(c);
  for (let i = routes.length - 1; i >= 0; i--) {
    const route = routes[i];
    if (route && route.method !== "ALL") return route.path;
  }
  return "unmatched";
}

async function pkiJobCounts(db: CpContext["controlDb"]): Promise<{ kind: string; status: string; n: number }[]> {
  return db
    .selectFrom("pki_jobs")
    .select(["kind", "status"])
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .groupBy(["kind", "status"])
    .execute();
}

async function nodeSseCounts(db: CpContext["controlDb"]): Promise<{ connected: number; degraded: number }> {
  const rows = await db
    .selectFrom("nodes")
    .select("sse_connected")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("status", "!=", "provisioning")
    .groupBy("sse_connected")
    .execute();
  let connected = 0;
  let degraded = 0;
  for (const row of rows) {
    if (Number(row.sse_connected) === 1) connected += Number(row.n);
    else degraded += Number(row.n);
  }
  return { connected, degraded };
}
