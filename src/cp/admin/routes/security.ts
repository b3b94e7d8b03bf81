/**
 * /admin/v1/security: the two Channel 3 change logs as operators see them — the server
 * blacklist (add, list, show, remove) and per-user auth epoch bumps (bump, history). Every
 * write appends to its log, publishes the SSE hint and is audited.
 */

import { Hono } from "hono";
import { z } from "zod";
import { parseOrThrow } from "../../../shared/errors/index.js";
import { BLACKLIST_KINDS } from "../../../shared/node-protocol/index.js";
import { readJson } from "../../http/json-body.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { bumpAuthEpoch, listAuthEpochChanges } from "../../services/security/auth-epochs.js";
import { addBlacklistEntry, getBlacklistEntry, listBlacklistEntries, removeBlacklistEntry } from "../../services/security/blacklist.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { ID_PATTERN, safeText } from "../schemas.js";
import { idParam } from "./params.js";

const idField = z.string().regex(ID_PATTERN, "must be 1-64 letters, digits, _ or -");
const reason = safeText(500).optional();

const blacklistBody = z.strictObject({
  kind: z.enum(BLACKLIST_KINDS),
  // Canonicalised and checked per kind by the service (IP parsing, printable ids).
  value: z.string().min(1, "must not be empty").max(128, "must be at most 128 characters"),
  reason,
  expires_at: z
    .union([z.number().int().positive(), z.string().max(64)])
    .nullable()
    .optional(),
});
const blacklistQuery = z.object({
  kind: z.enum(BLACKLIST_KINDS).optional(),
  include_removed: z.enum(["true", "false", "1", "0"]).optional(),
});
const epochBody = z.strictObject({ user_id: idField, app_id: idField.optional(), reason });
const epochQuery = z.object({ user_id: idField.optional(), app_id: idField.optional() });

export function securityRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  const write = (action: string, target: string) => guard(ctx, "write", { action, target });

  routes.get("/blacklist", guard(ctx, "read"), async (c) => {
    const q = parseOrThrow(blacklistQuery, { kind: c.req.query("kind"), include_removed: c.req.query("include_removed") });
    const includeRemoved = q.include_removed === "true" || q.include_removed === "1";
    return c.json(await listBlacklistEntries(ctx, { kind: q.kind, includeRemoved }, parsePageRequest(c.req.query())));
  });
  routes.get("/blacklist/:id", guard(ctx, "read"), async (c) => c.json(await getBlacklistEntry(ctx, idParam(c))));
  routes.post("/blacklist", write("security.blacklist.add", "blacklist_entry"), async (c) => {
    const body = await readJson(c, blacklistBody);
    const entry = await addBlacklistEntry(ctx, actorOf(c), body);
    c.set("auditTargetId", entry.id);
    c.set("auditDetail", { kind: entry.kind, value: entry.value, expires_at: entry.expires_at });
    return c.json(entry, 201);
  });
  routes.delete("/blacklist/:id", write("security.blacklist.remove", "blacklist_entry"), async (c) =>
    c.json(await removeBlacklistEntry(ctx, actorOf(c), idParam(c))),
  );

  routes.get("/auth-epochs", guard(ctx, "read"), async (c) => {
    const q = parseOrThrow(epochQuery, { user_id: c.req.query("user_id"), app_id: c.req.query("app_id") });
    return c.json(await listAuthEpochChanges(ctx, { userId: q.user_id, appId: q.app_id }, parsePageRequest(c.req.query())));
  });
  routes.post("/auth-epochs", write("security.epoch.bump", "user"), async (c) => {
    const body = await readJson(c, epochBody);
    c.set("auditTargetId", body.user_id);
    const change = await bumpAuthEpoch(ctx, actorOf(c), body);
    c.set("auditDetail", { epoch: change.epoch, app_id: change.app_id, change_id: change.id });
    return c.json(change, 201);
  });
  return routes;
}
