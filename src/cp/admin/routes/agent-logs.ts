import { Hono } from "hono";
import { z } from "zod";
import { parseOrThrow } from "../../../shared/errors/index.js";

import { listAgentAuditLogs, listAgentLoginLogs } from "../../services/audit/agent-trails.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest, parseTimeRange } from "../../services/pagination.js";
import type { AdminEnv } from "../env.js";
import { guard } from "../middleware.js";

const token = z
  .string()
  .regex(/^[A-Za-z0-9._-]{1,64}$/, "must be 1-64 letters, digits, . _ -")
  .optional();
const loginQuery = z.object({ username: token, result: z.enum(["success", "failure", "throttled"]).optional() });
const auditQuery = z.object({ agent_id: token, action: token, result: z.enum(["success", "failure"]).optional() });

/** GET /agent-login-logs and GET /agent-audit-logs: read-only, paginated, from/to filtered. */
export function agentLogRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/agent-login-logs", guard(ctx, "read"), async (c) => {
    const q = c.req.query();
    const filter = parseOrThrow(loginQuery, { username: q.username, result: q.result });
    return c.json(await listAgentLoginLogs(ctx, { ...parseTimeRange(q), ...filter }, parsePageRequest(q)));
  });
  routes.get("/agent-audit-logs", guard(ctx, "read"), async (c) => {
    const q = c.req.query();
    const filter = parseOrThrow(auditQuery, { agent_id: q.agent_id, action: q.action, result: q.result });
    return c.json(
      await listAgentAuditLogs(
        ctx,
        { ...parseTimeRange(q), agentId: filter.agent_id, action: filter.action, result: filter.result },
        parsePageRequest(q),
      ),
    );
  });
  return routes;
}
