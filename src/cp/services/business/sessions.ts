/**
 * End-user sessions of one application, admin side: list them (all, online, or one user's) and
 * kick one — revoked in the Runtime DB, and a force_logout for that session pushed to every node
 * so the connection holding it ends now. Never shows a token or its hash.
 */

import { revokeSession } from "../../../shared/db/runtime/index.js";
import type { SessionsTable } from "../../../shared/db/runtime-schema.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { auditBusinessEvent, pushForceLogout, requireAppForRead, requireAppForWrite } from "./common.js";

/** A live session is online when its last heartbeat is at most this old (ms). */
export const SESSION_ONLINE_WINDOW_MS = 2 * 60_000;

const KICK_REASON = "kicked by admin";

/** "revoked", "expired", "online" (live, heartbeat within SESSION_ONLINE_WINDOW_MS) or "offline" (live, quiet). */
export type SessionState = "online" | "offline" | "expired" | "revoked";

/** A session as the API shows it: never the token hash. */
export interface SessionView {
  id: string;
  app_id: string;
  user_id: string | null;
  card_key_id: string | null;
  device_id: string;
  auth_epoch: number;
  node_id: string | null;
  ip: string | null;
  created_at: number;
  expires_at: number;
  last_heartbeat_at: number;
  revoked_at: number | null;
  revoke_reason: string | null;
  state: SessionState;
}

const SESSION_COLUMNS = [
  "id",
  "app_id",
  "user_id",
  "card_key_id",
  "device_id",
  "auth_epoch",
  "node_id",
  "ip",
  "created_at",
  "expires_at",
  "last_heartbeat_at",
  "revoked_at",
  "revoke_reason",
] as const;

type SessionRow = Pick<SessionsTable, (typeof SESSION_COLUMNS)[number]>;

function sessionState(row: SessionRow, now: number): SessionState {
  if (row.revoked_at !== null) return "revoked";
  if (row.expires_at <= now) return "expired";
  return row.last_heartbeat_at >= now - SESSION_ONLINE_WINDOW_MS ? "online" : "offline";
}

function toSessionView(row: SessionRow, now: number): SessionView {
  return {
    id: row.id,
    app_id: row.app_id,
    user_id: row.user_id,
    card_key_id: row.card_key_id,
    device_id: row.device_id,
    auth_epoch: Number(row.auth_epoch),
    node_id: row.node_id,
    ip: row.ip,
    created_at: row.created_at,
    expires_at: row.expires_at,
    last_heartbeat_at: row.last_heartbeat_at,
    revoked_at: row.revoked_at,
    revoke_reason: row.revoke_reason,
    state: sessionState(row, now),
  };
}

export interface SessionFilter {
  userId?: string | undefined;
  /** true: online only; false: everything that is not online; absent: every session. */
  online?: boolean | undefined;
}

/** Newest first. The caller checks the application (and the user, for a user's list). */
export async function listSessions(ctx: CpContext, appId: string, filter: SessionFilter, request: PageRequest): Promise<Page<SessionView>> {
  await requireAppForRead(ctx, appId);
  const now = ctx.clock.now();
  const since = now - SESSION_ONLINE_WINDOW_MS;
  const base = ctx.runtimeDb
    .selectFrom("sessions")
    .where("app_id", "=", appId)
    .$if(filter.userId !== undefined, (q) => q.where("user_id", "=", filter.userId as string))
    .$if(filter.online === true, (q) =>
      q.where("revoked_at", "is", null).where("expires_at", ">", now).where("last_heartbeat_at", ">=", since),
    )
    .$if(filter.online === false, (q) =>
      q.where((eb) => eb.or([eb("revoked_at", "is not", null), eb("expires_at", "<=", now), eb("last_heartbeat_at", "<", since)])),
    );
  return paginate(
    base,
    request,
    (q) => q.select(SESSION_COLUMNS).orderBy("created_at", "desc").orderBy("id", "desc"),
    (row) => toSessionView(row, now),
  );
}

export interface KickedSession {
  session_id: string;
  user_id: string | null;
  /** The force_logout broadcast for this session. */
  command_id: string;
}

/** Revokes one session of this application (409 CONFLICT when it already was) and pushes a force_logout for it. */
export async function kickSession(ctx: CpContext, actor: Actor, appId: string, sessionId: string): Promise<KickedSession> {
  await requireAppForWrite(ctx, appId);
  const session = await ctx.runtimeDb
    .selectFrom("sessions")
    .select(SESSION_COLUMNS)
    .where("id", "=", sessionId)
    .where("app_id", "=", appId)
    .executeTakeFirst();
  if (!session) throw new AuthNexusError("NOT_FOUND", { message: "Session not found." });
  await ctx.runtimeDb.transaction().execute(async (trx) => {
    if (!(await revokeSession(trx, sessionId, KICK_REASON, ctx.clock.now())))
      throw new AuthNexusError("CONFLICT", { message: "The session has already been revoked." });
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId: session.user_id,
      event: "session.kicked",
      detail: { session_id: sessionId, card_key_id: session.card_key_id, device_id: session.device_id },
    });
  });
  const commandId = await pushForceLogout(ctx, actor, { app_id: appId, session_id: sessionId, reason: KICK_REASON });
  return { session_id: sessionId, user_id: session.user_id, command_id: commandId };
}
