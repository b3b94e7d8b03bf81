import { Hono } from "hono";
import { z } from "zod";
import { readJson } from "../../http/json-body.js";
import { changeAgentPassword, createAgent, getAgent, listAgents, updateAgent } from "../../services/agents/agents.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import type { AdminEnv } from "../env.js";
import { guard } from "../middleware.js";
import { agentRole, displayName, password, username } from "../schemas.js";
import { idParam } from "./params.js";

const createBody = z.strictObject({ username, password, role: agentRole, display_name: displayName(100).optional() });
const patchBody = z
  .strictObject({ role: agentRole.optional(), display_name: displayName(100).nullable().optional() })
  .refine((b) => Object.keys(b).length > 0, "at least one field is required");
const passwordBody = z.strictObject({ new_password: password });

/** Agent management: reading needs read access; every change needs the root role. */
export function agentRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/", guard(ctx, "read"), async (c) => c.json(await listAgents(ctx, parsePageRequest(c.req.query()))));
  routes.get("/:id", guard(ctx, "read"), async (c) => c.json(await getAgent(ctx, idParam(c))));
  routes.post("/", guard(ctx, "manage_agents", { action: "agent.create", target: "agent" }), async (c) => {
    const body = await readJson(c, createBody);
    const agent = await createAgent(ctx, {
      username: body.username,
      password: body.password,
      role: body.role,
      displayName: body.display_name ?? null,
      createdBy: c.get("agent").agentId,
    });
    c.set("auditTargetId", agent.id);
    c.set("auditDetail", { role: agent.role, username: agent.username });
    return c.json(agent, 201);
  });
  routes.patch("/:id", guard(ctx, "manage_agents", { action: "agent.update", target: "agent" }), async (c) => {
    const body = await readJson(c, patchBody);
    c.set("auditDetail", { changes: Object.keys(body) });
    return c.json(await updateAgent(ctx, idParam(c), { role: body.role, displayName: body.display_name }));
  });
  routes.post("/:id/disable", guard(ctx, "manage_agents", { action: "agent.disable", target: "agent" }), async (c) =>
    c.json(await updateAgent(ctx, idParam(c), { status: "disabled" })),
  );
  routes.post("/:id/enable", guard(ctx, "manage_agents", { action: "agent.enable", target: "agent" }), async (c) =>
    c.json(await updateAgent(ctx, idParam(c), { status: "active" })),
  );
  routes.post("/:id/password", guard(ctx, "manage_agents", { action: "agent.reset_password", target: "agent" }), async (c) => {
    const body = await readJson(c, passwordBody);
    await changeAgentPassword(ctx, { agentId: idParam(c), newPassword: body.new_password });
    return c.body(null, 204);
  });
  return routes;
}
