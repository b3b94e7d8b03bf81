/**
 * /admin/v1/applications/:app_id/{users,card-keys,invite-codes,sessions}: business
 * administration on the Runtime DB (users with their devices, sessions and variables). Reads
 * need "read", changes "write". Every change is audited
 * here (agent audit, `business.*` actions; the target is named before the work, so a refusal
 * names it too) and by the service in the Runtime DB's user audit log.
 */
import { type Context, Hono } from "hono";
import { z } from "zod";
import { AuthNexusError, parseOrThrow } from "../../../shared/errors/index.js";
import { readJson } from "../../http/json-body.js";
import {
  CARD_VIEW_STATUSES,
  deleteCard,
  disableCard,
  exportCardBatch,
  generateCards,
  listCards,
  MAX_CARD_DURATION_SECONDS,
  MAX_CARD_NOTE_LENGTH,
  MAX_CARDS_PER_BATCH,
  MIN_CARD_DURATION_SECONDS,
} from "../../services/business/cards.js";
import { hasControlCharacter } from "../../services/business/common.js";
import { deleteInvite, generateInvites, listInvites, MAX_INVITE_USES, MAX_INVITES_PER_CALL } from "../../services/business/invites.js";
import { kickSession, listSessions } from "../../services/business/sessions.js";
import { deleteUserVariable, listUserVariableViews, setUserVariable } from "../../services/business/user-variables.js";
import {
  banUser,
  createUser,
  deleteUser,
  getUser,
  listUserDevices,
  listUsers,
  removeUserDevice,
  requireUserForRead,
  resetUserPassword,
  revokeAllUserSessions,
  USER_SEARCH_MAX_LENGTH,
  USER_STATUSES,
  unbanUser,
} from "../../services/business/users.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest } from "../../services/pagination.js";
import { type AdminEnv, actorOf } from "../env.js";
import { guard } from "../middleware.js";
import { ID_PATTERN, safeText } from "../schemas.js";
import { idParam } from "./params.js";

/** Device ids are chosen by SDK clients: the protocol carries up to this many UTF-8 bytes (shared/protocol LIMITS.deviceId). */
const DEVICE_ID_MAX_BYTES = 128;

const idField = z.string().regex(ID_PATTERN, "must be 1-64 letters, digits, _ or -");
/** Text that is only ever compared, never stored: anything but control characters (PostgreSQL refuses NUL in text). */
const searchText = (max: number) =>
  z
    .string()
    .max(max, `must be at most ${max} characters`)
    .refine((s) => !hasControlCharacter(s), "must not contain control characters");

// Types only here; the services own the rules for usernames, passwords and emails (and say which one failed).
const createUserBody = z.strictObject({ username: z.string(), password: z.string(), email: z.string().optional() });
const passwordBody = z.strictObject({ password: z.string() });
const banBody = z.strictObject({ reason: safeText(500).optional() });
const noBody = z.strictObject({});
// The value's rules (size under app_policy, text only) are the service's, which names the key.
const variableBody = z.strictObject({ value: z.string() });
const cardBody = z.strictObject({
  count: z.number().int().min(1).max(MAX_CARDS_PER_BATCH),
  duration_seconds: z.number().int().min(MIN_CARD_DURATION_SECONDS).max(MAX_CARD_DURATION_SECONDS),
  note: safeText(MAX_CARD_NOTE_LENGTH).nullable().optional(),
});
const inviteBody = z.strictObject({
  count: z.number().int().min(1).max(MAX_INVITES_PER_CALL),
  max_uses: z.number().int().min(1).max(MAX_INVITE_USES),
  // Parsed (epoch ms or ISO-8601 with a zone, in the future) by the service.
  expires_at: z
    .union([z.number().int().positive(), z.string().max(64)])
    .nullable()
    .optional(),
});
const userListQuery = z.object({ q: searchText(USER_SEARCH_MAX_LENGTH).optional(), status: z.enum(USER_STATUSES).optional() });
const cardListQuery = z.object({ status: z.enum(CARD_VIEW_STATUSES).optional(), batch_id: idField.optional() });
const sessionListQuery = z.object({ online: z.enum(["true", "false", "1", "0"]).optional(), user_id: idField.optional() });

/** A query parameter, with "" read as absent. */
function query(c: Context, name: string): string | undefined {
  const value = c.req.query(name);
  return value === "" ? undefined : value;
}

/** A device id in a path: one that no client could have sent is a 404 without touching the database. */
function deviceParam(c: Context): string {
  const value = c.req.param("device_id");
  if (!value || Buffer.byteLength(value, "utf8") > DEVICE_ID_MAX_BYTES || hasControlCharacter(value)) throw new AuthNexusError("NOT_FOUND");
  return value;
}

/** A variable's key in a path, as given: the service says what is wrong with one it cannot store. */
function variableKeyParam(c: Context): string {
  return c.req.param("key") ?? "";
}

/** A key as the agent audit records it: a valid key is at most 64 characters, a refused one is cut there. */
function auditedKey(key: string): string {
  return key.slice(0, 64);
}

/** Names what the audit line is about (before the work: a refusal is recorded against it too). */
function target(c: Context<AdminEnv>, targetId: string | null, detail: Record<string, unknown>): void {
  if (targetId !== null) c.set("auditTargetId", targetId);
  c.set("auditDetail", detail);
}

/** The application and user a user route names, recorded as the audit target first. */
function userTarget(c: Context<AdminEnv>): { appId: string; userId: string } {
  const appId = idParam(c, "app_id");
  const userId = idParam(c, "user_id");
  target(c, userId, { app_id: appId });
  return { appId, userId };
}

export function businessRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  const read = guard(ctx, "read");
  const write = (action: string, targetType: string) => guard(ctx, "write", { action, target: targetType });
  const appOf = (c: Context) => idParam(c, "app_id");
  const pageOf = (c: Context) => parsePageRequest(c.req.query());

  // ---- users ------------------------------------------------------------------------------
  routes.get("/:app_id/users", read, async (c) => {
    const appId = appOf(c);
    const q = parseOrThrow(userListQuery, { q: query(c, "q"), status: query(c, "status") });
    return c.json(await listUsers(ctx, appId, { q: q.q, status: q.status }, pageOf(c)));
  });
  routes.post("/:app_id/users", write("business.user.create", "user"), async (c) => {
    const appId = appOf(c);
    target(c, null, { app_id: appId });
    const body = await readJson(c, createUserBody);
    const user = await createUser(ctx, actorOf(c), appId, body);
    target(c, user.id, { app_id: appId, username: user.username });
    return c.json(user, 201);
  });
  routes.get("/:app_id/users/:user_id", read, async (c) => c.json(await getUser(ctx, appOf(c), idParam(c, "user_id"))));
  routes.delete("/:app_id/users/:user_id", write("business.user.delete", "user"), async (c) => {
    const { appId, userId } = userTarget(c);
    await readJson(c, noBody);
    const deleted = await deleteUser(ctx, actorOf(c), appId, userId);
    target(c, userId, { app_id: appId, deleted_sessions: deleted.deleted_sessions, auth_epoch: deleted.auth_epoch });
    return c.json(deleted);
  });
  routes.post("/:app_id/users/:user_id/password", write("business.user.password_reset", "user"), async (c) => {
    const { appId, userId } = userTarget(c);
    const body = await readJson(c, passwordBody);
    const user = await resetUserPassword(ctx, actorOf(c), appId, userId, body.password);
    target(c, userId, { app_id: appId, auth_epoch: user.auth_epoch, revoked_sessions: user.revoked_sessions });
    return c.json(user);
  });
  routes.post("/:app_id/users/:user_id/ban", write("business.user.ban", "user"), async (c) => {
    const { appId, userId } = userTarget(c);
    const body = await readJson(c, banBody);
    const user = await banUser(ctx, actorOf(c), appId, userId, body.reason);
    target(c, userId, { app_id: appId, auth_epoch: user.auth_epoch, revoked_sessions: user.revoked_sessions });
    return c.json(user);
  });
  routes.post("/:app_id/users/:user_id/unban", write("business.user.unban", "user"), async (c) => {
    const { appId, userId } = userTarget(c);
    await readJson(c, noBody);
    return c.json(await unbanUser(ctx, actorOf(c), appId, userId));
  });
  routes.get("/:app_id/users/:user_id/devices", read, async (c) =>
    c.json(await listUserDevices(ctx, appOf(c), idParam(c, "user_id"), pageOf(c))),
  );
  routes.delete("/:app_id/users/:user_id/devices/:device_id", write("business.device.remove", "user"), async (c) => {
    const appId = appOf(c);
    const userId = idParam(c, "user_id");
    const deviceId = deviceParam(c);
    target(c, userId, { app_id: appId, device_id: deviceId });
    await readJson(c, noBody);
    const removed = await removeUserDevice(ctx, actorOf(c), appId, userId, deviceId);
    target(c, userId, { app_id: appId, device_id: deviceId, revoked_sessions: removed.revoked_sessions, command_id: removed.command_id });
    return c.json(removed);
  });
  routes.get("/:app_id/users/:user_id/sessions", read, async (c) => {
    const appId = appOf(c);
    const userId = idParam(c, "user_id");
    const q = parseOrThrow(sessionListQuery.pick({ online: true }), { online: query(c, "online") });
    const page = pageOf(c);
    await requireUserForRead(ctx, appId, userId);
    return c.json(await listSessions(ctx, appId, { userId, online: onlineFilter(q.online) }, page));
  });
  routes.post("/:app_id/users/:user_id/sessions/revoke", write("business.sessions.revoke", "user"), async (c) => {
    const { appId, userId } = userTarget(c);
    await readJson(c, noBody);
    const revoked = await revokeAllUserSessions(ctx, actorOf(c), appId, userId);
    target(c, userId, { app_id: appId, revoked_sessions: revoked.revoked_sessions, command_id: revoked.command_id });
    return c.json(revoked);
  });

  // ---- per-user variables -----------------------------------------------------------------
  routes.get("/:app_id/users/:user_id/variables", read, async (c) =>
    c.json(await listUserVariableViews(ctx, appOf(c), idParam(c, "user_id"))),
  );
  routes.put("/:app_id/users/:user_id/variables/:key", write("business.user_variable.set", "user"), async (c) => {
    const { appId, userId } = userTarget(c);
    const key = variableKeyParam(c);
    target(c, userId, { app_id: appId, key: auditedKey(key) });
    const body = await readJson(c, variableBody);
    const set = await setUserVariable(ctx, actorOf(c), { appId, userId, key }, body.value);
    target(c, userId, { app_id: appId, key, bytes: Buffer.byteLength(set.value, "utf8"), created: set.created });
    return c.json(set, set.created ? 201 : 200);
  });
  routes.delete("/:app_id/users/:user_id/variables/:key", write("business.user_variable.delete", "user"), async (c) => {
    const { appId, userId } = userTarget(c);
    const key = variableKeyParam(c);
    target(c, userId, { app_id: appId, key: auditedKey(key) });
    await readJson(c, noBody);
    return c.json(await deleteUserVariable(ctx, actorOf(c), { appId, userId, key }));
  });

  // ---- card keys --------------------------------------------------------------------------
  routes.post("/:app_id/card-keys", write("business.card_keys.generate", "card_key_batch"), async (c) => {
    const appId = appOf(c);
    target(c, null, { app_id: appId });
    const body = await readJson(c, cardBody);
    const batch = await generateCards(ctx, actorOf(c), appId, {
      count: body.count,
      durationSeconds: body.duration_seconds,
      note: body.note,
    });
    target(c, batch.batch_id, { app_id: appId, count: batch.cards.length, duration_seconds: batch.duration_seconds });
    return c.json(batch, 201);
  });
  routes.get("/:app_id/card-keys", read, async (c) => {
    const appId = appOf(c);
    const q = parseOrThrow(cardListQuery, { status: query(c, "status"), batch_id: query(c, "batch_id") });
    return c.json(await listCards(ctx, appId, { status: q.status, batchId: q.batch_id }, pageOf(c)));
  });
  routes.get("/:app_id/card-keys/batches/:batch_id/export", read, async (c) => {
    const batchId = idParam(c, "batch_id");
    const csv = await exportCardBatch(ctx, appOf(c), batchId);
    return c.body(csv, 200, {
      "Content-Type": "text/csv; charset=utf-8",
      "Content-Disposition": `attachment; filename="card-keys-${batchId}.csv"`,
    });
  });
  routes.post("/:app_id/card-keys/:card_id/disable", write("business.card_key.disable", "card_key"), async (c) => {
    const appId = appOf(c);
    const cardId = idParam(c, "card_id");
    target(c, cardId, { app_id: appId });
    await readJson(c, noBody);
    const card = await disableCard(ctx, actorOf(c), appId, cardId);
    target(c, cardId, { app_id: appId, revoked_sessions: card.revoked_sessions, command_id: card.command_id });
    return c.json(card);
  });
  routes.delete("/:app_id/card-keys/:card_id", write("business.card_key.delete", "card_key"), async (c) => {
    const appId = appOf(c);
    const cardId = idParam(c, "card_id");
    target(c, cardId, { app_id: appId });
    await readJson(c, noBody);
    const deleted = await deleteCard(ctx, actorOf(c), appId, cardId);
    target(c, cardId, { app_id: appId, revoked_sessions: deleted.revoked_sessions, command_id: deleted.command_id });
    return c.json(deleted);
  });

  // ---- invite codes -----------------------------------------------------------------------
  routes.post("/:app_id/invite-codes", write("business.invite_codes.generate", "application"), async (c) => {
    const appId = appOf(c);
    target(c, appId, { app_id: appId });
    const body = await readJson(c, inviteBody);
    const made = await generateInvites(ctx, actorOf(c), appId, { count: body.count, maxUses: body.max_uses, expiresAt: body.expires_at });
    target(c, appId, { app_id: appId, count: made.codes.length, max_uses: made.max_uses, expires_at: made.expires_at });
    return c.json(made, 201);
  });
  routes.get("/:app_id/invite-codes", read, async (c) => c.json(await listInvites(ctx, appOf(c), pageOf(c))));
  routes.delete("/:app_id/invite-codes/:invite_id", write("business.invite_code.delete", "invite_code"), async (c) => {
    const appId = appOf(c);
    const inviteId = idParam(c, "invite_id");
    target(c, inviteId, { app_id: appId });
    await readJson(c, noBody);
    return c.json(await deleteInvite(ctx, actorOf(c), appId, inviteId));
  });

  // ---- sessions ---------------------------------------------------------------------------
  routes.get("/:app_id/sessions", read, async (c) => {
    const appId = appOf(c);
    const q = parseOrThrow(sessionListQuery, { online: query(c, "online"), user_id: query(c, "user_id") });
    return c.json(await listSessions(ctx, appId, { userId: q.user_id, online: onlineFilter(q.online) }, pageOf(c)));
  });
  routes.delete("/:app_id/sessions/:session_id", write("business.session.kick", "session"), async (c) => {
    const appId = appOf(c);
    const sessionId = idParam(c, "session_id");
    target(c, sessionId, { app_id: appId });
    await readJson(c, noBody);
    const kicked = await kickSession(ctx, actorOf(c), appId, sessionId);
    target(c, sessionId, { app_id: appId, user_id: kicked.user_id, command_id: kicked.command_id });
    return c.json(kicked);
  });
  return routes;
}

function onlineFilter(raw: "true" | "false" | "1" | "0" | undefined): boolean | undefined {
  return raw === undefined ? undefined : raw === "true" || raw === "1";
}
