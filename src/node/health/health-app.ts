/**
 * The node's local health endpoint (plain HTTP, loopback by default): /healthz answers while
 * the process runs, /readyz only once staged startup has finished (503 naming the stage until
 * then), /status the agent's state for operators and tests. Read-only; nothing secret in it.
 */
import { Hono } from "hono";

export interface HealthSource {
  stage(): string;
  ready(): boolean;
  status(): unknown;
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
  app.notFound((c) => c.json({ error: "ROUTE_NOT_FOUND", message: "No such endpoint." }, 404));
  app.onError((_error, c) => c.json({ error: "INTERNAL", message: "Internal error." }, 500));
  return app;
}
