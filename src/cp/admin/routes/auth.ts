import { Hono } from "hono";
import { z } from "zod";
import { readJson } from "../../http/json-body.js";
import { changeAgentPassword, getAgent } from "../../services/agents/agents.js";
import { loginAgent, logoutAgent, refreshAgentSession } from "../../services/agents/sessions.js";
import type { CpContext } from "../../services/context.js";
import type { AdminEnv } from "../env.js";
import { guard } from "../middleware.js";
import { opaqueToken, password } from "../schemas.js";

// Login accepts any username shape: a malformed one simply fails like a wrong one.
const loginBody = z.strictObject({ username: z.string().min(1).max(128), password });
const refreshBody = z.strictObject({ refresh_token: opaqueToken });
const passwordBody = z.strictObject({ current_password: password, new_password: password });

export function authRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.post("/login", async (c) => {
    const body = await readJson(c, loginBody);
    const tokens = await loginAgent(ctx, {
      username: body.username,
      password: body.password,
      ip: c.get("remoteIp"),
      userAgent: c.req.header("user-agent") ?? null,
    });
    return c.json(tokens);
  });
  routes.post("/refresh", async (c) => {
    const body = await readJson(c, refreshBody);
    return c.json(await refreshAgentSession(ctx, body.refresh_token));
  });
  routes.post("/logout", guard(ctx, "read", { action: "auth.logout", target: "agent" }), async (c) => {
    await logoutAgent(ctx, c.get("agent").sessionId);
    c.set("auditTargetId", c.get("agent").agentId);
    return c.body(null, 204);
  });
  routes.get("/me", guard(ctx, "read"), async (c) => {
    const agent = c.get("agent");
    return c.json({ ...(await getAgent(ctx, agent.agentId)), session_id: agent.sessionId });
  });
  routes.post("/password", guard(ctx, "read", { action: "agent.change_own_password", target: "agent" }), async (c) => {
    const body = await readJson(c, passwordBody);
    const agent = c.get("agent");
    c.set("auditTargetId", agent.agentId);
    await changeAgentPassword(ctx, {
      agentId: agent.agentId,
      currentPassword: body.current_password,
      newPassword: body.new_password,
      keepSessionId: agent.sessionId,
      origin: { ip: c.get("remoteIp"), userAgent: c.req.header("user-agent") ?? null },
    });
    return c.body(null, 204);
  });
  return routes;
}
