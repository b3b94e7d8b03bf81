/**
 * End-user sessions in the Runtime DB: the token's SHA-256 (never the token), who it belongs to
 * (a user, or a card key for card-only logins), the device, and the auth epoch at login. Every
 * node of a deployment reads the same rows, so a token works on any of them.
 */
import type { Kysely } from "kysely";
import { precompiled } from "../precompiled.js";
import type { RuntimeSchema, SessionsTable } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

/** Precompiled, like every statement a login runs: building a query cost more than running it. */
const insertSessionRow = precompiled<SessionsTable, never>((db: RuntimeDb, p) =>
  db.insertInto("sessions").values({
    id: p.id,
    token_hash: p.token_hash,
    app_id: p.app_id,
    user_id: p.user_id,
    card_key_id: p.card_key_id,
    device_id: p.device_id,
    auth_epoch: p.auth_epoch,
    node_id: p.node_id,
    ip: p.ip,
    created_at: p.created_at,
    expires_at: p.expires_at,
    last_heartbeat_at: p.last_heartbeat_at,
    revoked_at: p.revoked_at,
    revoke_reason: p.revoke_reason,
  }),
);

export async function insertSession(db: RuntimeDb, session: SessionsTable): Promise<void> {
  await insertSessionRow(db, session);
}

/** A session with what a token login must check about its owner, read in one statement. */
export interface SessionForLogin {
  id: string;
  app_id: string;
  user_id: string | null;
  card_key_id: string | null;
  device_id: string;
  auth_epoch: number;
  created_at: number;
  expires_at: number;
  revoked_at: number | null;
  user_status: string | null;
  user_epoch: number | null;
  username: string | null;
  card_status: string | null;
  card_expires_at: number | null;
  card_device_id: string | null;
}

/** Precompiled: a token login is on the hot path of every reconnect. */
const sessionByToken = precompiled<{ tokenHash: string }, SessionForLogin>((db: RuntimeDb, p) =>
  db
    .selectFrom("sessions as s")
    .leftJoin("users as u", "u.id", "s.user_id")
    .leftJoin("card_keys as c", "c.id", "s.card_key_id")
    .select([
      "s.id",
      "s.app_id",
      "s.user_id",
      "s.card_key_id",
      "s.device_id",
      "s.auth_epoch",
      "s.created_at",
      "s.expires_at",
      "s.revoked_at",
      "u.status as user_status",
      "u.auth_epoch as user_epoch",
      "u.username as username",
      "c.status as card_status",
      "c.expires_at as card_expires_at",
      "c.bound_device_id as card_device_id",
    ])
    .where("s.token_hash", "=", p.tokenHash),
);

export async function findSessionForLogin(db: RuntimeDb, tokenHash: string): Promise<SessionForLogin | undefined> {
  const row = (await sessionByToken(db, { tokenHash })).rows[0];
  return row && { ...row, auth_epoch: Number(row.auth_epoch), user_epoch: row.user_epoch === null ? null : Number(row.user_epoch) };
}

const touchLiveSession = precompiled<{ sessionId: string; now: number }, never>((db: RuntimeDb, p) =>
  db.updateTable("sessions").set({ last_heartbeat_at: p.now }).where("id", "=", p.sessionId).where("revoked_at", "is", null),
);

export async function touchSession(db: RuntimeDb, sessionId: string, now: number): Promise<void> {
  await touchLiveSession(db, { sessionId, now });
}

const resumeLiveSession = precompiled<{ sessionId: string; now: number; nodeId: string; ip: string }, never>((db: RuntimeDb, p) =>
  db
    .updateTable("sessions")
    .set({ last_heartbeat_at: p.now, node_id: p.nodeId, ip: p.ip })
    .where("id", "=", p.sessionId)
    .where("revoked_at", "is", null),
);

/**
 * A token login taking its session over: where it is now served from and when it was last seen.
 * False when the session was revoked meanwhile (a revoke committed since the login read it wins).
 */
export async function resumeSession(db: RuntimeDb, sessionId: string, at: { now: number; nodeId: string; ip: string }): Promise<boolean> {
  const result = await resumeLiveSession(db, { sessionId, ...at });
  return Number(result.numAffectedRows ?? 0) === 1;
}

export async function revokeSession(db: RuntimeDb, sessionId: string, reason: string, now: number): Promise<boolean> {
  const result = await db
    .updateTable("sessions")
    .set({ revoked_at: now, revoke_reason: reason })
    .where("id", "=", sessionId)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Revokes every live session of a user (or of one device of theirs); returns how many. */
export async function revokeUserSessions(db: RuntimeDb, userId: string, reason: string, now: number, deviceId?: string): Promise<number> {
  const result = await db
    .updateTable("sessions")
    .set({ revoked_at: now, revoke_reason: reason })
    .where("user_id", "=", userId)
    .where("revoked_at", "is", null)
    .$if(deviceId !== undefined, (q) => q.where("device_id", "=", deviceId as string))
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/** Revokes every live session opened with a card key (the card was disabled or deleted). */
export async function revokeCardSessions(db: RuntimeDb, cardId: string, reason: string, now: number): Promise<number> {
  const result = await db
    .updateTable("sessions")
    .set({ revoked_at: now, revoke_reason: reason })
    .where("card_key_id", "=", cardId)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}
