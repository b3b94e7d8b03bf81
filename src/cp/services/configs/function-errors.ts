/**
 * Cloud function bodies a node refused (they do not compile there), reported through
 * configs/errors beside config item errors. They are kept in node_config_states like item
 * errors, under config_type `cloud_function:<name>` and the application's scope: the row key
 * (node, type, scope) then stays one per function, and an application's purge removes them with
 * its other per-node states. Function versions are not config versions, so they are checked
 * against cloud_functions instead of config_versions.
 *
 * An error is shown while it concerns the function's current version: any newer version
 * supersedes it (a node that refuses that one too reports it again).
 */
import { type SqlBool, sql } from "kysely";
import { fieldInvalid } from "../../../shared/errors/index.js";
import { appIdOfScope, CLOUD_FUNCTION_ERROR_TYPE, type ConfigError } from "../../../shared/node-protocol/index.js";
import { chunks, type Db, INSERT_CHUNK } from "./items.js";

const STATE_TYPE_PREFIX = `${CLOUD_FUNCTION_ERROR_TYPE}:`;

/** The node_config_states config_type an error is stored under. */
export function stateTypeOf(error: ConfigError): string {
  return error.type === CLOUD_FUNCTION_ERROR_TYPE ? `${STATE_TYPE_PREFIX}${error.name}` : error.type;
}

export interface FunctionVersionRef {
  appId: string;
  name: string;
  version: number;
  field: string;
}

/** Every named function must exist with at least that version (its versions run 1..current). */
export async function assertFunctionVersionsExist(db: Db, refs: readonly FunctionVersionRef[]): Promise<void> {
  const current = new Map<string, number>();
  const appIds = [...new Set(refs.map((r) => r.appId))];
  for (const chunk of chunks(appIds, INSERT_CHUNK)) {
    const rows = await db.selectFrom("cloud_functions").select(["app_id", "name", "version"]).where("app_id", "in", chunk).execute();
    for (const row of rows) current.set(`${row.app_id}/${row.name}`, Number(row.version));
  }
  for (const ref of refs) {
    const newest = current.get(`${ref.appId}/${ref.name}`);
    if (newest === undefined) throw fieldInvalid(ref.field, `application ${ref.appId} has no cloud function ${ref.name}`);
    if (ref.version > newest)
      throw fieldInvalid(ref.field, `cloud function ${ref.name} has no version ${ref.version} (latest is ${newest})`);
  }
}

/** The function version refs a batch of errors names (the refused one and the one in force), for assertFunctionVersionsExist. */
export function functionVersionRefs(errors: readonly ConfigError[]): FunctionVersionRef[] {
  return errors.flatMap((e, index) => {
    if (e.type !== CLOUD_FUNCTION_ERROR_TYPE) return [];
    const appId = appIdOfScope(e.scope) ?? "";
    const refused = { appId, name: e.name, version: e.version, field: `errors.${index}.version` };
    if (e.applied_version === null) return [refused];
    return [refused, { appId, name: e.name, version: e.applied_version, field: `errors.${index}.applied_version` }];
  });
}

export interface NodeFunctionErrorView {
  app_id: string;
  name: string;
  /** The function's current version, the one the node refused. */
  version: number;
  /** The version the node still serves (null: it serves none). */
  applied_version: number | null;
  error_at: number;
  error_message: string;
}

/** A node's refusals of the current version of live, enabled functions, by application then name. */
export async function listNodeFunctionErrors(db: Db, nodeId: string): Promise<NodeFunctionErrorView[]> {
  const rows = await db
    .selectFrom("node_config_states as s")
    .innerJoin("cloud_functions as f", (j) =>
      j.on(sql<SqlBool>`s.config_type = (${sql.lit(STATE_TYPE_PREFIX)} || f.name) and s.scope = ('app:' || f.app_id)`),
    )
    .innerJoin("applications as a", "a.id", "f.app_id")
    .where("s.node_id", "=", nodeId)
    .where("a.deleted_at", "is", null)
    .where("f.enabled", "=", 1)
    .whereRef("s.error_version", "=", "f.version")
    // A function deleted and created again starts over at version 1: an older error is not its.
    .whereRef("s.error_at", ">=", "f.updated_at")
    .select(["f.app_id", "f.name", "f.version", "s.applied_version", "s.error_at", "s.error_message"])
    .orderBy("f.app_id")
    .orderBy("f.name")
    .execute();
  return rows.map((r) => ({
    app_id: r.app_id,
    name: r.name,
    version: Number(r.version),
    applied_version: r.applied_version === null ? null : Number(r.applied_version),
    error_at: Number(r.error_at),
    error_message: r.error_message ?? "",
  }));
}
