import { Hono } from "hono";
import type { CpContext } from "../../services/context.js";
import type { AdminEnv } from "../env.js";
import { auditLogRoute } from "./audit-logs.js";

/** GET /agent-login-logs and GET /agent-audit-logs: read-only, paginated, from/to and filters (audit-logs.ts). */
export function agentLogRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/agent-login-logs", ...auditLogRoute(ctx, "agent-login-logs"));
  routes.get("/agent-audit-logs", ...auditLogRoute(ctx, "agent-audit-logs"));
  return routes;
}
