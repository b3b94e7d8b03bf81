/** /admin/v1/applications/:app_id/client-certs: application client certificates and their SDK configuration. */
import { Hono } from "hono";
import type { CpContext } from "../../services/context.js";
import type { AdminEnv } from "../env.js";

export function clientCertRoutes(_ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  return routes;
}
