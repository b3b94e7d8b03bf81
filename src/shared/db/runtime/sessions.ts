/**
 * End-user sessions in the Runtime DB: the token's SHA-256 (never the token), who it belongs to
 * (a user, or a card key for card-only logins), the device, and the auth epoch at login. Every
 * node of a deployment reads the same rows, so a token works on any of them.
 */
import type { Kysely } from "kysely";
import { precompiled } from "../precompiled.js";
import type { RuntimeSchema, SessionsTable } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

export async function insertSession(db: RuntimeDb, session: SessionsTable): Promise<void> {
  await db.insertInto("sessions").values(session).execute();
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

export async function touchSession(db: RuntimeDb, sessionId: string, now: number): Promise<void> {
  await db.updateTable("sessions").set({ last_heartbeat_at: now }).where("id", "=", sessionId).where("revoked_at", "is", null).execute();
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
