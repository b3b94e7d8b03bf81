/**
 * Commands on the admin API: send one to a node (/nodes/:nid/commands; the rest of /nodes
 * belongs to routes/nodes.ts) or to every node (/commands), list them, and read one with its
 * per-node results. Mounted at the /admin/v1 root because it spans two path families. The
 * payload is checked against the kind's schema by the service (field names "payload.…").
 */

import { type Context, Hono } from "hono";
import { z } from "zod";
import { MAX_COMMAND_TTL_SECONDS } from "../../../shared/config/defaults.js";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { COMMAND_KINDS } from "../../../shared/node-protocol/index.js";
import { readJson } from "../../http/json-body.js";
import { getCommand, listCommands, queueCommand } from "../../services/commands/admin.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { ID_PATTERN } from "../schemas.js";
import { idParam } from "./params.js";

const sendBody = z.strictObject({
  kind: z.enum(COMMAND_KINDS),
  payload: z.looseObject({}).optional(),
  /** Default: services/commands DEFAULT_COMMAND_TTL_SECONDS (24 h). */
  ttl_seconds: z.number().int().min(1).max(MAX_COMMAND_TTL_SECONDS).optional(),
});
const listQuery = z.object({ node_id: z.string().regex(ID_PATTERN).optional(), kind: z.enum(COMMAND_KINDS).optional() });

export function commandRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  const read = guard(ctx, "read");
  const send = guard(ctx, "write", { action: "command.create", target: "command" });
  const sendTo = async (c: Context<AdminEnv>, nodeId: string | null) => {
    const body = await readJson(c, sendBody);
    const command = await queueCommand(ctx, actorOf(c), nodeId, { kind: body.kind, payload: body.payload, ttlSeconds: body.ttl_seconds });
    c.set("auditTargetId", command.id);
    c.set("auditDetail", { kind: command.kind, target_node_id: nodeId });
    return c.json(command, 201);
  };

  routes.post("/nodes/:nid/commands", send, async (c) => sendTo(c, idParam(c, "nid")));
  routes.post("/commands", send, async (c) => sendTo(c, null));
  routes.get("/commands", read, async (c) => {
    const q = c.req.query();
    const filter = parseOrThrow(listQuery, { node_id: q.node_id, kind: q.kind });
    return c.json(await listCommands(ctx, { nodeId: filter.node_id, kind: filter.kind }, parsePageRequest(q)));
  });
  routes.get("/commands/:id", read, async (c) => c.json(await getCommand(ctx, idParam(c))));
  return routes;
}
