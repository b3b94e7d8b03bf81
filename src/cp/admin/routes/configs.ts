/**
 * Config items on the admin API: set and read the six types (global ones under /configs/:type,
 * per-application ones under /applications/:app_id/configs/:type), their history, the list of
 * every item with per-node state counts, and one node's state per item (/nodes/:nid/configs;
 * the rest of /nodes belongs to routes/nodes.ts).
 *
 * Mounted at the /admin/v1 root because it spans three path families. Path checks come first:
 * an unknown type is 404 NOT_FOUND, a known type under the wrong kind of path is 400
 * VALIDATION_FAILED, a missing application 404 (and for PUT, one in the recycle bin 409
 * APPLICATION_DELETED); the body is checked after that.
 */

import { type Context, Hono } from "hono";
import { z } from "zod";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { CONFIG_TYPES } from "../../../shared/node-protocol/index.js";
import { readJson } from "../../http/json-body.js";
import { getLatestConfig, listConfigItems, listConfigVersions, listNodeConfigStates } from "../../services/configs/admin-read.js";
import { setConfig } from "../../services/configs/admin-write.js";
import { CONFIG_STATES, type ConfigItemKey, resolveConfigItem } from "../../services/configs/items.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { ID_PATTERN } from "../schemas.js";
import { idParam } from "./params.js";

/** Content is checked against the type's schema by the service; here only "an object". */
const setBody = z.strictObject({ content: z.looseObject({}) });
const listQuery = z.object({ type: z.enum(CONFIG_TYPES).optional(), app_id: z.string().regex(ID_PATTERN).optional() });
const nodeStateQuery = z.object({ state: z.enum(CONFIG_STATES).optional() });

export function configRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  const read = guard(ctx, "read");
  const write = guard(ctx, "write", { action: "config.set", target: "config" });
  const globalItem = (c: Context<AdminEnv>): ConfigItemKey => resolveConfigItem(c.req.param("type") ?? "", null);
  const appItem = (c: Context<AdminEnv>): ConfigItemKey => resolveConfigItem(c.req.param("type") ?? "", idParam(c, "app_id"));
  const setItem = async (c: Context<AdminEnv>, item: ConfigItemKey) => {
    c.set("auditTargetId", `${item.type}:${item.scope}`);
    const body = await readJson(c, setBody);
    const saved = await setConfig(ctx, actorOf(c), item, body.content);
    c.set("auditDetail", { version: saved.version, changed: saved.changed });
    return c.json(saved);
  };

  routes.get("/configs", read, async (c) => {
    const q = c.req.query();
    const filter = parseOrThrow(listQuery, { type: q.type, app_id: q.app_id });
    return c.json(await listConfigItems(ctx, { type: filter.type, appId: filter.app_id }, parsePageRequest(q)));
  });

  routes.put("/configs/:type", write, async (c) => setItem(c, globalItem(c)));
  routes.put("/applications/:app_id/configs/:type", write, async (c) => setItem(c, appItem(c)));

  routes.get("/configs/:type", read, async (c) => c.json(await getLatestConfig(ctx, globalItem(c))));
  routes.get("/configs/:type/versions", read, async (c) =>
    c.json(await listConfigVersions(ctx, globalItem(c), parsePageRequest(c.req.query()))),
  );
  routes.get("/applications/:app_id/configs/:type", read, async (c) => c.json(await getLatestConfig(ctx, appItem(c))));
  routes.get("/applications/:app_id/configs/:type/versions", read, async (c) =>
    c.json(await listConfigVersions(ctx, appItem(c), parsePageRequest(c.req.query()))),
  );

  routes.get("/nodes/:nid/configs", read, async (c) => {
    const q = c.req.query();
    const filter = parseOrThrow(nodeStateQuery, { state: q.state });
    return c.json(await listNodeConfigStates(ctx, idParam(c, "nid"), filter, parsePageRequest(q)));
  });
  return routes;
}
