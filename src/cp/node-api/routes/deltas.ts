/**
 * Channel 3 delta pulls: `GET /cp/v2/nodes/:id/deltas/{auth-epochs|blacklist}?since=N&limit=M`.
 * A page of changes after `since`, or 410 DELTA_CURSOR_EXPIRED when the node must replay from 0.
 */
import { Hono } from "hono";
import { DELTA_STREAMS } from "../../../shared/node-protocol/index.js";
import type { CpContext } from "../../services/context.js";
import { parseDeltaQuery, readDeltaPage } from "../../services/security/deltas.js";
import type { NodeApiEnv } from "../env.js";

export function deltaRoutes(ctx: CpContext): Hono<NodeApiEnv> {
  const routes = new Hono<NodeApiEnv>();
  for (const stream of DELTA_STREAMS) {
    routes.get(`/:id/deltas/${stream}`, async (c) => {
      const query = parseDeltaQuery({ since: c.req.query("since"), limit: c.req.query("limit") });
      return c.json(await readDeltaPage(ctx, c.get("node").id, stream, query));
    });
  }
  return routes;
}
