/**
 * The checkin's answer, cached per CP process: the heads of the three logs a node follows and
 * the latest version of every config item a pull delivers. Each is reloaded when a hint on the
 * CP's event bus says it changed, or at most CHECKIN_CACHE_TTL_MS later (changes committed by
 * another CP process sharing the Control DB). It belongs to the CP context: created with it,
 * closed with it (close() unsubscribes from the bus).
 */

import type { Kysely } from "kysely";
import { CHECKIN_CACHE_TTL_MS } from "../../../shared/config/defaults.js";
import type { ControlSchema } from "../../../shared/db/index.js";
import { latestDeliveredVersions } from "../configs/items.js";
import type { EventBus } from "../event-bus.js";

export interface LogHeads {
  commands: number;
  "auth-epochs": number;
  blacklist: number;
}

/** The newest id of each log a node follows, in one statement. A compacted-away tail still counts (the watermark). */
export async function readLogHeads(db: Kysely<ControlSchema>): Promise<LogHeads> {
  const row = await db
    .selectNoFrom((eb) => [
      eb
        .selectFrom("commands")
        .select((s) => s.fn.max("seq").as("m"))
        .as("commands"),
      eb
        .selectFrom("auth_epoch_changes")
        .select((s) => s.fn.max("id").as("m"))
        .as("epochs"),
      eb
        .selectFrom("server_blacklist_changes")
        .select((s) => s.fn.max("id").as("m"))
        .as("blacklist"),
      eb.selectFrom("delta_retention").select("pruned_through").where("stream", "=", "auth-epochs").as("epochs_pruned"),
      eb.selectFrom("delta_retention").select("pruned_through").where("stream", "=", "blacklist").as("blacklist_pruned"),
    ])
    .executeTakeFirstOrThrow();
  const n = (value: unknown) => Number(value ?? 0);
  return {
    commands: n(row.commands),
    "auth-epochs": Math.max(n(row.epochs), n(row.epochs_pruned)),
    blacklist: Math.max(n(row.blacklist), n(row.blacklist_pruned)),
  };
}

interface Reloadable<T> {
  value: T | null;
  loadedAt: number;
  /** Bumped by every invalidation, so a load that raced with one is not kept. */
  generation: number;
}

export interface CheckinCache {
  heads(now: number): Promise<LogHeads>;
  /** configItemKey(type, scope) → latest version, of every item a pull delivers. */
  latestConfigVersions(now: number): Promise<Map<string, number>>;
  /** node id → the clamped cursors this process last wrote for it. */
  writtenCursors: Map<string, string>;
  /** Stops listening to the event bus. */
  close(): void;
}

/** The key of a config item in latestConfigVersions() ("\u0000" occurs in neither part). */
export const configItemKey = (type: string, scope: string) => `${type}\u0000${scope}`;

function reloading<T>(slot: Reloadable<T>, load: () => Promise<T>): (now: number) => Promise<T> {
  return async (now) => {
    if (slot.value !== null && now - slot.loadedAt < CHECKIN_CACHE_TTL_MS && now >= slot.loadedAt) return slot.value;
    const generation = slot.generation;
    const value = await load();
    if (slot.generation === generation) {
      slot.value = value;
      slot.loadedAt = now;
    }
    return value;
  };
}

export function createCheckinCache(controlDb: Kysely<ControlSchema>, events: EventBus): CheckinCache {
  const heads: Reloadable<LogHeads> = { value: null, loadedAt: 0, generation: 0 };
  const configs: Reloadable<Map<string, number>> = { value: null, loadedAt: 0, generation: 0 };
  const invalidate = (slot: Reloadable<unknown>) => {
    slot.value = null;
    slot.generation += 1;
  };
  const unsubscribe = events.onHint((hint) => {
    // An OCSP refresh moves no log head and no config version: nothing cached goes stale.
    if (hint.event === "ocsp.refresh") return;
    invalidate(hint.event === "config.pending" ? configs : heads);
  });
  return {
    heads: reloading(heads, () => readLogHeads(controlDb)),
    latestConfigVersions: reloading(configs, async () => {
      // Only what a pull would deliver, or a node could never stop being told it is behind.
      const latest = await latestDeliveredVersions(controlDb);
      return new Map(latest.map((l) => [configItemKey(l.type, l.scope), l.version]));
    }),
    writtenCursors: new Map(),
    close: () => {
      unsubscribe();
    },
  };
}
