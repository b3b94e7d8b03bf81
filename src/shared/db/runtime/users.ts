/**
 * Runtime DB queries on end users that both roles run: the CP (business administration, auth
 * epoch bumps) and the node (auth flows). Written once here so both agree on what a user's epoch
 * is and how it moves (only ever forward).
 */
import type { Kysely } from "kysely";
import type { RuntimeSchema } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

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
