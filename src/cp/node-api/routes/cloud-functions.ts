/**
 * Channel 1 cloud-function download: `GET /cp/v2/objects/cloud-functions/:name?app_id=` → the
 * script as text/plain, `ETag: "<sha256 hex>"` (the manifest's sha256, quoted as RFC 9110
 * requires) and `X-Function-Version`. If-None-Match with that ETag answers 304 without a body.
 * Any node the CP recognises may download any function: nodes serve every application.
 */
import { Hono } from "hono";
import { z } from "zod";
import { AuthNexusError, parseOrThrow } from "../../../shared/errors/index.js";

import { CLOUD_FUNCTION_NAME } from "../../services/applications/cloud-functions.js";
import { cloudFunctionBody } from "../../services/applications/node-channel.js";
import type { CpContext } from "../../services/context.js";
import type { NodeApiEnv } from "../env.js";

const downloadQuery = z.object({ app_id: z.string({ error: "is required" }).regex(/^[A-Za-z0-9_-]{1,64}$/, "must be an application id") });

export function cloudFunctionObjectRoutes(ctx: CpContext): Hono<NodeApiEnv> {
  const routes = new Hono<NodeApiEnv>();
  routes.get("/cloud-functions/:name", async (c) => {
    const { app_id: appId } = parseOrThrow(downloadQuery, { app_id: c.req.query("app_id") });
    const name = c.req.param("name");
    if (!CLOUD_FUNCTION_NAME.test(name)) throw new AuthNexusError("NOT_FOUND", { message: "Cloud function not found." });
    const fn = await cloudFunctionBody(ctx, appId, name);
    const etag = `"${fn.sha256}"`;
    const headers = { ETag: etag, "X-Function-Version": String(fn.version), "Cache-Control": "no-cache" };
    if (c.req.header("if-none-match") === etag) return c.body(null, 304, headers);
    return c.body(fn.script, 200, { ...headers, "Content-Type": "text/plain; charset=utf-8" });
  });
  return routes;
}
