/** /admin/v1/pki/jobs: the durable PKI job queue (list, detail, retry a failed job, cancel a pending one). */

import { Hono } from "hono";
import { z } from "zod";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { readJson } from "../../http/json-body.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { cancelJob, getJob, listJobs, PKI_JOB_KINDS, PKI_JOB_STATUSES, retryJob } from "../../services/pki/jobs.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { ID_PATTERN } from "../schemas.js";
import { idParam } from "./params.js";

const listQuery = z.object({
  status: z.enum(PKI_JOB_STATUSES).optional(),
  kind: z.enum(PKI_JOB_KINDS).optional(),
  target_id: z.string().regex(ID_PATTERN, "is not an id").optional(),
});
const noBody = z.strictObject({});

export function pkiJobRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/", guard(ctx, "read"), async (c) => {
    const q = c.req.query();
    const filter = parseOrThrow(listQuery, { status: q.status, kind: q.kind, target_id: q.target_id });
    return c.json(await listJobs(ctx, { status: filter.status, kind: filter.kind, targetId: filter.target_id }, parsePageRequest(q)));
  });
  routes.get("/:id", guard(ctx, "read"), async (c) => c.json(await getJob(ctx, idParam(c))));
  routes.post("/:id/retry", guard(ctx, "write", { action: "pki.job.retry", target: "pki_job" }), async (c) => {
    await readJson(c, noBody);
    return c.json(await retryJob(ctx, actorOf(c), idParam(c)));
  });
  routes.post("/:id/cancel", guard(ctx, "write", { action: "pki.job.cancel", target: "pki_job" }), async (c) => {
    await readJson(c, noBody);
    return c.json(await cancelJob(ctx, actorOf(c), idParam(c)));
  });
  return routes;
}
