/**
 * Device bindings: the devices a user has logged in from, capped per application by
 * app_policy.max_devices_per_user. A login from a bound device refreshes it; from a new one it
 * binds it only while the user is under the cap.
 */
import { type Kysely, sql } from "kysely";
import type { DeviceBindingsTable, RuntimeSchema } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

export function listDeviceBindings(db: RuntimeDb, appId: string, userId: string): Promise<DeviceBindingsTable[]> {
  return db
    .selectFrom("device_bindings")
    .selectAll()
    .where("app_id", "=", appId)
    .where("user_id", "=", userId)
    .orderBy("last_seen_at", "desc")
    .execute();
}

/**
 * Refreshes the binding of a known device, or binds a new one when the user has fewer than
 * `maxDevices`. False when the cap refuses the device. Checked and written in one transaction.
 */
export async function bindDevice(
  db: RuntimeDb,
  binding: { appId: string; userId: string; deviceId: string },
  maxDevices: number,
  now: number,
): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const refreshed = await trx
      .updateTable("device_bindings")
      .set({ last_seen_at: now })
      .where("app_id", "=", binding.appId)
      .where("user_id", "=", binding.userId)
      .where("device_id", "=", binding.deviceId)
      .executeTakeFirst();
    if (Number(refreshed.numUpdatedRows) > 0) return true;
    const count = await trx
      .selectFrom("device_bindings")
      .select(sql<number>`count(*)`.as("n"))
      .where("app_id", "=", binding.appId)
      .where("user_id", "=", binding.userId)
      .executeTakeFirstOrThrow();
    if (Number(count.n) >= maxDevices) return false;
    await trx
      .insertInto("device_bindings")
      .values({ app_id: binding.appId, user_id: binding.userId, device_id: binding.deviceId, created_at: now, last_seen_at: now })
      .onConflict((oc) => oc.columns(["app_id", "user_id", "device_id"]).doUpdateSet({ last_seen_at: now }))
      .execute();
    return true;
  });
}

export async function removeDeviceBinding(db: RuntimeDb, appId: string, userId: string, deviceId: string): Promise<boolean> {
  const result = await db
    .deleteFrom("device_bindings")
    .where("app_id", "=", appId)
    .where("user_id", "=", userId)
    .where("device_id", "=", deviceId)
    .executeTakeFirst();
  return Number(result.numDeletedRows) > 0;
}
