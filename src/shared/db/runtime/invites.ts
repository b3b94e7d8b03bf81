/** Invite codes: a registration consumes one use, in the same transaction as the user it creates. */
import type { Kysely } from "kysely";
import type { InviteCodesTable, RuntimeSchema } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

export function findInviteByHash(db: RuntimeDb, appId: string, codeHash: string): Promise<InviteCodesTable | undefined> {
  return db.selectFrom("invite_codes").selectAll().where("code_hash", "=", codeHash).where("app_id", "=", appId).executeTakeFirst();
}

/** Takes one use of the code if it has one left and has not expired; false otherwise (concurrent registrations included). */
export async function consumeInvite(db: RuntimeDb, inviteId: string, now: number): Promise<boolean> {
  const result = await db
    .updateTable("invite_codes")
    .set((eb) => ({ used_count: eb("used_count", "+", 1) }))
    .where("id", "=", inviteId)
    .where((eb) => eb("used_count", "<", eb.ref("max_uses")))
    .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]))
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}
