/**
 * A user's own variables (getvar/setvar), admin side: list them, set one, delete one. Setting
 * goes through the same checks as the SDK (shared/db/runtime/user-variables.ts) under the
 * application's current app_policy, so an admin cannot leave a user with a store the user could
 * not have written. Deleting is always allowed, even with per-user variables switched off, so an
 * admin can clear what is left. The user audit log records the key and the value's size, never
 * the value: it may be large, and it is the user's data.
 */
import { applyUserVariableWrites, USER_VARIABLE_KEY, userVariableLimits } from "../../../shared/db/runtime/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { currentAppPolicy } from "../configs/app-policy.js";
import type { Actor, CpContext } from "../context.js";
import { auditBusinessEvent, type RuntimeDb } from "./common.js";
import { requireUserForRead, requireUserForWrite } from "./users.js";

export interface UserVariableView {
  key: string;
  value: string;
  updated_at: number;
}

export interface SetUserVariableResult extends UserVariableView {
  /** False when an existing value was replaced. */
  created: boolean;
}

export interface DeletedUserVariable {
  user_id: string;
  key: string;
}

/** Code-unit order, the same on both databases (PostgreSQL's `order by` follows the locale). */
function byKey(a: UserVariableView, b: UserVariableView): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** Every variable of the user, sorted by key. */
export async function listUserVariableViews(ctx: CpContext, appId: string, userId: string): Promise<{ items: UserVariableView[] }> {
  await requireUserForRead(ctx, appId, userId);
  const rows = await ctx.runtimeDb
    .selectFrom("user_variables")
    .select(["key", "value", "updated_at"])
    .where("user_id", "=", userId)
    .execute();
  return { items: rows.map((r) => ({ key: r.key, value: r.value, updated_at: r.updated_at })).sort(byKey) };
}

async function variableExists(db: RuntimeDb, userId: string, key: string): Promise<boolean> {
  const row = await db.selectFrom("user_variables").select("key").where("user_id", "=", userId).where("key", "=", key).executeTakeFirst();
  return row !== undefined;
}

/** Creates or replaces one variable under the application's limits (USER_VARIABLE_INVALID, USER_VARIABLE_LIMIT). */
export async function setUserVariable(
  ctx: CpContext,
  actor: Actor,
  target: { appId: string; userId: string; key: string },
  value: string,
): Promise<SetUserVariableResult> {
  const { appId, userId, key } = target;
  await requireUserForWrite(ctx, appId, userId);
  const limits = userVariableLimits(await currentAppPolicy(ctx, appId));
  const now = ctx.clock.now();
  const created = await ctx.runtimeDb.transaction().execute(async (trx) => {
    const existed = await variableExists(trx, userId, key);
    await applyUserVariableWrites(trx, { appId, userId }, [{ key, value }], limits, now);
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId,
      event: "user_variable.set",
      detail: { user_id: userId, key, bytes: Buffer.byteLength(value, "utf8"), created: !existed },
    });
    return !existed;
  });
  return { key, value, updated_at: now, created };
}

/** Removes one variable; 404 when the user has none by that key. */
export async function deleteUserVariable(
  ctx: CpContext,
  actor: Actor,
  target: { appId: string; userId: string; key: string },
): Promise<DeletedUserVariable> {
  const { appId, userId, key } = target;
  await requireUserForWrite(ctx, appId, userId);
  // A key no write could have stored cannot be there.
  if (!USER_VARIABLE_KEY.test(key)) throw noSuchVariable();
  await ctx.runtimeDb.transaction().execute(async (trx) => {
    const deleted = await trx.deleteFrom("user_variables").where("user_id", "=", userId).where("key", "=", key).executeTakeFirst();
    if (Number(deleted.numDeletedRows) === 0) throw noSuchVariable();
    await auditBusinessEvent(trx, ctx, actor, { appId, userId, event: "user_variable.deleted", detail: { user_id: userId, key } });
  });
  return { user_id: userId, key };
}

function noSuchVariable(): AuthNexusError {
  return new AuthNexusError("NOT_FOUND", { message: "The user has no variable by that key." });
}
