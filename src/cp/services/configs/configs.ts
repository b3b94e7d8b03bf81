/**
 * Versioned config items, the payload of Channel 1's config delivery (PRODUCT §5, after Envoy
 * xDS). An item is (type, scope); every change appends an immutable row to config_versions with
 * the next version (1, 2, 3… with no gaps). Per node and item, node_config_states records what
 * the CP sent, what the node acked as applied and what it rejected, from which the admin view
 * derives SYNCED / ERROR / PENDING / NOT_SENT.
 *
 * Items of applications in the recycle bin (or purged) are not delivered, and the two list
 * views leave them out for the same reason; their history stays readable per item.
 */
import { type Kysely, type SqlBool, sql } from "kysely";
import type { ConfigVersionsTable, ControlSchema } from "../../../shared/db/control-schema.js";
import { dialectOf, isUniqueViolation } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import {
  APP_CONFIG_TYPES,
  appIdOfScope,
  appScope,
  CONFIG_TYPES,
  type ConfigError,
  type ConfigItem,
  type ConfigsPullResponse,
  type ConfigType,
  type ConfigVersionRef,
  GLOBAL_CONFIG_TYPES,
  GLOBAL_SCOPE,
  isAppConfigType,
  isConfigType,
  MAX_CONFIG_CONTENT_BYTES,
  parseConfigContent,
  scopeFitsType,
} from "../../../shared/node-protocol/index.js";
import { cloudFunctionManifest } from "../applications/cloud-functions.js";
import type { Actor, CpContext } from "../context.js";
import type { CallingNode } from "../nodes/identity.js";
import { type Page, type PageRequest, pageOffset, toPage } from "../pagination.js";

export const CONFIG_STATES = ["SYNCED", "ERROR", "PENDING", "NOT_SENT"] as const;
export type ConfigState = (typeof CONFIG_STATES)[number];

/** Attempts at appending a version when a concurrent writer took the same number first. */
const MAX_VERSION_ATTEMPTS = 5;
/** PostgreSQL advisory lock class (first key of the two-int form) serialising writers of one item. */
const CONFIG_ITEM_LOCK_CLASS = 0x41_4e_43_46; // "ANCF"
/** Rows per multi-row insert: well under SQLite's bound-parameter limit. */
const INSERT_CHUNK = 200;

type Db = Kysely<ControlSchema>;

// ---- items ---------------------------------------------------------------------------------

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
const keyOf = (item: { type: string; scope: string }) => `${item.type}|${item.scope}`;

// ---- admin: write --------------------------------------------------------------------------

export interface ConfigVersionView {
  type: ConfigType;
  scope: string;
  app_id: string | null;
  version: number;
  content: unknown;
  created_at: number;
  created_by: string | null;
}

type VersionRow = Omit<ConfigVersionsTable, "id">;

function toVersionView(row: VersionRow): ConfigVersionView {
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
  const parsed = parseConfigContent(item.type, content);
  if (!parsed.ok) throw invalidField("content", parsed.reason);
  const json = canonicalJson(parsed.value);
  if (Buffer.byteLength(json) > MAX_CONFIG_CONTENT_BYTES)
    throw invalidField("content", `must be at most ${MAX_CONFIG_CONTENT_BYTES} bytes serialized`);

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

async function latestVersionRow(db: Db, item: { type: string; scope: string }): Promise<VersionRow | undefined> {
  return db
    .selectFrom("config_versions")
    .select(["config_type", "scope", "version", "content", "created_at", "created_by"])
    .where("config_type", "=", item.type)
    .where("scope", "=", item.scope)
    .orderBy("version", "desc")
    .limit(1)
    .executeTakeFirst();
}

// ---- admin: read ---------------------------------------------------------------------------

/** The latest version of one item; 404 while it has none (nodes then run the type's defaults). */
export async function getLatestConfig(ctx: CpContext, item: ConfigItemKey): Promise<ConfigVersionView> {
  if (item.appId !== null) await requireApplication(ctx.controlDb, item.appId);
  const row = await latestVersionRow(ctx.controlDb, item);
  if (!row) throw new AuthNexusError("NOT_FOUND", { message: `${item.type} has no version yet for this scope; nodes run its defaults.` });
  return toVersionView(row);
}

/** An item's history, newest first. An item with no version is an empty page. */
export async function listConfigVersions(ctx: CpContext, item: ConfigItemKey, request: PageRequest): Promise<Page<ConfigVersionView>> {
  if (item.appId !== null) await requireApplication(ctx.controlDb, item.appId);
  const base = ctx.controlDb.selectFrom("config_versions").where("config_type", "=", item.type).where("scope", "=", item.scope);
  const [rows, count] = await Promise.all([
    base
      .select(["config_type", "scope", "version", "content", "created_at", "created_by"])
      .orderBy("version", "desc")
      .limit(request.pageSize)
      .offset(pageOffset(request))
      .execute(),
    base.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
  ]);
  return toPage(rows.map(toVersionView), request, Number(count.n));
}

export interface StateCounts {
  synced: number;
  error: number;
  pending: number;
  not_sent: number;
}

export interface ConfigItemSummary {
  type: ConfigType;
  scope: string;
  app_id: string | null;
  version: number;
  created_at: number;
  created_by: string | null;
  /** Over every node the CP knows (any status). */
  nodes: StateCounts & { total: number };
}

export interface ConfigItemFilter {
  type?: ConfigType | undefined;
  appId?: string | undefined;
}

/** Every delivered item (global, or of a live application) at its latest version, with per-node state counts. */
export async function listConfigItems(ctx: CpContext, filter: ConfigItemFilter, request: PageRequest): Promise<Page<ConfigItemSummary>> {
  const db = ctx.controlDb;
  const base = withLatest(db)
    .selectFrom("latest as l")
    .where(deliveredScope)
    .$if(filter.type !== undefined, (q) => q.where("l.config_type", "=", filter.type as string))
    .$if(filter.appId !== undefined, (q) => q.where("l.scope", "=", appScope(filter.appId as string)));
  const stateSum = (state: ConfigState) => sql<number>`sum(case when ${stateOf} = ${state} then 1 else 0 end)`;
  const [rows, count, nodes] = await Promise.all([
    base
      .innerJoin("config_versions as cv", (j) =>
        j.onRef("cv.config_type", "=", "l.config_type").onRef("cv.scope", "=", "l.scope").onRef("cv.version", "=", "l.version"),
      )
      .leftJoin("node_config_states as s", (j) => j.onRef("s.config_type", "=", "l.config_type").onRef("s.scope", "=", "l.scope"))
      .select(["l.config_type", "l.scope", "l.version", "cv.created_at", "cv.created_by"])
      .select([stateSum("SYNCED").as("synced"), stateSum("ERROR").as("error"), stateSum("PENDING").as("pending")])
      .groupBy(["l.config_type", "l.scope", "l.version", "cv.created_at", "cv.created_by"])
      .orderBy(globalFirst)
      .orderBy("l.scope")
      .orderBy("l.config_type")
      .limit(request.pageSize)
      .offset(pageOffset(request))
      .execute(),
    base.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
    db
      .selectFrom("nodes")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirstOrThrow(),
  ]);
  const total = Number(nodes.n);
  const items = rows.map((r): ConfigItemSummary => {
    const synced = Number(r.synced ?? 0);
    const error = Number(r.error ?? 0);
    const pending = Number(r.pending ?? 0);
    return {
      type: r.config_type as ConfigType,
      scope: r.scope,
      app_id: appIdOfScope(r.scope) ?? null,
      version: Number(r.version),
      created_at: r.created_at,
      created_by: r.created_by,
      nodes: { total, synced, error, pending, not_sent: Math.max(0, total - synced - error - pending) },
    };
  });
  return toPage(items, request, Number(count.n));
}

export interface NodeConfigStateView {
  type: ConfigType;
  scope: string;
  app_id: string | null;
  latest_version: number;
  state: ConfigState;
  sent_version: number | null;
  sent_at: number | null;
  applied_version: number | null;
  applied_at: number | null;
  error_version: number | null;
  error_at: number | null;
  error_message: string | null;
}

export interface NodeConfigStates extends Page<NodeConfigStateView> {
  node_id: string;
  /** Over every delivered item, whatever the page or filter. */
  summary: StateCounts;
}

/** Per delivered item (one that has a version), this node's state, versions and last error. */
export async function listNodeConfigStates(
  ctx: CpContext,
  nodeId: string,
  filter: { state?: ConfigState | undefined },
  request: PageRequest,
): Promise<NodeConfigStates> {
  const db = ctx.controlDb;
  const node = await db.selectFrom("nodes").select("id").where("id", "=", nodeId).executeTakeFirst();
  if (!node) throw new AuthNexusError("NOT_FOUND", { message: "Node not found." });
  const joined = withLatest(db)
    .selectFrom("latest as l")
    .leftJoin("node_config_states as s", (j) =>
      j.onRef("s.config_type", "=", "l.config_type").onRef("s.scope", "=", "l.scope").on("s.node_id", "=", nodeId),
    )
    .where(deliveredScope);
  const filtered = joined.$if(filter.state !== undefined, (q) => q.where(sql<SqlBool>`${stateOf} = ${filter.state}`));
  const [rows, count, byState] = await Promise.all([
    filtered
      .select([
        "l.config_type",
        "l.scope",
        "l.version",
        "s.sent_version",
        "s.sent_at",
        "s.applied_version",
        "s.applied_at",
        "s.error_version",
        "s.error_at",
        "s.error_message",
      ])
      .select(stateOf.as("state"))
      .orderBy(globalFirst)
      .orderBy("l.scope")
      .orderBy("l.config_type")
      .limit(request.pageSize)
      .offset(pageOffset(request))
      .execute(),
    filtered.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
    joined
      .select(stateOf.as("state"))
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .groupBy(stateOf)
      .execute(),
  ]);
  const counted = new Map(byState.map((r) => [r.state, Number(r.n)]));
  const items = rows.map(
    (r): NodeConfigStateView => ({
      type: r.config_type as ConfigType,
      scope: r.scope,
      app_id: appIdOfScope(r.scope) ?? null,
      latest_version: Number(r.version),
      state: r.state,
      sent_version: r.sent_version,
      sent_at: r.sent_at,
      applied_version: r.applied_version,
      applied_at: r.applied_at,
      error_version: r.error_version,
      error_at: r.error_at,
      error_message: r.error_message,
    }),
  );
  return {
    node_id: nodeId,
    ...toPage(items, request, Number(count.n)),
    summary: {
      synced: counted.get("SYNCED") ?? 0,
      error: counted.get("ERROR") ?? 0,
      pending: counted.get("PENDING") ?? 0,
      not_sent: counted.get("NOT_SENT") ?? 0,
    },
  };
}

// ---- node side (Channel 1) -----------------------------------------------------------------

/**
 * configs/pull: every delivered item whose latest version is newer than what the node says it
 * applied, with content, plus the full cloud-function manifest. What was sent is recorded
 * (PENDING until acked).
 */
export async function pullConfigs(ctx: CpContext, node: CallingNode, applied: readonly ConfigVersionRef[]): Promise<ConfigsPullResponse> {
  assertDistinctItems(applied, "applied");
  const appliedBy = new Map(applied.map((a) => [keyOf(a), a.version]));
  const latest = await latestDeliveredVersions(ctx.controlDb);
  const due = latest.filter((l) => l.version > (appliedBy.get(keyOf(l)) ?? 0));
  const configs = await loadContents(ctx.controlDb, due);
  if (configs.length > 0) await recordSent(ctx, node.id, configs);
  return { configs, cloud_functions: await cloudFunctionManifest(ctx) };
}

/** The latest version of every item a pull delivers: global items and those of live applications. */
export async function latestDeliveredVersions(db: Db): Promise<Array<{ type: string; scope: string; version: number }>> {
  const rows = await withLatest(db)
    .selectFrom("latest as l")
    .where(deliveredScope)
    .select(["l.config_type", "l.scope", "l.version"])
    .execute();
  return rows.map((r) => ({ type: r.config_type, scope: r.scope, version: Number(r.version) }));
}

async function loadContents(db: Db, refs: ReadonlyArray<{ type: string; scope: string; version: number }>): Promise<ConfigItem[]> {
  const items: ConfigItem[] = [];
  for (const chunk of chunks(refs, INSERT_CHUNK)) {
    const rows = await db
      .selectFrom("config_versions")
      .select(["config_type", "scope", "version", "content"])
      .where((eb) =>
        eb.or(chunk.map((r) => eb.and([eb("config_type", "=", r.type), eb("scope", "=", r.scope), eb("version", "=", r.version)]))),
      )
      .execute();
    for (const row of rows)
      items.push({
        type: row.config_type as ConfigType,
        scope: row.scope,
        version: Number(row.version),
        content: JSON.parse(row.content) as unknown,
      });
  }
  return items.sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1));
}

async function recordSent(ctx: CpContext, nodeId: string, items: readonly ConfigItem[]): Promise<void> {
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (trx) => {
    for (const chunk of chunks(items, INSERT_CHUNK)) {
      await trx
        .insertInto("node_config_states")
        .values(chunk.map((i) => ({ ...emptyState(nodeId, i), sent_version: i.version, sent_at: now })))
        .onConflict((oc) =>
          oc
            .columns(["node_id", "config_type", "scope"])
            .doUpdateSet((eb) => ({ sent_version: eb.ref("excluded.sent_version"), sent_at: eb.ref("excluded.sent_at") })),
        )
        .execute();
    }
  });
}

/**
 * configs/acks, all or nothing: every ack must name an existing version (1..latest) before any
 * is stored. applied_version only moves forward (a late retry of an older ack cannot roll it
 * back), and an ack clears a recorded error for that version or an older one.
 */
export async function ackConfigs(ctx: CpContext, node: CallingNode, acks: readonly ConfigVersionRef[]): Promise<{ accepted: number }> {
  assertDistinctItems(acks, "acks");
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (trx) => {
    await assertVersionsExist(
      trx,
      acks.map((a, index) => ({ ...a, field: `acks.${index}.version` })),
    );
    for (const chunk of chunks(acks, INSERT_CHUNK)) {
      await trx
        .insertInto("node_config_states")
        .values(chunk.map((a) => ({ ...emptyState(node.id, a), applied_version: a.version, applied_at: now })))
        .onConflict((oc) =>
          oc.columns(["node_id", "config_type", "scope"]).doUpdateSet(() => {
            const advances = sql`(node_config_states.applied_version is null or node_config_states.applied_version < excluded.applied_version)`;
            const clears = sql`node_config_states.error_version <= excluded.applied_version`;
            return {
              applied_version: sql`case when ${advances} then excluded.applied_version else node_config_states.applied_version end`,
              applied_at: sql`case when ${advances} then excluded.applied_at else node_config_states.applied_at end`,
              error_version: sql`case when ${clears} then null else node_config_states.error_version end`,
              error_message: sql`case when ${clears} then null else node_config_states.error_message end`,
              error_at: sql`case when ${clears} then null else node_config_states.error_at end`,
            };
          }),
        )
        .execute();
    }
  });
  ctx.log.category("CP Agent").info("config.acked", { node_id: node.id, items: acks.length });
  return { accepted: acks.length };
}

/**
 * configs/errors, all or nothing: the rejected version (and the version still in force, when
 * given) must exist. The error is recorded as the item's last error; applied_version moves
 * forward to the reported one if that is newer (never back, as for acks).
 */
export async function reportConfigErrors(ctx: CpContext, node: CallingNode, errors: readonly ConfigError[]): Promise<{ accepted: number }> {
  assertDistinctItems(errors, "errors");
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (trx) => {
    await assertVersionsExist(trx, [
      ...errors.map((e, index) => ({ ...e, field: `errors.${index}.version` })),
      ...errors.flatMap((e, index) =>
        e.applied_version === null ? [] : [{ ...e, version: e.applied_version, field: `errors.${index}.applied_version` }],
      ),
    ]);
    for (const chunk of chunks(errors, INSERT_CHUNK)) {
      await trx
        .insertInto("node_config_states")
        .values(
          chunk.map((e) => ({
            ...emptyState(node.id, e),
            applied_version: e.applied_version,
            applied_at: e.applied_version === null ? null : now,
            error_version: e.version,
            error_message: e.message,
            error_at: now,
          })),
        )
        .onConflict((oc) =>
          oc.columns(["node_id", "config_type", "scope"]).doUpdateSet((eb) => {
            const advances = sql`(excluded.applied_version is not null and (node_config_states.applied_version is null or node_config_states.applied_version < excluded.applied_version))`;
            return {
              applied_version: sql`case when ${advances} then excluded.applied_version else node_config_states.applied_version end`,
              applied_at: sql`case when ${advances} then excluded.applied_at else node_config_states.applied_at end`,
              error_version: eb.ref("excluded.error_version"),
              error_message: eb.ref("excluded.error_message"),
              error_at: eb.ref("excluded.error_at"),
            };
          }),
        )
        .execute();
    }
  });
  const log = ctx.log.category("CP Agent");
  for (const e of errors) {
    log.warn("config.apply_failed", {
      node_id: node.id,
      type: e.type,
      scope: e.scope,
      version: e.version,
      applied_version: e.applied_version,
      message: e.message.slice(0, 300),
    });
  }
  return { accepted: errors.length };
}

// ---- helpers -------------------------------------------------------------------------------

/** The latest version of every item, as the CTE `latest`. */
function withLatest(db: Db) {
  return db.with("latest", (q) =>
    q
      .selectFrom("config_versions")
      .select(["config_type", "scope"])
      .select((eb) => eb.fn.max("version").as("version"))
      .groupBy(["config_type", "scope"]),
  );
}

/** Global items, and items of applications that exist and are not in the recycle bin. */
const deliveredScope = sql<SqlBool>`(l.scope = ${GLOBAL_SCOPE} or exists (select 1 from applications a where a.id = substr(l.scope, 5) and a.deleted_at is null))`;

const globalFirst = sql`case when l.scope = ${GLOBAL_SCOPE} then 0 else 1 end`;

/** The state rule of the brief, in order: SYNCED, ERROR, PENDING, else NOT_SENT (no state row → NOT_SENT). */
const stateOf = sql<ConfigState>`case
  when s.applied_version = l.version then 'SYNCED'
  when s.error_version = l.version then 'ERROR'
  when s.sent_version = l.version then 'PENDING'
  else 'NOT_SENT' end`;

function emptyState(nodeId: string, item: { type: string; scope: string }) {
  return {
    node_id: nodeId,
    config_type: item.type,
    scope: item.scope,
    sent_version: null,
    sent_at: null,
    applied_version: null,
    applied_at: null,
    error_version: null,
    error_message: null,
    error_at: null,
  };
}

/** One entry per item in a node's batch; a scope must be the right kind for its type. */
function assertDistinctItems(items: ReadonlyArray<{ type: ConfigType; scope: string }>, field: string): void {
  const seen = new Set<string>();
  items.forEach((item, index) => {
    if (!scopeFitsType(item.type, item.scope))
      throw invalidField(`${field}.${index}.scope`, `${item.scope} is not a valid scope for ${item.type}`);
    const key = keyOf(item);
    if (seen.has(key)) throw invalidField(`${field}.${index}`, `${item.type} ${item.scope} appears more than once`);
    seen.add(key);
  });
}

/** Every named version must exist: versions run 1..latest, so that is version <= latest. */
async function assertVersionsExist(
  db: Db,
  refs: ReadonlyArray<{ type: string; scope: string; version: number; field: string }>,
): Promise<void> {
  const latest = new Map<string, number>();
  const scopes = [...new Set(refs.map((r) => r.scope))];
  for (const chunk of chunks(scopes, INSERT_CHUNK)) {
    const rows = await db
      .selectFrom("config_versions")
      .select(["config_type", "scope"])
      .select((eb) => eb.fn.max("version").as("version"))
      .where("scope", "in", chunk)
      .groupBy(["config_type", "scope"])
      .execute();
    for (const row of rows) latest.set(keyOf({ type: row.config_type, scope: row.scope }), Number(row.version));
  }
  for (const ref of refs) {
    const newest = latest.get(keyOf(ref));
    if (newest === undefined) throw invalidField(ref.field, `${ref.type} ${ref.scope} has no version ${ref.version} (it has none yet)`);
    if (ref.version > newest) throw invalidField(ref.field, `${ref.type} ${ref.scope} has no version ${ref.version} (latest is ${newest})`);
  }
}

async function requireApplication(db: Db, appId: string): Promise<{ deleted_at: number | null }> {
  const app = await db.selectFrom("applications").select("deleted_at").where("id", "=", appId).executeTakeFirst();
  if (!app) throw new AuthNexusError("NOT_FOUND", { message: "Application not found." });
  return app;
}

/** The application exists and is not in the recycle bin (409 APPLICATION_DELETED when it is). */
export async function requireLiveApplication(db: Db, appId: string): Promise<void> {
  const app = await requireApplication(db, appId);
  if (app.deleted_at !== null) throw new AuthNexusError("APPLICATION_DELETED");
}

function invalidField(field: string, problem: string): AuthNexusError {
  return new AuthNexusError("VALIDATION_FAILED", {
    message: `Request failed validation: ${field}: ${problem}`,
    publicDetail: [{ field, problem }],
  });
}

/** JSON with object keys sorted at every level: equal values give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  });
}

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
