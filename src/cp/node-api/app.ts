/**
 * The node API on 9091 (mTLS). The TLS layer admits only certificates issued by
 * cp_node_client_ca; this app logs one access line per request naming the peer certificate
 * and answers through the shared error mapping. The Channel 1–3 endpoints mount here.
 */
import type { TLSSocket } from "node:tls";
import type { HttpBindings } from "@hono/node-server";
import { Hono } from "hono";
import { AuthNexusError } from "../../shared/errors/index.js";
import { newId } from "../../shared/ids.js";
import type { Logger } from "../../shared/log/index.js";
import { errorToResponse } from "../http/error-response.js";

export interface NodeApiEnv {
  Bindings: Partial<HttpBindings>;
  Variables: { requestId: string };
}

export function createNodeApiApp(log: Logger): Hono<NodeApiEnv> {
  const app = new Hono<NodeApiEnv>();
  app.onError((error, c) => errorToResponse(c, error, log));
  app.notFound(() => {
    throw new AuthNexusError("ROUTE_NOT_FOUND");
  });
  app.use(async function nodeAccessLog(c, next) {
    const started = performance.now();
    c.set("requestId", newId("req"));
    await next();
    const socket = c.env?.incoming?.socket as TLSSocket | undefined;
    const peer = socket?.getPeerCertificate?.();
    log.info("request", {
      request_id: c.get("requestId"),
      method: c.req.method,
      path: c.req.path.slice(0, 256),
      status: c.res.status,
      duration_ms: Math.round((performance.now() - started) * 100) / 100,
      peer_san: peer?.subjectaltname,
      peer_serial: peer?.serialNumber,
      ip: socket?.remoteAddress,
    });
  });
  return app;
}
