/** Admin writes of config items: a new version per change, then a config.pending hint to every node. */
import { sql } from "kysely";
import { dialectOf, isUniqueViolation } from "../../../shared/db/index.js";
import { fieldInvalid } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import { canonicalJson } from "../../../shared/json/index.js";
import { MAX_CONFIG_CONTENT_BYTES, parseConfigContent } from "../../../shared/node-protocol/index.js";
import { requireLiveApplication } from "../applications/lookup.js";
import type { Actor, CpContext } from "../context.js";
import { type ConfigItemKey, type ConfigVersionView, type Db, keyOf, latestVersionRow, toVersionView, type VersionRow } from "./items.js";

/** Attempts at appending a version when a concurrent writer took the same number first. */
const MAX_VERSION_ATTEMPTS = 5;
/** PostgreSQL advisory lock class (first key of the two-int form) serialising writers of one item. */
const CONFIG_ITEM_LOCK_CLASS = 0x41_4e_43_46; // "ANCF"

/**
 * Sets an item's content: validated and defaulted by the type's schema, stored as canonical
 * JSON (sorted keys) so "identical to the latest" is a string comparison. Identical content is
 * a no-op that returns the latest version (no new version, no hint). Otherwise the next version
 * is appended and, after commit, every node is hinted with config.pending.
 */
export async function setConfig(
  ctx: CpContext,
  actor: Actor,
  item: ConfigItemKey,
  content: unknown,
): Promise<ConfigVersionView & { changed: boolean }> {
  if (item.appId !== null) await requireLiveApplication(ctx.controlDb, item.appId);
  const json = contentJson(item, content);
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await ctx.controlDb.transaction().execute((trx) => appendVersion(trx, ctx.clock.now(), actor, item, json));
      if (result.changed) {
        ctx.log
          .category("CP Agent")
          .info("config.version_created", { type: item.type, scope: item.scope, version: result.version, agent_id: actor.agentId });
        ctx.events.publish("config.pending", null);
      }
      return result;
    } catch (error) {
      // The unique (type, scope, version) constraint is the last word on numbering: a writer
      // that lost the race re-reads the latest version and tries the next number.
      if (isUniqueViolation(error) && attempt < MAX_VERSION_ATTEMPTS) continue;
      throw error;
    }
  }
}

/**
 * setConfig inside the caller's transaction, for a change that must commit together with other
 * writes (a CA rotation's trust bundles and its phase). No retry and no hint: on PostgreSQL the
 * item's advisory lock serialises writers, SQLite has one writer; the caller publishes
 * config.pending after its commit.
 */
export async function appendConfigVersionIn(
  trx: Db,
  now: number,
  actor: Actor,
  item: ConfigItemKey,
  content: unknown,
): Promise<ConfigVersionView & { changed: boolean }> {
  return appendVersion(trx, now, actor, item, contentJson(item, content));
}

/** Validated and defaulted by the type's schema, as canonical JSON (sorted keys). */
function contentJson(item: ConfigItemKey, content: unknown): string {
  const parsed = parseConfigContent(item.type, content);
  if (!parsed.ok) throw fieldInvalid("content", parsed.reason);
  const json = canonicalJson(parsed.value);
  if (Buffer.byteLength(json) > MAX_CONFIG_CONTENT_BYTES)
    throw fieldInvalid("content", `must be at most ${MAX_CONFIG_CONTENT_BYTES} bytes serialized`);
  return json;
}

async function appendVersion(
  trx: Db,
  now: number,
  actor: Actor,
  item: ConfigItemKey,
  json: string,
): Promise<ConfigVersionView & { changed: boolean }> {
  if (dialectOf(trx) === "postgres") {
    // Writers of one item queue here instead of colliding on the unique constraint.
    await sql`select pg_advisory_xact_lock(${sql.lit(CONFIG_ITEM_LOCK_CLASS)}, hashtext(${keyOf(item)}))`.execute(trx);
  }
  if (item.appId !== null) await requireLiveApplication(trx, item.appId);
  const latest = await latestVersionRow(trx, item);
  if (latest && latest.content === json) return { ...toVersionView(latest), changed: false };
  const row: VersionRow = {
    config_type: item.type,
    scope: item.scope,
    version: (latest?.version ?? 0) + 1,
    content: json,
    created_at: now,
    created_by: actor.agentId,
  };
  await trx
    .insertInto("config_versions")
    .values({ id: newId("cfv"), ...row })
    .execute();
  return { ...toVersionView(row), changed: true };
}
