/**
 * /admin/v1/applications/:app_id/cloud-functions: an application's Lua cloud functions. Reads
 * need "read", changes "write". Every change is audited (agent audit, `cloud_function.*`
 * actions, target `<app_id>:<name>` named before the work so a refusal names it too) with the
 * script's sha256 and size, never the script itself. The service checks the fields, compiles
 * the script and hints the nodes.
 */
import { type Context, Hono } from "hono";
import { z } from "zod";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { readJson } from "../../http/json-body.js";
import {
  CLOUD_FUNCTION_NAME,
  type CloudFunctionView,
  createCloudFunction,
  deleteCloudFunction,
  getCloudFunction,
  listCloudFunctions,
  updateCloudFunction,
} from "../../services/applications/cloud-functions.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { idParam } from "./params.js";

// Types only here; the service owns the rules for names, script size and timeouts (and says which one failed).
const createBody = z.strictObject({
  name: z.string(),
  script: z.string(),
  timeout_ms: z.number().optional(),
  enabled: z.boolean().optional(),
});
const patchBody = z
  .strictObject({ script: z.string().optional(), timeout_ms: z.number().optional(), enabled: z.boolean().optional() })
  .refine((b) => Object.keys(b).length > 0, "at least one of script, timeout_ms, enabled is required");
const noBody = z.strictObject({});

/** A function name in a path: one that cannot be a name is a 404 without touching the database. */
function nameParam(c: Context): string {
  const value = c.req.param("name");
  if (!value || !CLOUD_FUNCTION_NAME.test(value)) throw new AuthNexusError("FUNCTION_NOT_FOUND", { message: "Cloud function not found." });
  return value;
}

/** Names what the audit line is about; the name only when it is a valid one (anything else is not worth recording verbatim). */
function target(c: Context<AdminEnv>, appId: string, name: string | null, detail: Record<string, unknown> = {}): void {
  const named = name !== null && CLOUD_FUNCTION_NAME.test(name);
  if (named) c.set("auditTargetId", `${appId}:${name}`);
  c.set("auditDetail", { app_id: appId, ...(named ? { name } : {}), ...detail });
}

/** What the audit row keeps of a saved function: enough to tell versions apart, never the script. */
function savedFacts(fn: CloudFunctionView): Record<string, unknown> {
  return {
    function_id: fn.id,
    version: fn.version,
    sha256: fn.sha256,
    size_bytes: fn.size_bytes,
    timeout_ms: fn.timeout_ms,
    enabled: fn.enabled,
  };
}

export function cloudFunctionRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  const read = guard(ctx, "read");
  const write = (action: string) => guard(ctx, "write", { action, target: "cloud_function" });
  const appOf = (c: Context) => idParam(c, "app_id");

  routes.get("/:app_id/cloud-functions", read, async (c) =>
    c.json(await listCloudFunctions(ctx, appOf(c), parsePageRequest(c.req.query()))),
  );
  routes.post("/:app_id/cloud-functions", write("cloud_function.create"), async (c) => {
    const appId = appOf(c);
    target(c, appId, null);
    const body = await readJson(c, createBody);
    target(c, appId, body.name);
    const created = await createCloudFunction(ctx, actorOf(c), {
      appId,
      name: body.name,
      script: body.script,
      timeoutMs: body.timeout_ms,
      enabled: body.enabled,
    });
    target(c, appId, created.name, savedFacts(created));
    return c.json(created, 201);
  });
  routes.get("/:app_id/cloud-functions/:name", read, async (c) => c.json(await getCloudFunction(ctx, appOf(c), nameParam(c))));
  routes.patch("/:app_id/cloud-functions/:name", write("cloud_function.update"), async (c) => {
    const appId = appOf(c);
    const name = nameParam(c);
    target(c, appId, name);
    const body = await readJson(c, patchBody);
    target(c, appId, name, { changes: Object.keys(body) });
    const updated = await updateCloudFunction(ctx, actorOf(c), appId, name, {
      script: body.script,
      timeoutMs: body.timeout_ms,
      enabled: body.enabled,
    });
    target(c, appId, name, { changes: Object.keys(body), changed: updated.changed, ...savedFacts(updated) });
    return c.json(updated);
  });
  routes.delete("/:app_id/cloud-functions/:name", write("cloud_function.delete"), async (c) => {
    const appId = appOf(c);
    const name = nameParam(c);
    target(c, appId, name);
    await readJson(c, noBody);
    const deleted = await deleteCloudFunction(ctx, actorOf(c), appId, name);
    target(c, appId, name, savedFacts(deleted));
    return c.json(deleted);
  });
  return routes;
}
