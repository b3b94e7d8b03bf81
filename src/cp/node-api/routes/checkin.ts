/**
 * Channel 1 checkin: the node's heartbeat with its applied config versions, metrics, metadata
 * and cursors. The answer tells it where the logs stand, so a missed hint is noticed here.
 */
import { Hono } from "hono";
import { checkinRequest } from "../../../shared/node-protocol/index.js";
import { readJson } from "../../http/json-body.js";
import type { CpContext } from "../../services/context.js";
import { recordCheckin } from "../../services/nodes/checkin.js";
import type { NodeApiEnv } from "../env.js";

export function checkinRoutes(ctx: CpContext): Hono<NodeApiEnv> {
  const routes = new Hono<NodeApiEnv>();
  routes.post("/:id/checkin", async (c) => {
    const report = await readJson(c, checkinRequest);
    return c.json(await recordCheckin(ctx, c.get("node"), report));
  });
  return routes;
}
