/**
 * Channel 2: `GET /cp/v2/nodes/:id/events`, the node's SSE stream. The handler sends the
 * headers itself and hands the Node response to the hub, then tells @hono/node-server that the
 * response is already under way.
 */
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { Hono } from "hono";
import { AuthNexusError } from "../../../shared/errors/index.js";
import type { NodeApiEnv } from "../env.js";
import { type SseHub, startEventStream } from "../sse-hub.js";

export function eventRoutes(hub: SseHub): Hono<NodeApiEnv> {
  const routes = new Hono<NodeApiEnv>();
  routes.get("/:id/events", (c) => {
    const outgoing = c.env?.outgoing;
    if (!outgoing) throw new AuthNexusError("INTERNAL", { detail: { why: "SSE needs the Node response (served by @hono/node-server)" } });
    // hono answers HEAD with the GET handler: a HEAD must not open (and hold) a stream.
    if (c.req.method !== "GET") throw new AuthNexusError("METHOD_NOT_ALLOWED");
    const socket = c.env?.incoming?.socket;
    const peer = `${socket?.remoteAddress ?? "unknown"}:${socket?.remotePort ?? 0}`;
    if (startEventStream(outgoing)) hub.attach(c.get("node").id, outgoing, peer);
    return RESPONSE_ALREADY_SENT;
  });
  return routes;
}
