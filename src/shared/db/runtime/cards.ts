/**
 * Card keys (licence keys) in the Runtime DB. A card is created "unused"; its first login
 * activates it — expires_at = activation + duration — and binds it to that device. Activation is
 * one conditional update, so when two nodes race on a shared Runtime DB exactly one wins.
 */
import type { Kysely } from "kysely";
import type { CardKeysTable, RuntimeSchema } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

export const CARD_STATUSES = ["unused", "active", "disabled"] as const;
export type CardStatus = (typeof CARD_STATUSES)[number];

export function findCardByHash(db: RuntimeDb, appId: string, codeHash: string): Promise<CardKeysTable | undefined> {
  return db.selectFrom("card_keys").selectAll().where("code_hash", "=", codeHash).where("app_id", "=", appId).executeTakeFirst();
}

export function findCardById(db: RuntimeDb, cardId: string): Promise<CardKeysTable | undefined> {
  return db.selectFrom("card_keys").selectAll().where("id", "=", cardId).executeTakeFirst();
}

/** First use: unused → active and bound to `deviceId`. False when another login activated it first. */
export async function activateCard(
  db: RuntimeDb,
  card: Pick<CardKeysTable, "id" | "duration_seconds">,
  deviceId: string,
  now: number,
): Promise<boolean> {
  const result = await db
    .updateTable("card_keys")
    .set({ status: "active", activated_at: now, expires_at: now + card.duration_seconds * 1000, bound_device_id: deviceId })
    .where("id", "=", card.id)
    .where("status", "=", "unused")
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export async function insertCards(db: RuntimeDb, cards: readonly CardKeysTable[]): Promise<void> {
  for (let i = 0; i < cards.length; i += 200)
    await db
      .insertInto("card_keys")
      .values(cards.slice(i, i + 200))
      .execute();
}
