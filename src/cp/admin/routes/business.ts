/**
 * /admin/v1/applications/:app_id/{users,card-keys,invite-codes,sessions}: business
 * administration on the Runtime DB.
 */
import { Hono } from "hono";
import type { CpContext } from "../../services/context.js";
import type { AdminEnv } from "../env.js";

export function businessRoutes(_ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  return routes;
}
