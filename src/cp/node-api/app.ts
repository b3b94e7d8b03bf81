/**
 * The node API on 9091 (mTLS): Channel 1 (checkin, commands, configs, cloud functions),
 * Channel 2 (SSE) and Channel 3 (deltas). The TLS layer admits only certificates issued by
 * cp_node_client_ca; the identity middleware then binds each call to the node its certificate
 * names. One access line per request names the peer; errors go through the shared mapping.
 */
import type { TLSSocket } from "node:tls";
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { AuthNexusError } from "../../shared/errors/index.js";
import { sequentialIds } from "../../shared/ids.js";
import { CP_API_PREFIX, NODE_API_MAX_BODY_BYTES } from "../../shared/node-protocol/index.js";
import { errorToResponse } from "../http/error-response.js";
import type { CpMetrics } from "../metrics.js";
import type { CpContext } from "../services/context.js";
import type { NodeApiEnv } from "./env.js";
import { anyNode, nodeFromPath } from "./identity.js";
import { checkinRoutes } from "./routes/checkin.js";
import { cloudFunctionObjectRoutes } from "./routes/cloud-functions.js";
import { nodeCommandRoutes } from "./routes/commands.js";
import { nodeConfigRoutes } from "./routes/configs.js";
import { deltaRoutes } from "./routes/deltas.js";
import { eventRoutes } from "./routes/events.js";
import type { SseHub } from "./sse-hub.js";

export type { NodeApiEnv } from "./env.js";

export function createNodeApiApp(ctx: CpContext, sse: SseHub, metrics?: CpMetrics): Hono<NodeApiEnv> {
  const log = ctx.log.category("CP Agent");
  const requestId = sequentialIds("req");
  const app = new Hono<NodeApiEnv>();
  app.onError((error, c) => errorToResponse(c, error, log));
  app.notFound(() => {
    throw new AuthNexusError("ROUTE_NOT_FOUND");
  });
  if (metrics) app.use(metrics.middleware("node_api"));
  app.use(async function nodeAccessLog(c, next) {
    const started = performance.now();
    c.set("requestId", requestId());
    await next();
    const socket = c.env?.incoming?.socket as TLSSocket | undefined;
    // Nodes call every few seconds: successful calls are debug noise; refusals and failures are not.
    const level = c.res.status < 400 ? "debug" : c.res.status < 500 ? "info" : "warn";
    log[level]("request", {
      request_id: c.get("requestId"),
      method: c.req.method,
      path: c.req.path.slice(0, 256),
      status: c.res.status,
      duration_ms: Math.round((performance.now() - started) * 100) / 100,
      node_id: c.get("node")?.id,
      ip: socket?.remoteAddress,
    });
  });
  app.use(nodeBodyLimit());

  // Every route below sees c.get("node"), already bound to the caller's certificate.
  const nodes = new Hono<NodeApiEnv>();
  nodes.use("/:id/*", nodeFromPath(ctx));
  const objects = new Hono<NodeApiEnv>();
  objects.use("*", anyNode(ctx));
  // Route groups (one file each under routes/) are added to `nodes` / `objects` here, before
  // the app.route calls below copy them into the app.
  nodes.route("/", checkinRoutes(ctx));
  nodes.route("/", nodeCommandRoutes(ctx));
  nodes.route("/", nodeConfigRoutes(ctx));
  objects.route("/", cloudFunctionObjectRoutes(ctx));
  nodes.route("/", deltaRoutes(ctx));
  nodes.route("/", eventRoutes(sse));

  app.route(`${CP_API_PREFIX}/nodes`, nodes);
  app.route(`${CP_API_PREFIX}/objects`, objects);
  return app;
}

/**
 * Bodies over NODE_API_MAX_BODY_BYTES are refused. A declared length is checked from the header
 * alone: hono's bodyLimit reads the Web Request's body, which makes @hono/node-server build a
 * whole Request for every call — a sixth of a checkin's CPU. Chunked bodies (no length) still go
 * through hono's streaming check.
 */
function nodeBodyLimit(): MiddlewareHandler<NodeApiEnv> {
  const tooLarge = () => new AuthNexusError("BODY_TOO_LARGE", { message: `Request body is larger than ${NODE_API_MAX_BODY_BYTES} bytes.` });
  const streaming = bodyLimit({
    maxSize: NODE_API_MAX_BODY_BYTES,
    onError: () => {
      throw tooLarge();
    },
  });
  return function nodeBodyLimitStep(c, next) {
    const headers = c.env?.incoming?.headers;
    if (!headers) return streaming(c, next);
    const declared = headers["content-length"];
    if (declared !== undefined) {
      if (!/^\d{1,15}$/.test(declared) || Number(declared) > NODE_API_MAX_BODY_BYTES) throw tooLarge();
      return next();
    }
    return headers["transfer-encoding"] === undefined ? next() : streaming(c, next);
  };
}
