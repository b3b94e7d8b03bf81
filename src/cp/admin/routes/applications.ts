import { Hono } from "hono";
import { z } from "zod";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { readJson } from "../../http/json-body.js";
import {
  createApplication,
  getApplication,
  listApplications,
  purgeApplication,
  restoreApplication,
  softDeleteApplication,
  updateApplication,
} from "../../services/applications/applications.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { displayName, safeText } from "../schemas.js";
import { idParam } from "./params.js";

const createBody = z.strictObject({ name: displayName(100), description: safeText(1000).optional() });
const patchBody = z
  .strictObject({
    name: displayName(100).optional(),
    description: safeText(1000).nullable().optional(),
    status: z.enum(["active", "disabled"]).optional(),
  })
  .refine((b) => Object.keys(b).length > 0, "at least one field is required");
const listQuery = z.object({ view: z.enum(["live", "recycle_bin", "all"]).default("live") });

export function applicationRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  const write = (action: string) => guard(ctx, "write", { action, target: "application" });

  routes.get("/", guard(ctx, "read"), async (c) => {
    const { view } = parseOrThrow(listQuery, { view: c.req.query("view") });
    return c.json(await listApplications(ctx, view, parsePageRequest(c.req.query())));
  });
  routes.get("/:id", guard(ctx, "read"), async (c) => c.json(await getApplication(ctx, idParam(c))));
  routes.post("/", write("application.create"), async (c) => {
    const body = await readJson(c, createBody);
    const app = await createApplication(ctx, actorOf(c), { name: body.name, description: body.description ?? null });
    c.set("auditTargetId", app.app_id);
    c.set("auditDetail", { name: app.name });
    return c.json(app, 201);
  });
  routes.patch("/:id", write("application.update"), async (c) => {
    const body = await readJson(c, patchBody);
    c.set("auditDetail", { changes: Object.keys(body) });
    return c.json(await updateApplication(ctx, idParam(c), body));
  });
  routes.delete("/:id", write("application.delete"), async (c) => c.json(await softDeleteApplication(ctx, actorOf(c), idParam(c))));
  routes.post("/:id/restore", write("application.restore"), async (c) => c.json(await restoreApplication(ctx, idParam(c))));
  routes.post("/:id/purge", write("application.purge"), async (c) => {
    await purgeApplication(ctx, idParam(c));
    return c.body(null, 204);
  });
  return routes;
}
