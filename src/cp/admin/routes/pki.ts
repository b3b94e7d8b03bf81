/** /admin/v1/pki: the CAs, the certificate inventory, revocation, certificates close to expiry, and the PKI audit log. */
import { Hono } from "hono";
import { z } from "zod";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { CA_PROFILES, LEAF_PROFILE_NAMES, type LeafProfile, REVOCATION_REASONS, type RevocationReason } from "../../../shared/pki/index.js";
import { readJson } from "../../http/json-body.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { listExpiringCertificates, parseExpiringDays } from "../../services/pki/expiring.js";
import { getCertificate, listCas, listCertificates, revokeCertificate } from "../../services/pki/inventory.js";
import type { AdminEnv } from "../env.js";
import { guard } from "../middleware.js";
import { ID_PATTERN } from "../schemas.js";
import { auditLogRoute } from "./audit-logs.js";
import { idParam } from "./params.js";

const certQuery = z.object({
  ca_profile: z.enum(CA_PROFILES).optional(),
  profile: z.enum(LEAF_PROFILE_NAMES as [LeafProfile, ...LeafProfile[]]).optional(),
  owner_type: z
    .string()
    .regex(/^[a-z_]{1,32}$/)
    .optional(),
  owner_id: z.string().regex(ID_PATTERN).optional(),
  status: z.enum(["valid", "revoked", "expired"]).optional(),
});
const revokeBody = z.strictObject({
  reason: z.enum(REVOCATION_REASONS as [RevocationReason, ...RevocationReason[]]).default("unspecified"),
});

export function pkiRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/cas", guard(ctx, "read"), async (c) => c.json({ items: await listCas(ctx) }));
  routes.get("/certs", guard(ctx, "read"), async (c) => {
    const q = c.req.query();
    const filter = parseOrThrow(certQuery, {
      ca_profile: q.ca_profile,
      profile: q.profile,
      owner_type: q.owner_type,
      owner_id: q.owner_id,
      status: q.status,
    });
    return c.json(
      await listCertificates(
        ctx,
        {
          caProfile: filter.ca_profile,
          profile: filter.profile,
          ownerType: filter.owner_type,
          ownerId: filter.owner_id,
          status: filter.status,
        },
        parsePageRequest(q),
      ),
    );
  });
  routes.get("/certs/:id", guard(ctx, "read"), async (c) => c.json(await getCertificate(ctx, idParam(c))));
  routes.post("/certs/:id/revoke", guard(ctx, "write", { action: "cert.revoke", target: "certificate" }), async (c) => {
    const body = await readJson(c, revokeBody);
    c.set("auditDetail", { reason: body.reason });
    return c.json(await revokeCertificate(ctx, idParam(c), body.reason, c.get("agent").agentId));
  });
  routes.get("/expiring", guard(ctx, "read"), async (c) => {
    const q = c.req.query();
    return c.json(await listExpiringCertificates(ctx, parseExpiringDays(q.days), parsePageRequest(q)));
  });
  routes.get("/audit-logs", ...auditLogRoute(ctx, "pki-audit-logs"));
  return routes;
}
