/**
 * Runtime DB queries on end users that both roles run: the CP (business administration, auth
 * epoch bumps) and the node (registration, logins). Written once here so both agree on what a
 * user's epoch is and how it moves (only ever forward).
 */
import type { Kysely } from "kysely";
import { precompiled } from "../precompiled.js";
import type { RuntimeSchema, UsersTable } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

/** Stored in users.status. A banned user cannot log in, and a ban ends every session (epoch bump). */
export const USER_STATUSES = ["active", "banned"] as const;
export type UserStatus = (typeof USER_STATUSES)[number];

export interface UserEpoch {
  id: string;
  app_id: string;
  auth_epoch: number;
}

/** The user's application and current auth epoch, or undefined when the Runtime DB has no such user. */
export function findUserEpoch(db: RuntimeDb, userId: string): Promise<UserEpoch | undefined> {
  return db.selectFrom("users").select(["id", "app_id", "auth_epoch"]).where("id", "=", userId).executeTakeFirst();
}

/** Raises the user's auth epoch to `epoch` (never lowers it); true when the row changed. */
export async function raiseUserAuthEpoch(db: RuntimeDb, userId: string, epoch: number, now: number): Promise<boolean> {
  const result = await db
    .updateTable("users")
    .set({ auth_epoch: epoch, updated_at: now })
    .where("id", "=", userId)
    .where("auth_epoch", "<", epoch)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Precompiled: every password login starts here. */
const userByName = precompiled<{ appId: string; usernameNormalized: string }, UsersTable>((db: RuntimeDb, p) =>
  db.selectFrom("users").selectAll().where("app_id", "=", p.appId).where("username_normalized", "=", p.usernameNormalized),
);

export async function findUserByName(db: RuntimeDb, appId: string, usernameNormalized: string): Promise<UsersTable | undefined> {
  return (await userByName(db, { appId, usernameNormalized })).rows[0];
}

export function findUserById(db: RuntimeDb, userId: string): Promise<UsersTable | undefined> {
  return db.selectFrom("users").selectAll().where("id", "=", userId).executeTakeFirst();
}

/** Inserts a user; a taken (app, normalised name) is a unique violation the caller turns into USERNAME_TAKEN / CONFLICT. */
export async function insertUser(db: RuntimeDb, user: UsersTable): Promise<void> {
  await db.insertInto("users").values(user).execute();
}

const setLastLogin = precompiled<{ userId: string; now: number }, never>((db: RuntimeDb, p) =>
  db.updateTable("users").set({ last_login_at: p.now }).where("id", "=", p.userId),
);

export async function recordUserLogin(db: RuntimeDb, userId: string, now: number): Promise<void> {
  await setLastLogin(db, { userId, now });
}
