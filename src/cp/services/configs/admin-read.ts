/** Admin reads of config items: the latest version, an item's history, the fleet's state per item and per node. */
import { type SqlBool, sql } from "kysely";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { appIdOfScope, appScope, type ConfigType } from "../../../shared/node-protocol/index.js";
import { requireApplication } from "../applications/lookup.js";
import type { CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { listNodeFunctionErrors, type NodeFunctionErrorView } from "./function-errors.js";
import {
  type ConfigItemKey,
  type ConfigState,
  type ConfigVersionView,
  deliveredScope,
  globalFirst,
  latestVersionRow,
  stateOf,
  toVersionView,
  withLatest,
} from "./items.js";

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
  return paginate(
    base,
    request,
    (q) => q.select(["config_type", "scope", "version", "content", "created_at", "created_by"]).orderBy("version", "desc"),
    toVersionView,
  );
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
  const [page, nodes] = await Promise.all([
    paginate(base, request, (q) =>
      q
        .innerJoin("config_versions as cv", (j) =>
          j.onRef("cv.config_type", "=", "l.config_type").onRef("cv.scope", "=", "l.scope").onRef("cv.version", "=", "l.version"),
        )
        .leftJoin("node_config_states as s", (j) => j.onRef("s.config_type", "=", "l.config_type").onRef("s.scope", "=", "l.scope"))
        .select(["l.config_type", "l.scope", "l.version", "cv.created_at", "cv.created_by"])
        .select([stateSum("SYNCED").as("synced"), stateSum("ERROR").as("error"), stateSum("PENDING").as("pending")])
        .groupBy(["l.config_type", "l.scope", "l.version", "cv.created_at", "cv.created_by"])
        .orderBy(globalFirst)
        .orderBy("l.scope")
        .orderBy("l.config_type"),
    ),
    db
      .selectFrom("nodes")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirstOrThrow(),
  ]);
  const total = Number(nodes.n);
  const items = page.items.map((r): ConfigItemSummary => {
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
  return { ...page, items };
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
  /** Cloud functions whose current version this node refused (it did not compile there), whatever the page or filter. */
  cloud_function_errors: NodeFunctionErrorView[];
}

/**
 * Per delivered item (one that has a version), this node's state, versions and last error; and
 * the cloud functions whose current version the node refused.
 */
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
  const [page, byState, functionErrors] = await Promise.all([
    paginate(filtered, request, (q) =>
      q
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
        .orderBy("l.config_type"),
    ),
    joined
      .select(stateOf.as("state"))
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .groupBy(stateOf)
      .execute(),
    listNodeFunctionErrors(db, nodeId),
  ]);
  const counted = new Map(byState.map((r) => [r.state, Number(r.n)]));
  const items = page.items.map(
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
    ...page,
    items,
    summary: {
      synced: counted.get("SYNCED") ?? 0,
      error: counted.get("ERROR") ?? 0,
      pending: counted.get("PENDING") ?? 0,
      not_sent: counted.get("NOT_SENT") ?? 0,
    },
    cloud_function_errors: functionErrors,
  };
}

/** Per config type, how many of its delivered items are in each state on this node. */
export async function nodeConfigStatusByType(ctx: CpContext, nodeId: string): Promise<Record<string, StateCounts & { total: number }>> {
  const rows = await withLatest(ctx.controlDb)
    .selectFrom("latest as l")
    .leftJoin("node_config_states as s", (j) =>
      j.onRef("s.config_type", "=", "l.config_type").onRef("s.scope", "=", "l.scope").on("s.node_id", "=", nodeId),
    )
    .where(deliveredScope)
    .select(["l.config_type"])
    .select(stateOf.as("state"))
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .groupBy(["l.config_type", stateOf])
    .execute();
  const out: Record<string, StateCounts & { total: number }> = {};
  for (const row of rows) {
    const counts = out[row.config_type] ?? { total: 0, synced: 0, error: 0, pending: 0, not_sent: 0 };
    out[row.config_type] = counts;
    const n = Number(row.n);
    counts.total += n;
    counts[STATE_KEYS[row.state]] += n;
  }
  return out;
}

/**
 * The fleet's config health over the nodes that are not provisioning: a node is in error when
 * some delivered item's latest version failed to apply there, pending when some item has not
 * reached it yet (sent or not), and in sync otherwise.
 */
export async function fleetConfigHealth(ctx: CpContext): Promise<{ in_sync: number; pending: number; error: number }> {
  const rows = await withLatest(ctx.controlDb)
    .selectFrom("nodes as n")
    .innerJoin("latest as l", (j) => j.on(sql<SqlBool>`1 = 1`))
    .leftJoin("node_config_states as s", (j) =>
      j.onRef("s.config_type", "=", "l.config_type").onRef("s.scope", "=", "l.scope").onRef("s.node_id", "=", "n.id"),
    )
    .where("n.status", "!=", "provisioning")
    .where(deliveredScope)
    .select("n.id")
    .select(sql<number>`sum(case when ${stateOf} = 'ERROR' then 1 else 0 end)`.as("errors"))
    .select(sql<number>`sum(case when ${stateOf} in ('PENDING', 'NOT_SENT') then 1 else 0 end)`.as("pending"))
    .groupBy("n.id")
    .execute();
  const nodes = await ctx.controlDb
    .selectFrom("nodes")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("status", "!=", "provisioning")
    .executeTakeFirstOrThrow();
  let error = 0;
  let pending = 0;
  for (const row of rows) {
    if (Number(row.errors) > 0) error += 1;
    else if (Number(row.pending) > 0) pending += 1;
  }
  // A node with no row here had no delivered item to be behind on.
  return { in_sync: Number(nodes.n) - error - pending, pending, error };
}

/**
 * Over the nodes that are not provisioning, how many (node, delivered item) pairs are in each
 * state (metrics): one grouped query, every state present.
 */
export async function fleetConfigStateCounts(ctx: Pick<CpContext, "controlDb">): Promise<Record<ConfigState, number>> {
  const rows = await withLatest(ctx.controlDb)
    .selectFrom("nodes as n")
    .innerJoin("latest as l", (j) => j.on(sql<SqlBool>`1 = 1`))
    .leftJoin("node_config_states as s", (j) =>
      j.onRef("s.config_type", "=", "l.config_type").onRef("s.scope", "=", "l.scope").onRef("s.node_id", "=", "n.id"),
    )
    .where("n.status", "!=", "provisioning")
    .where(deliveredScope)
    .select(stateOf.as("state"))
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .groupBy(stateOf)
    .execute();
  const out: Record<ConfigState, number> = { SYNCED: 0, PENDING: 0, ERROR: 0, NOT_SENT: 0 };
  for (const row of rows) out[row.state as ConfigState] += Number(row.n);
  return out;
}

const STATE_KEYS: Record<ConfigState, keyof StateCounts> = {
  SYNCED: "synced",
  ERROR: "error",
  PENDING: "pending",
  NOT_SENT: "not_sent",
};
