/** Per-user auth epochs, admin side: a bump invalidates every older session of the user on every node. */

import { findUserEpoch, raiseUserAuthEpoch } from "../../../shared/db/runtime/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { lockLog } from "./change-log.js";

export interface EpochBump {
  user_id: string;
  app_id?: string | undefined;
  reason?: string | null | undefined;
}

export interface AuthEpochChangeView {
  id: number;
  user_id: string;
  app_id: string | null;
  epoch: number;
  reason: string | null;
  created_at: number;
  created_by: string | null;
  /** Whether the Runtime DB has this user (its users.auth_epoch was raised too). */
  runtime_user_updated?: boolean;
}

/**
 * Bumps one user's epoch: new = max(the newest epoch in the log, the Runtime DB's
 * users.auth_epoch when the user exists there) + 1. The Runtime DB row is raised inside the log
 * transaction, so a failure there appends nothing; a commit failure after it only leaves the
 * Runtime DB ahead, which the next bump absorbs (epochs only need to grow).
 */
export async function bumpAuthEpoch(ctx: CpContext, actor: Actor, input: EpochBump): Promise<AuthEpochChangeView> {
  const user = await findUserEpoch(ctx.runtimeDb, input.user_id);
  if (input.app_id !== undefined) {
    const app = await ctx.controlDb.selectFrom("applications").select("id").where("id", "=", input.app_id).executeTakeFirst();
    if (!app) throw new AuthNexusError("NOT_FOUND", { message: "Application not found." });
    if (user && user.app_id !== input.app_id)
      throw new AuthNexusError("VALIDATION_FAILED", { message: "app_id: the user belongs to another application" });
  }
  const now = ctx.clock.now();
  const change = await ctx.controlDb.transaction().execute(async (trx) => {
    await lockLog(trx, "auth-epochs");
    const logged = await trx
      .selectFrom("auth_epoch_changes")
      .select((eb) => eb.fn.max("epoch").as("epoch"))
      .where("user_id", "=", input.user_id)
      .executeTakeFirst();
    const epoch = Math.max(Number(logged?.epoch ?? 0), Number(user?.auth_epoch ?? 0)) + 1;
    const row = {
      app_id: input.app_id ?? null,
      user_id: input.user_id,
      epoch,
      reason: input.reason ? input.reason : null,
      created_at: now,
      created_by: actor.agentId,
    };
    const inserted = await trx.insertInto("auth_epoch_changes").values(row).returning("id").executeTakeFirstOrThrow();
    if (user) await raiseUserAuthEpoch(ctx.runtimeDb, user.id, epoch, now);
    return { id: Number(inserted.id), ...row };
  });
  ctx.events.publish("epoch.bumped", null);
  ctx.log.category("Security").info("epoch.bumped", {
    change_id: change.id,
    user_id: change.user_id,
    app_id: change.app_id,
    epoch: change.epoch,
    agent_id: actor.agentId,
  });
  return { ...change, runtime_user_updated: user !== undefined };
}

export interface EpochFilter {
  userId?: string | undefined;
  appId?: string | undefined;
}

export async function listAuthEpochChanges(ctx: CpContext, filter: EpochFilter, request: PageRequest): Promise<Page<AuthEpochChangeView>> {
  const base = ctx.controlDb.selectFrom("auth_epoch_changes").$call((q) => {
    let narrowed = q;
    if (filter.userId) narrowed = narrowed.where("user_id", "=", filter.userId);
    if (filter.appId) narrowed = narrowed.where("app_id", "=", filter.appId);
    return narrowed;
  });
  return paginate(
    base,
    request,
    (q) => q.selectAll().orderBy("id", "desc"),
    (r) => ({ ...r, id: Number(r.id) }),
  );
}
