/**
 * Versioned config items, the payload of Channel 1's config delivery (docs/node-api.md,
 * "Configs"; the model follows Envoy's xDS). An item is (type, scope); every change appends an
 * immutable row to config_versions with the next version (1, 2, 3… with no gaps). Per node and
 * item, node_config_states records what the CP sent, what the node acked as applied and what it
 * rejected, from which the admin view derives SYNCED / ERROR / PENDING / NOT_SENT.
 *
 * Items of applications in the recycle bin (or purged) are not delivered, and the list views
 * leave them out for the same reason; their history stays readable per item.
 *
 * This file holds what the admin side (admin-write.ts, admin-read.ts) and the node channel
 * (node-channel.ts) share: item keys, the version view and the SQL fragments for "latest".
 */
import { type Kysely, type SqlBool, sql } from "kysely";
import type { ConfigVersionsTable, ControlSchema } from "../../../shared/db/control-schema.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import {
  APP_CONFIG_TYPES,
  appIdOfScope,
  appScope,
  CONFIG_TYPES,
  type ConfigType,
  GLOBAL_CONFIG_TYPES,
  GLOBAL_SCOPE,
  isAppConfigType,
  isConfigType,
} from "../../../shared/node-protocol/index.js";

export const CONFIG_STATES = ["SYNCED", "ERROR", "PENDING", "NOT_SENT"] as const;
export type ConfigState = (typeof CONFIG_STATES)[number];

/** Rows per multi-row insert: well under SQLite's bound-parameter limit. */
export const INSERT_CHUNK = 200;

export type Db = Kysely<ControlSchema>;

/** One config item, resolved from an admin path. */
export interface ConfigItemKey {
  type: ConfigType;
  scope: string;
  appId: string | null;
}

/**
 * The item an admin path names. Unknown type → 404 NOT_FOUND (the path names nothing); a known
 * type under the wrong kind of path (an app type globally, a global type per application) →
 * 400 VALIDATION_FAILED naming the right path.
 */
export function resolveConfigItem(type: string, appId: string | null): ConfigItemKey {
  if (!isConfigType(type)) {
    throw new AuthNexusError("NOT_FOUND", { message: `No such config type. Known types: ${CONFIG_TYPES.join(", ")}.` });
  }
  if (appId === null && isAppConfigType(type)) {
    throw new AuthNexusError("VALIDATION_FAILED", {
      message: `${type} is set per application: use /applications/:app_id/configs/${type}. Global types: ${GLOBAL_CONFIG_TYPES.join(", ")}.`,
    });
  }
  if (appId !== null && !isAppConfigType(type)) {
    throw new AuthNexusError("VALIDATION_FAILED", {
      message: `${type} is a global type: use /configs/${type}. Per-application types: ${APP_CONFIG_TYPES.join(", ")}.`,
    });
  }
  return { type, scope: appId === null ? GLOBAL_SCOPE : appScope(appId), appId };
}

/** Map key and advisory-lock key of an item ("|" occurs in neither a type nor a scope). */
export const keyOf = (item: { type: string; scope: string }) => `${item.type}|${item.scope}`;

export interface ConfigVersionView {
  type: ConfigType;
  scope: string;
  app_id: string | null;
  version: number;
  content: unknown;
  created_at: number;
  created_by: string | null;
}

export type VersionRow = Omit<ConfigVersionsTable, "id">;

export function toVersionView(row: VersionRow): ConfigVersionView {
  return {
    type: row.config_type as ConfigType,
    scope: row.scope,
    app_id: appIdOfScope(row.scope) ?? null,
    version: row.version,
    content: JSON.parse(row.content) as unknown,
    created_at: row.created_at,
    created_by: row.created_by,
  };
}

export async function latestVersionRow(db: Db, item: { type: string; scope: string }): Promise<VersionRow | undefined> {
  return db
    .selectFrom("config_versions")
    .select(["config_type", "scope", "version", "content", "created_at", "created_by"])
    .where("config_type", "=", item.type)
    .where("scope", "=", item.scope)
    .orderBy("version", "desc")
    .limit(1)
    .executeTakeFirst();
}

/** The latest version of every item, as the CTE `latest`. */
export function withLatest(db: Db) {
  return db.with("latest", (q) =>
    q
      .selectFrom("config_versions")
      .select(["config_type", "scope"])
      .select((eb) => eb.fn.max("version").as("version"))
      .groupBy(["config_type", "scope"]),
  );
}

/** Global items, and items of applications that exist and are not in the recycle bin. */
export const deliveredScope = sql<SqlBool>`(l.scope = ${GLOBAL_SCOPE} or exists (select 1 from applications a where a.id = substr(l.scope, 5) and a.deleted_at is null))`;

export const globalFirst = sql`case when l.scope = ${GLOBAL_SCOPE} then 0 else 1 end`;

/** The state rule (docs/admin-api.md, "Configs"), in order: SYNCED, ERROR, PENDING, else NOT_SENT (no state row → NOT_SENT). */
export const stateOf = sql<ConfigState>`case
  when s.applied_version = l.version then 'SYNCED'
  when s.error_version = l.version then 'ERROR'
  when s.sent_version = l.version then 'PENDING'
  else 'NOT_SENT' end`;

/** The latest version of every item a pull delivers: global items and those of live applications. */
export async function latestDeliveredVersions(db: Db): Promise<Array<{ type: string; scope: string; version: number }>> {
  const rows = await withLatest(db)
    .selectFrom("latest as l")
    .where(deliveredScope)
    .select(["l.config_type", "l.scope", "l.version"])
    .execute();
  return rows.map((r) => ({ type: r.config_type, scope: r.scope, version: Number(r.version) }));
}

export function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
