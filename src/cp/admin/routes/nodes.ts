/**
 * /admin/v1/nodes: node lifecycle, fleet health and deploy packages. Downloading a package is a
 * GET but needs "write": the archive carries the node's private keys and the password-hash secret.
 */

import { Hono } from "hono";
import { z } from "zod";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { readJson } from "../../http/json-body.js";
import type { CpContext } from "../../services/context.js";
import { downloadDeployPackage, listDeployPackages } from "../../services/nodes/deploy-packages.js";
import { canonicalNodeHost, createNode, deleteNode, disableNode, enableNode } from "../../services/nodes/lifecycle.js";
import { reissueNodePackage } from "../../services/nodes/reissue.js";
import { getRotation, listRotations, requestNodeRotation } from "../../services/nodes/rotation.js";
import { DISPLAYED_NODE_STATUSES, getNode, listNodes, nodesOverview } from "../../services/nodes/views.js";
import { parsePageRequest } from "../../services/pagination.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { displayName } from "../schemas.js";
import { auditLogRoute } from "./audit-logs.js";
import { idParam } from "./params.js";

const createBody = z.strictObject({
  name: displayName(100),
  host: z
    .string()
    .max(253, "must be at most 253 characters")
    .refine((h) => canonicalNodeHost(h) !== null, "must be a DNS name or an IP address usable in a certificate (no wildcard)"),
  business_port: z.number().int().min(1).max(65535),
});
/** State changes that take no input still refuse a body they do not understand. */
const noBody = z.strictObject({});
const listQuery = z.object({ status: z.enum(DISPLAYED_NODE_STATUSES).optional() });
export function nodeRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  const write = (action: string) => guard(ctx, "write", { action, target: "node" });

  // Fixed paths first: "/overview" would otherwise be read as a node id.
  routes.get("/overview", guard(ctx, "read"), async (c) => c.json(await nodesOverview(ctx)));
  routes.get("/audit-logs", ...auditLogRoute(ctx, "node-audit-logs"));
  routes.get("/auth-events", ...auditLogRoute(ctx, "node-auth-events"));

  routes.get("/", guard(ctx, "read"), async (c) => {
    const q = c.req.query();
    const { status } = parseOrThrow(listQuery, { status: q.status });
    return c.json(await listNodes(ctx, { status }, parsePageRequest(q)));
  });
  routes.post("/", write("node.create"), async (c) => {
    const body = await readJson(c, createBody);
    const node = await createNode(ctx, actorOf(c), { name: body.name, host: body.host, businessPort: body.business_port });
    c.set("auditTargetId", node.id);
    c.set("auditDetail", { name: node.name, host: node.host, job_id: node.job_id });
    return c.json(node, 201);
  });
  routes.get("/:id", guard(ctx, "read"), async (c) => c.json(await getNode(ctx, idParam(c))));
  routes.post("/:id/disable", write("node.disable"), async (c) => {
    await readJson(c, noBody);
    return c.json(await disableNode(ctx, actorOf(c), idParam(c)));
  });
  routes.post("/:id/enable", write("node.enable"), async (c) => {
    await readJson(c, noBody);
    return c.json(await enableNode(ctx, actorOf(c), idParam(c)));
  });
  // 202: the certificates are revoked at once, the new package is built by the job it names.
  routes.post("/:id/reissue-package", write("node.reissue_package"), async (c) => {
    await readJson(c, noBody);
    const reissued = await reissueNodePackage(ctx, actorOf(c), idParam(c));
    c.set("auditDetail", { job_id: reissued.job_id, revoked_certificate_ids: reissued.revoked_certificate_ids });
    return c.json(reissued, 202);
  });
  // 202: the rotation's jobs do the work; follow it at the rotation's URL.
  routes.post("/:id/certs/rotate", write("node.certs_rotate"), async (c) => {
    await readJson(c, noBody);
    const rotation = await requestNodeRotation(ctx, actorOf(c), idParam(c), "manual");
    c.set("auditDetail", { rotation_id: rotation.id, job_id: rotation.jobs[0]?.id ?? null });
    return c.json({ ...rotation, rotation_url: `/admin/v1/nodes/${rotation.node_id}/certs/rotations/${rotation.id}` }, 202);
  });
  routes.get("/:id/certs/rotations", guard(ctx, "read"), async (c) => c.json(await listRotations(ctx, idParam(c))));
  routes.get("/:id/certs/rotations/:rid", guard(ctx, "read"), async (c) => c.json(await getRotation(ctx, idParam(c), idParam(c, "rid"))));
  routes.delete("/:id", write("node.delete"), async (c) => {
    await readJson(c, noBody);
    return c.json(await deleteNode(ctx, actorOf(c), idParam(c)));
  });
  routes.get("/:id/deploy-packages", guard(ctx, "read"), async (c) => c.json(await listDeployPackages(ctx, idParam(c))));
  routes.get("/:id/deploy-packages/:pid/download", write("node.package_download"), async (c) => {
    const nodeId = idParam(c);
    const packageId = idParam(c, "pid");
    c.set("auditDetail", { package_id: packageId });
    const pkg = await downloadDeployPackage(ctx, actorOf(c), nodeId, packageId);
    return c.body(new Uint8Array(pkg.archive), 200, {
      "Content-Type": "application/gzip",
      "Content-Disposition": `attachment; filename="${pkg.fileName}"`,
      "Content-Length": String(pkg.archive.length),
      "X-Package-Sha256": pkg.sha256,
    });
  });
  return routes;
}
