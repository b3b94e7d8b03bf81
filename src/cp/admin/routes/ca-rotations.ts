/**
 * /admin/v1/pki/ca-rotations: rotating a CA in visible phases (services/pki/ca-rotations.ts):
 * prepare (POST /), publish, switch, retire, rollback, and the list and detail (with per-node
 * progress). `force` lets the step a profile gates on its nodes go ahead anyway: switch for
 * app_client_ca, retire for tcp_server_ca. Every step is a write audited against the rotation.
 */
import { Hono } from "hono";
import { z } from "zod";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { CA_PROFILES } from "../../../shared/pki/index.js";
import { readJson } from "../../http/json-body.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import {
  getCaRotation,
  listCaRotations,
  prepareCaRotation,
  publishCaRotation,
  retireCaRotation,
  rollbackCaRotation,
  switchCaRotation,
} from "../../services/pki/ca-rotations.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { idParam } from "./params.js";

const prepareBody = z.strictObject({ ca: z.string().max(64) });
const noBody = z.strictObject({});
const switchBody = z.strictObject({ force: z.boolean().optional() });
const retireBody = z.strictObject({ revoke_leaves: z.boolean().optional(), force: z.boolean().optional() });
const listQuery = z.object({
  ca: z.enum(CA_PROFILES).optional(),
  open: z.enum(["true", "false"]).optional(),
});

export function caRotationRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/", guard(ctx, "read"), async (c) => {
    const q = c.req.query();
    const filter = parseOrThrow(listQuery, { ca: q.ca, open: q.open });
    const open = filter.open === undefined ? undefined : filter.open === "true";
    return c.json(await listCaRotations(ctx, { caProfile: filter.ca, open }, parsePageRequest(q)));
  });
  routes.get("/:id", guard(ctx, "read"), async (c) => c.json(await getCaRotation(ctx, idParam(c))));
  routes.post("/", guard(ctx, "write", { action: "pki.ca_rotation.prepare", target: "ca_rotation" }), async (c) => {
    const body = await readJson(c, prepareBody);
    c.set("auditDetail", { ca: body.ca });
    const rotation = await prepareCaRotation(ctx, actorOf(c), body.ca);
    c.set("auditTargetId", rotation.id);
    c.set("auditDetail", { ca: body.ca, new_ca_id: rotation.new_ca.id });
    return c.json(rotation, 201);
  });
  routes.post("/:id/publish", guard(ctx, "write", { action: "pki.ca_rotation.publish", target: "ca_rotation" }), async (c) => {
    const id = idParam(c);
    await readJson(c, noBody);
    return c.json(await publishCaRotation(ctx, actorOf(c), id));
  });
  routes.post("/:id/switch", guard(ctx, "write", { action: "pki.ca_rotation.switch", target: "ca_rotation" }), async (c) => {
    const id = idParam(c);
    const body = await readJson(c, switchBody);
    c.set("auditDetail", { force: body.force === true });
    return c.json(await switchCaRotation(ctx, actorOf(c), id, { force: body.force === true }));
  });
  routes.post("/:id/retire", guard(ctx, "write", { action: "pki.ca_rotation.retire", target: "ca_rotation" }), async (c) => {
    const id = idParam(c);
    const body = await readJson(c, retireBody);
    c.set("auditDetail", { revoke_leaves: body.revoke_leaves === true, force: body.force === true });
    const retired = await retireCaRotation(ctx, actorOf(c), id, { revokeLeaves: body.revoke_leaves === true, force: body.force === true });
    c.set("auditDetail", {
      revoke_leaves: body.revoke_leaves === true,
      force: body.force === true,
      revoked_certificates: retired.revoked_certificates,
    });
    return c.json(retired);
  });
  routes.post("/:id/rollback", guard(ctx, "write", { action: "pki.ca_rotation.rollback", target: "ca_rotation" }), async (c) => {
    const id = idParam(c);
    await readJson(c, noBody);
    const rolledBack = await rollbackCaRotation(ctx, actorOf(c), id);
    c.set("auditDetail", { revoked_certificates: rolledBack.revoked_certificates });
    return c.json(rolledBack);
  });
  return routes;
}
