/**
 * Device bindings: the devices a user has logged in from, capped per application by
 * app_policy.max_devices_per_user. A login from a bound device refreshes it; from a new one it
 * binds it only while the user is under the cap.
 */
import { type Kysely, sql } from "kysely";
import { precompiled } from "../precompiled.js";
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

type Binding = { appId: string; userId: string; deviceId: string };

// Precompiled: a password login runs the first, a first login from a device the other two.
const refreshBinding = precompiled<Binding & { now: number }, never>((db: RuntimeDb, p) =>
  db
    .updateTable("device_bindings")
    .set({ last_seen_at: p.now })
    .where("app_id", "=", p.appId)
    .where("user_id", "=", p.userId)
    .where("device_id", "=", p.deviceId),
);
const countBindings = precompiled<{ appId: string; userId: string }, { n: number }>((db: RuntimeDb, p) =>
  db.selectFrom("device_bindings").select(sql<number>`count(*)`.as("n")).where("app_id", "=", p.appId).where("user_id", "=", p.userId),
);
const insertBinding = precompiled<Binding & { now: number }, never>((db: RuntimeDb, p) =>
  db
    .insertInto("device_bindings")
    .values({ app_id: p.appId, user_id: p.userId, device_id: p.deviceId, created_at: p.now, last_seen_at: p.now })
    .onConflict((oc) => oc.columns(["app_id", "user_id", "device_id"]).doUpdateSet({ last_seen_at: p.now })),
);

/**
 * Refreshes the binding of a known device, or binds a new one when the user has fewer than
 * `maxDevices`. False when the cap refuses the device. Run it inside the login's transaction
 * (`trx`), so the check, the binding and the session it admits commit together.
 */
export async function bindDevice(trx: RuntimeDb, binding: Binding, maxDevices: number, now: number): Promise<boolean> {
  const refreshed = await refreshBinding(trx, { ...binding, now });
  if (Number(refreshed.numAffectedRows ?? 0) > 0) return true;
  const count = (await countBindings(trx, { appId: binding.appId, userId: binding.userId })).rows[0];
  if (Number(count?.n ?? 0) >= maxDevices) return false;
  await insertBinding(trx, { ...binding, now });
  return true;
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
