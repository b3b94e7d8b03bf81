/**
 * Channel 1 config delivery, node side: pull what is newer than what the node applied (with the
 * cloud-function manifest), then acks of what it applied and reports of what it rejected (config
 * items, and cloud function bodies that do not compile: ./function-errors.ts), each validated as
 * a whole batch and stored in one transaction or not at all.
 */
import { sql } from "kysely";
import { fieldInvalid } from "../../../shared/errors/index.js";
import {
  CLOUD_FUNCTION_ERROR_TYPE,
  type ConfigError,
  type ConfigItem,
  type ConfigsPullResponse,
  type ConfigType,
  type ConfigVersionRef,
  isConfigType,
  scopeFitsType,
} from "../../../shared/node-protocol/index.js";
import { applicationManifest, cloudFunctionManifest } from "../applications/node-channel.js";
import type { CpContext } from "../context.js";
import type { CallingNode } from "../nodes/identity.js";
import { assertFunctionVersionsExist, functionVersionRefs, stateTypeOf } from "./function-errors.js";
import { chunks, type Db, INSERT_CHUNK, keyOf, latestDeliveredVersions } from "./items.js";

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
  const [cloudFunctions, applications] = await Promise.all([cloudFunctionManifest(ctx), applicationManifest(ctx)]);
  return { configs, cloud_functions: cloudFunctions, applications };
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
 * given) must exist, as a config version or as a cloud function's version. The error is recorded
 * as the item's (or function's) last error; applied_version moves forward to the reported one if
 * that is newer (never back, as for acks).
 */
export async function reportConfigErrors(ctx: CpContext, node: CallingNode, errors: readonly ConfigError[]): Promise<{ accepted: number }> {
  assertDistinctItems(
    errors.map((e) => ({ ...e, stateType: stateTypeOf(e) })),
    "errors",
  );
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (trx) => {
    await assertVersionsExist(trx, itemVersionRefs(errors));
    await assertFunctionVersionsExist(trx, functionVersionRefs(errors));
    for (const chunk of chunks(errors, INSERT_CHUNK)) {
      await trx
        .insertInto("node_config_states")
        .values(
          chunk.map((e) => ({
            ...emptyState(node.id, { type: stateTypeOf(e), scope: e.scope }),
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
      ...(e.type === CLOUD_FUNCTION_ERROR_TYPE ? { name: e.name } : {}),
      version: e.version,
      applied_version: e.applied_version,
      message: e.message.slice(0, 300),
    });
  }
  return { accepted: errors.length };
}

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

/**
 * One entry per item in a node's batch; a scope must be the right kind for its type. An entry
 * with a stateType (a reported error) is keyed by it, so two functions of one application differ.
 */
function assertDistinctItems(items: ReadonlyArray<{ type: string; scope: string; stateType?: string }>, field: string): void {
  const seen = new Set<string>();
  items.forEach((item, index) => {
    if (isConfigType(item.type) && !scopeFitsType(item.type, item.scope))
      throw fieldInvalid(`${field}.${index}.scope`, `${item.scope} is not a valid scope for ${item.type}`);
    const type = item.stateType ?? item.type;
    const key = keyOf({ type, scope: item.scope });
    if (seen.has(key)) throw fieldInvalid(`${field}.${index}`, `${type} ${item.scope} appears more than once`);
    seen.add(key);
  });
}

/** The config versions a batch of errors names (the rejected one and the one in force), for assertVersionsExist. */
function itemVersionRefs(errors: readonly ConfigError[]): Array<{ type: string; scope: string; version: number; field: string }> {
  return errors.flatMap((e, index) => {
    if (e.type === CLOUD_FUNCTION_ERROR_TYPE) return [];
    const rejected = { type: e.type, scope: e.scope, version: e.version, field: `errors.${index}.version` };
    if (e.applied_version === null) return [rejected];
    return [rejected, { type: e.type, scope: e.scope, version: e.applied_version, field: `errors.${index}.applied_version` }];
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
    if (newest === undefined) throw fieldInvalid(ref.field, `${ref.type} ${ref.scope} has no version ${ref.version} (it has none yet)`);
    if (ref.version > newest) throw fieldInvalid(ref.field, `${ref.type} ${ref.scope} has no version ${ref.version} (latest is ${newest})`);
  }
}
