/**
 * The node's local health endpoint (plain HTTP, loopback by default): /healthz answers while
 * the process runs, /readyz only once staged startup has finished (503 naming the stage until
 * then), /status the agent's state for operators and tests, /metrics the node's Prometheus
 * metrics. Read-only; nothing secret in it.
 */
import { Hono } from "hono";
import { PROMETHEUS_CONTENT_TYPE } from "../../shared/metrics/index.js";

export interface HealthSource {
  stage(): string;
  ready(): boolean;
  status(): unknown;
  /** The node's metrics in Prometheus' text format (GET /metrics). */
  metrics?(): Promise<string>;
}

export function createHealthApp(source: HealthSource): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", (c) =>
    source.ready() ? c.json({ ready: true, stage: source.stage() }) : c.json({ ready: false, stage: source.stage() }, 503),
  );
  app.get("/status", (c) => {
    c.header("cache-control", "no-store");
    return c.json(source.status() as object);
  });
  const metrics = source.metrics?.bind(source);
  if (metrics) app.get("/metrics", async (c) => c.body(await metrics(), 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE }));
  app.notFound((c) => c.json({ error: "ROUTE_NOT_FOUND", message: "No such endpoint." }, 404));
  app.onError((_error, c) => c.json({ error: "INTERNAL", message: "Internal error." }, 500));
  return app;
}
