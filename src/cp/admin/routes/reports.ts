import { Hono } from "hono";
import type { CpContext } from "../../services/context.js";
import { readPresence } from "../../services/nodes/presence.js";
import { dailyReport, parseReportRequest, REPORT_KINDS } from "../../services/reports/daily.js";
import type { AdminEnv } from "../env.js";
import { guard } from "../middleware.js";

/** GET /presence and GET /reports/<kind>: read-only, any role. */
export function reportRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/presence", guard(ctx, "read"), async (c) => c.json(await readPresence(ctx)));
  for (const kind of REPORT_KINDS) {
    routes.get(`/reports/${kind}`, guard(ctx, "read"), async (c) =>
      c.json(await dailyReport(ctx, parseReportRequest(ctx, kind, c.req.query()))),
    );
  }
  return routes;
}
