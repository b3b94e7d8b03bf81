/**
 * /admin/v1/applications/:app_id/client-certs: application client certificates and their SDK
 * configuration. Issuing answers the private key this once (it is never stored); revocation is
 * the inventory's `POST /pki/certs/:id/revoke`. Path checks come first (unknown application 404,
 * one in the recycle bin 409 APPLICATION_DELETED), the body after that.
 */
import { Hono, type MiddlewareHandler } from "hono";
import { z } from "zod";
import { LEAF_VALIDITY_DAYS } from "../../../shared/config/defaults.js";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { readJson } from "../../http/json-body.js";
import { requireLiveApplication } from "../../services/applications/lookup.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { issueClientCertificate, listClientCertificates, MAX_CLIENT_COMMON_NAME } from "../../services/pki/client-certs.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { displayName, ID_PATTERN } from "../schemas.js";
import { idParam } from "./params.js";

const issueBody = z.strictObject({
  common_name: displayName(MAX_CLIENT_COMMON_NAME).optional(),
  validity_days: z
    .number()
    .int("must be a whole number of days")
    .min(1, "must be at least 1")
    .max(LEAF_VALIDITY_DAYS, `must be at most ${LEAF_VALIDITY_DAYS}`)
    .optional(),
});
const listQuery = z.object({ status: z.enum(["valid", "revoked", "expired"]).optional() });

/** Runs before the guard, so a refusal by role is audited against the application too (the audit step only knows `:id`). */
const auditTargetApp: MiddlewareHandler<AdminEnv> = async function auditTargetAppStep(c, next) {
  const appId = c.req.param("app_id");
  if (appId && ID_PATTERN.test(appId)) c.set("auditTargetId", appId);
  await next();
};

export function clientCertRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();

  routes.post(
    "/:app_id/client-certs",
    auditTargetApp,
    guard(ctx, "write", { action: "application.client_cert.issue", target: "application" }),
    async (c) => {
      const appId = idParam(c, "app_id");
      await requireLiveApplication(ctx.controlDb, appId);
      const body = await readJson(c, issueBody);
      const issued = await issueClientCertificate(ctx, actorOf(c), appId, {
        ...(body.common_name !== undefined ? { commonName: body.common_name } : {}),
        ...(body.validity_days !== undefined ? { validityDays: body.validity_days } : {}),
      });
      c.set("auditDetail", { certificate_id: issued.certificate_id, serial: issued.serial, not_after: issued.not_after });
      return c.json(issued, 201);
    },
  );

  routes.get("/:app_id/client-certs", guard(ctx, "read"), async (c) => {
    const q = c.req.query();
    const appId = idParam(c, "app_id");
    const { status } = parseOrThrow(listQuery, { status: q.status });
    return c.json(await listClientCertificates(ctx, appId, parsePageRequest(q), status));
  });
  return routes;
}
