/**
 * End users of one application, admin side: list, create, show (with device bindings and live
 * session counts), reset a password, ban, unban, delete; remove a device binding; revoke every
 * session. Whatever must end a user's live sessions on every node bumps the user's auth epoch
 * (Channel 3) or queues a force_logout push; the Runtime DB's sessions are revoked as well, so a
 * token stops working even on a node that has not caught up yet. Never returns a password hash.
 */
import { type SqlBool, sql } from "kysely";
import { emailProblem, hashPassword, normalizeUsername, usernameProblem } from "../../../shared/credentials/index.js";
import { isUniqueViolation } from "../../../shared/db/index.js";
import {
  findUserById,
  insertUser,
  removeDeviceBinding,
  revokeUserSessions,
  USER_STATUSES,
  type UserStatus,
} from "../../../shared/db/runtime/index.js";
import type { DeviceBindingsTable, UsersTable } from "../../../shared/db/runtime-schema.js";
import { AuthNexusError, type FieldProblem, validationFailed } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { bumpAuthEpoch } from "../security/auth-epochs.js";
import { loadPasswordHashKey } from "../setup/setup.js";
import {
  auditBusinessEvent,
  containsPattern,
  hasControlCharacter,
  pushForceLogout,
  type RuntimeDb,
  requireAppForRead,
  requireAppForWrite,
} from "./common.js";

/** Shortest end-user password an admin may set (characters, counted as Unicode code points). */
export const USER_PASSWORD_MIN_LENGTH = 8;
/** Longest end-user password (characters); it must also fit the SDK's login frame (USER_PASSWORD_MAX_BYTES). */
export const USER_PASSWORD_MAX_LENGTH = 256;
/** The binary protocol carries a password in at most this many UTF-8 bytes (shared/protocol LIMITS.password). */
const USER_PASSWORD_MAX_BYTES = 256;
/** The binary protocol carries a username in at most this many UTF-8 bytes (shared/protocol LIMITS.username). */
const USERNAME_MAX_BYTES = 64;
/** Longest `q` search text (characters). */
export const USER_SEARCH_MAX_LENGTH = 100;
/** Device bindings shown in a user's detail (most recently seen first); GET …/devices pages through all of them. */
const DETAIL_MAX_DEVICES = 100;

/** The revoke_reason written on sessions, and the auth-epoch reasons. */
const REASON = {
  passwordReset: "password reset",
  banned: "banned",
  deleted: "user deleted",
  deviceRemoved: "device removed",
  revoked: "revoked by admin",
} as const;

export { USER_STATUSES, type UserStatus };

/** A user as the API shows it: never the password hash. */
export interface UserView {
  id: string;
  app_id: string;
  username: string;
  email: string | null;
  status: string;
  auth_epoch: number;
  invite_code_id: string | null;
  created_at: number;
  updated_at: number;
  last_login_at: number | null;
}

const USER_COLUMNS = [
  "id",
  "app_id",
  "username",
  "email",
  "status",
  "auth_epoch",
  "invite_code_id",
  "created_at",
  "updated_at",
  "last_login_at",
] as const;

/** Built field by field: a full row (password hash included) never leaks through it. */
function toUserView(row: Pick<UsersTable, (typeof USER_COLUMNS)[number]>): UserView {
  return {
    id: row.id,
    app_id: row.app_id,
    username: row.username,
    email: row.email,
    status: row.status,
    auth_epoch: Number(row.auth_epoch),
    invite_code_id: row.invite_code_id,
    created_at: row.created_at,
    updated_at: row.updated_at,
    last_login_at: row.last_login_at,
  };
}

export interface DeviceView {
  device_id: string;
  created_at: number;
  last_seen_at: number;
  /** Sessions of the user on this device that are neither revoked nor expired. */
  live_sessions: number;
}

export interface UserDetail extends UserView {
  /** Live sessions over every device. */
  live_sessions: number;
  device_count: number;
  /** At most DETAIL_MAX_DEVICES, most recently seen first. */
  devices: DeviceView[];
}

/** The user, when it belongs to `appId`; another application's user is as unknown as a missing one. */
async function requireUser(db: RuntimeDb, appId: string, userId: string): Promise<UsersTable> {
  const user = await findUserById(db, userId);
  if (!user || user.app_id !== appId) throw new AuthNexusError("NOT_FOUND", { message: "User not found." });
  return user;
}

function passwordProblem(password: string): string | null {
  const length = [...password].length;
  if (length < USER_PASSWORD_MIN_LENGTH || length > USER_PASSWORD_MAX_LENGTH)
    return `must be ${USER_PASSWORD_MIN_LENGTH}-${USER_PASSWORD_MAX_LENGTH} characters`;
  if (Buffer.byteLength(password, "utf8") > USER_PASSWORD_MAX_BYTES) return `must be at most ${USER_PASSWORD_MAX_BYTES} bytes in UTF-8`;
  return null;
}

function assertPassword(password: string): void {
  const problem = passwordProblem(password);
  if (problem) throw validationFailed([{ field: "password", problem }]);
}

// ---- reads ---------------------------------------------------------------------------------

export interface UserFilter {
  /** Substring of the username (compared normalised) or of the email (case-insensitive). */
  q?: string | undefined;
  status?: UserStatus | undefined;
}

/** Newest first. */
export async function listUsers(ctx: CpContext, appId: string, filter: UserFilter, request: PageRequest): Promise<Page<UserView>> {
  await requireAppForRead(ctx, appId);
  const q = filter.q;
  const base = ctx.runtimeDb
    .selectFrom("users")
    .where("app_id", "=", appId)
    .$if(filter.status !== undefined, (qb) => qb.where("status", "=", filter.status as string))
    .$if(q !== undefined, (qb) =>
      qb.where((eb) =>
        eb.or([
          sql<SqlBool>`${sql.ref("username_normalized")} like ${containsPattern(normalizeUsername(q as string))} escape '!'`,
          sql<SqlBool>`lower(${sql.ref("email")}) like ${containsPattern((q as string).toLowerCase())} escape '!'`,
        ]),
      ),
    );
  return paginate(base, request, (qb) => qb.select(USER_COLUMNS).orderBy("created_at", "desc").orderBy("id", "desc"), toUserView);
}

/** Live-session counts per device of one user (only for the devices asked about). */
async function liveSessionsByDevice(ctx: CpContext, userId: string, deviceIds: string[] | null): Promise<Map<string, number>> {
  if (deviceIds !== null && deviceIds.length === 0) return new Map();
  const rows = await ctx.runtimeDb
    .selectFrom("sessions")
    .select("device_id")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("user_id", "=", userId)
    .where("revoked_at", "is", null)
    .where("expires_at", ">", ctx.clock.now())
    .$if(deviceIds !== null, (q) => q.where("device_id", "in", deviceIds as string[]))
    .groupBy("device_id")
    .execute();
  return new Map(rows.map((r) => [r.device_id, Number(r.n)]));
}

function toDeviceView(row: DeviceBindingsTable, live: Map<string, number>): DeviceView {
  return {
    device_id: row.device_id,
    created_at: row.created_at,
    last_seen_at: row.last_seen_at,
    live_sessions: live.get(row.device_id) ?? 0,
  };
}

export async function getUser(ctx: CpContext, appId: string, userId: string): Promise<UserDetail> {
  await requireAppForRead(ctx, appId);
  const user = await requireUser(ctx.runtimeDb, appId, userId);
  const bindings = ctx.runtimeDb.selectFrom("device_bindings").where("app_id", "=", appId).where("user_id", "=", userId);
  const [devices, deviceCount, live] = await Promise.all([
    bindings.selectAll().orderBy("last_seen_at", "desc").orderBy("device_id").limit(DETAIL_MAX_DEVICES).execute(),
    bindings.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
    liveSessionsByDevice(ctx, userId, null),
  ]);
  let liveTotal = 0;
  for (const n of live.values()) liveTotal += n;
  return {
    ...toUserView(user),
    live_sessions: liveTotal,
    device_count: Number(deviceCount.n),
    devices: devices.map((d) => toDeviceView(d, live)),
  };
}

/** The user's device bindings, most recently seen first, each with its live-session count. */
export async function listUserDevices(ctx: CpContext, appId: string, userId: string, request: PageRequest): Promise<Page<DeviceView>> {
  await requireAppForRead(ctx, appId);
  await requireUser(ctx.runtimeDb, appId, userId);
  const base = ctx.runtimeDb.selectFrom("device_bindings").where("app_id", "=", appId).where("user_id", "=", userId);
  const page = await paginate(base, request, (q) => q.selectAll().orderBy("last_seen_at", "desc").orderBy("device_id"));
  const live = await liveSessionsByDevice(
    ctx,
    userId,
    page.items.map((d) => d.device_id),
  );
  return { ...page, items: page.items.map((d) => toDeviceView(d, live)) };
}

/** 404 unless the user exists in this (existing) application; for routes that list the user's things elsewhere. */
export async function requireUserForRead(ctx: CpContext, appId: string, userId: string): Promise<void> {
  await requireAppForRead(ctx, appId);
  await requireUser(ctx.runtimeDb, appId, userId);
}

/** 404 unless the user exists in this live application (409 APPLICATION_DELETED in the recycle bin); for changes to the user's things elsewhere. */
export async function requireUserForWrite(ctx: CpContext, appId: string, userId: string): Promise<void> {
  await requireAppForWrite(ctx, appId);
  await requireUser(ctx.runtimeDb, appId, userId);
}

// ---- changes -------------------------------------------------------------------------------

export interface NewUser {
  username: string;
  password: string;
  email?: string | undefined;
}

/** Creates an active user; a taken name (compared normalised, per application) is 409 CONFLICT. */
export async function createUser(ctx: CpContext, actor: Actor, appId: string, input: NewUser): Promise<UserView> {
  const problems: FieldProblem[] = [];
  const nameProblem =
    usernameProblem(input.username) ??
    (Buffer.byteLength(input.username, "utf8") > USERNAME_MAX_BYTES ? `must be at most ${USERNAME_MAX_BYTES} bytes in UTF-8` : null);
  if (nameProblem) problems.push({ field: "username", problem: nameProblem });
  const pwProblem = passwordProblem(input.password);
  if (pwProblem) problems.push({ field: "password", problem: pwProblem });
  const mailProblem =
    input.email === undefined ? null : hasControlCharacter(input.email) ? "must not contain control characters" : emailProblem(input.email);
  if (mailProblem) problems.push({ field: "email", problem: mailProblem });
  if (problems.length > 0) throw validationFailed(problems);

  await requireAppForWrite(ctx, appId);
  const key = await loadPasswordHashKey(ctx);
  const now = ctx.clock.now();
  const row: UsersTable = {
    id: newId("usr"),
    app_id: appId,
    username: input.username,
    username_normalized: normalizeUsername(input.username),
    email: input.email ?? null,
    password_hash: hashPassword(input.password, key),
    auth_epoch: 0,
    status: "active",
    invite_code_id: null,
    created_at: now,
    updated_at: now,
    last_login_at: null,
  };
  try {
    await ctx.runtimeDb.transaction().execute(async (trx) => {
      await insertUser(trx, row);
      await auditBusinessEvent(trx, ctx, actor, {
        appId,
        userId: row.id,
        event: "user.created",
        detail: { user_id: row.id, username: row.username },
      });
    });
  } catch (error) {
    if (isUniqueViolation(error))
      throw new AuthNexusError("CONFLICT", { message: `The username "${input.username}" is already taken in this application.` });
    throw error;
  }
  return toUserView(row);
}

export interface PasswordResetResult extends UserView {
  /** Sessions revoked in the Runtime DB. */
  revoked_sessions: number;
}

/**
 * Sets a new password, then bumps the auth epoch (every node ends the user's live sessions) and
 * revokes the user's sessions in the Runtime DB. The hash is written first: a login with the
 * old password can only have happened before it, so its session is older than the new epoch.
 */
export async function resetUserPassword(
  ctx: CpContext,
  actor: Actor,
  appId: string,
  userId: string,
  password: string,
): Promise<PasswordResetResult> {
  assertPassword(password);
  await requireAppForWrite(ctx, appId);
  await requireUser(ctx.runtimeDb, appId, userId);
  const key = await loadPasswordHashKey(ctx);
  await ctx.runtimeDb
    .updateTable("users")
    .set({ password_hash: hashPassword(password, key), updated_at: ctx.clock.now() })
    .where("id", "=", userId)
    .execute();
  const change = await bumpAuthEpoch(ctx, actor, { user_id: userId, app_id: appId, reason: REASON.passwordReset });
  const revoked = await ctx.runtimeDb.transaction().execute(async (trx) => {
    const n = await revokeUserSessions(trx, userId, REASON.passwordReset, ctx.clock.now());
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId,
      event: "user.password_reset",
      detail: { user_id: userId, auth_epoch: change.epoch, epoch_change_id: change.id, revoked_sessions: n },
    });
    return n;
  });
  const user = await requireUser(ctx.runtimeDb, appId, userId);
  return { ...toUserView(user), revoked_sessions: revoked };
}

export interface BanResult extends UserView {
  revoked_sessions: number;
}

/** active → banned (409 CONFLICT when already banned), then the epoch bump and the session revocation. */
export async function banUser(
  ctx: CpContext,
  actor: Actor,
  appId: string,
  userId: string,
  reason: string | null | undefined,
): Promise<BanResult> {
  await requireAppForWrite(ctx, appId);
  await requireUser(ctx.runtimeDb, appId, userId);
  const updated = await ctx.runtimeDb
    .updateTable("users")
    .set({ status: "banned", updated_at: ctx.clock.now() })
    .where("id", "=", userId)
    .where("status", "=", "active")
    .executeTakeFirst();
  if (Number(updated.numUpdatedRows) === 0) throw new AuthNexusError("CONFLICT", { message: "The user is already banned." });
  const change = await bumpAuthEpoch(ctx, actor, { user_id: userId, app_id: appId, reason: REASON.banned });
  const revoked = await ctx.runtimeDb.transaction().execute(async (trx) => {
    const n = await revokeUserSessions(trx, userId, REASON.banned, ctx.clock.now());
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId,
      event: "user.banned",
      detail: {
        user_id: userId,
        reason: reason ? reason : null,
        auth_epoch: change.epoch,
        epoch_change_id: change.id,
        revoked_sessions: n,
      },
    });
    return n;
  });
  const user = await requireUser(ctx.runtimeDb, appId, userId);
  return { ...toUserView(user), revoked_sessions: revoked };
}

/** banned → active (409 CONFLICT when not banned). Sessions ended by the ban stay ended. */
export async function unbanUser(ctx: CpContext, actor: Actor, appId: string, userId: string): Promise<UserView> {
  await requireAppForWrite(ctx, appId);
  await requireUser(ctx.runtimeDb, appId, userId);
  await ctx.runtimeDb.transaction().execute(async (trx) => {
    const updated = await trx
      .updateTable("users")
      .set({ status: "active", updated_at: ctx.clock.now() })
      .where("id", "=", userId)
      .where("status", "=", "banned")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) throw new AuthNexusError("CONFLICT", { message: "The user is not banned." });
    await auditBusinessEvent(trx, ctx, actor, { appId, userId, event: "user.unbanned", detail: { user_id: userId } });
  });
  return toUserView(await requireUser(ctx.runtimeDb, appId, userId));
}

export interface DeletedUser {
  user_id: string;
  deleted_sessions: number;
  removed_devices: number;
  /** The epoch the user was raised to before the deletion (live connections end on every node). */
  auth_epoch: number;
}

/**
 * Bumps the epoch first, so every node ends the user's live connections, then deletes the user,
 * its device bindings, its sessions and its variables in one transaction (with the audit row,
 * which counts the variables; the answer keeps its shape). Card keys the user activated stay
 * (they belong to the batch, not the user).
 */
export async function deleteUser(ctx: CpContext, actor: Actor, appId: string, userId: string): Promise<DeletedUser> {
  await requireAppForWrite(ctx, appId);
  const user = await requireUser(ctx.runtimeDb, appId, userId);
  const change = await bumpAuthEpoch(ctx, actor, { user_id: userId, app_id: appId, reason: REASON.deleted });
  return ctx.runtimeDb.transaction().execute(async (trx) => {
    const sessions = await trx.deleteFrom("sessions").where("user_id", "=", userId).executeTakeFirst();
    const devices = await trx.deleteFrom("device_bindings").where("app_id", "=", appId).where("user_id", "=", userId).executeTakeFirst();
    const variables = await trx.deleteFrom("user_variables").where("user_id", "=", userId).executeTakeFirst();
    const deleted = await trx.deleteFrom("users").where("id", "=", userId).where("app_id", "=", appId).executeTakeFirst();
    // Deleted meanwhile by another call: roll back (nothing else of ours changed since the check).
    if (Number(deleted.numDeletedRows) === 0) throw new AuthNexusError("NOT_FOUND", { message: "User not found." });
    const result: DeletedUser = {
      user_id: userId,
      deleted_sessions: Number(sessions.numDeletedRows),
      removed_devices: Number(devices.numDeletedRows),
      auth_epoch: change.epoch,
    };
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId,
      event: "user.deleted",
      detail: { ...result, deleted_variables: Number(variables.numDeletedRows), username: user.username, epoch_change_id: change.id },
    });
    return result;
  });
}

export interface RemovedDevice {
  user_id: string;
  device_id: string;
  revoked_sessions: number;
  /** The force_logout broadcast for this user on this device. */
  command_id: string;
}

/** Removes one binding (404 when there is none), revokes the user's sessions on that device, and pushes a force_logout. */
export async function removeUserDevice(
  ctx: CpContext,
  actor: Actor,
  appId: string,
  userId: string,
  deviceId: string,
): Promise<RemovedDevice> {
  await requireAppForWrite(ctx, appId);
  await requireUser(ctx.runtimeDb, appId, userId);
  const revoked = await ctx.runtimeDb.transaction().execute(async (trx) => {
    if (!(await removeDeviceBinding(trx, appId, userId, deviceId)))
      throw new AuthNexusError("NOT_FOUND", { message: "The user has no binding to that device." });
    const n = await revokeUserSessions(trx, userId, REASON.deviceRemoved, ctx.clock.now(), deviceId);
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId,
      event: "device.removed",
      detail: { user_id: userId, device_id: deviceId, revoked_sessions: n },
    });
    return n;
  });
  const commandId = await pushForceLogout(ctx, actor, {
    app_id: appId,
    user_id: userId,
    device_id: deviceId,
    reason: REASON.deviceRemoved,
  });
  return { user_id: userId, device_id: deviceId, revoked_sessions: revoked, command_id: commandId };
}

export interface RevokedSessions {
  user_id: string;
  revoked_sessions: number;
  /** The force_logout broadcast for this user. */
  command_id: string;
}

/** Revokes every live session of the user and pushes a force_logout (the epoch stays: the password is still good). */
export async function revokeAllUserSessions(ctx: CpContext, actor: Actor, appId: string, userId: string): Promise<RevokedSessions> {
  await requireAppForWrite(ctx, appId);
  await requireUser(ctx.runtimeDb, appId, userId);
  const revoked = await ctx.runtimeDb.transaction().execute(async (trx) => {
    const n = await revokeUserSessions(trx, userId, REASON.revoked, ctx.clock.now());
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId,
      event: "sessions.revoked",
      detail: { user_id: userId, revoked_sessions: n },
    });
    return n;
  });
  const commandId = await pushForceLogout(ctx, actor, { app_id: appId, user_id: userId, reason: REASON.revoked });
  return { user_id: userId, revoked_sessions: revoked, command_id: commandId };
}
