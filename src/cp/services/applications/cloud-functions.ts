/**
 * Cloud functions, admin side: scripts live in the Control DB, unique per (app_id, name). A
 * change bumps the function's version and hints every node with config.pending, since the
 * manifest rides on the config pull (node side: ./node-channel.ts). Every script is compiled
 * (never run) before it is stored, so a node is never sent one that cannot load.
 */

import type { Kysely } from "kysely";
import {
  DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS,
  MAX_CLOUD_FUNCTION_SCRIPT_BYTES,
  MAX_CLOUD_FUNCTION_TIMEOUT_MS,
  MIN_CLOUD_FUNCTION_TIMEOUT_MS,
} from "../../../shared/config/defaults.js";
import type { CloudFunctionsTable } from "../../../shared/db/control-schema.js";
import { type ControlSchema, isUniqueViolation } from "../../../shared/db/index.js";
import { AuthNexusError, type FieldProblem, validationFailed } from "../../../shared/errors/index.js";
import { newId, sha256Hex } from "../../../shared/ids.js";
import { checkLuaSyntax } from "../../../shared/lua/syntax.js";
import type { CloudFunctionManifest } from "../../../shared/node-protocol/index.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { requireApplication, requireLiveApplication } from "./lookup.js";

/** Function names: an identifier-like word, safe in a URL path segment without escaping. */
export const CLOUD_FUNCTION_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

export interface CloudFunctionInput {
  appId: string;
  name: string;
  script: string;
  /** Omitted: keep the current timeout (or the default for a new function). */
  timeoutMs?: number | undefined;
  /** Omitted: enabled for a new function. */
  enabled?: boolean | undefined;
}

export interface CloudFunctionView extends CloudFunctionManifest {
  id: string;
  /** Whether nodes serve it; a disabled function is kept but left out of the manifest. */
  enabled: boolean;
  size_bytes: number;
  created_at: number;
  updated_at: number;
  created_by: string | null;
}

/** A function with its script: what create, get and update answer. */
export interface CloudFunctionDetail extends CloudFunctionView {
  script: string;
}

export interface CloudFunctionChanges {
  script?: string | undefined;
  timeoutMs?: number | undefined;
  enabled?: boolean | undefined;
}

/** One page of an application's functions by name, without scripts. Readable while the application is in the recycle bin. */
export async function listCloudFunctions(ctx: CpContext, appId: string, page: PageRequest): Promise<Page<CloudFunctionView>> {
  await requireApplication(ctx.controlDb, appId);
  const base = ctx.controlDb.selectFrom("cloud_functions").where("app_id", "=", appId);
  return paginate(base, page, (q) => q.selectAll().orderBy("name").orderBy("id"), toView);
}

export async function getCloudFunction(ctx: CpContext, appId: string, name: string): Promise<CloudFunctionDetail> {
  await requireApplication(ctx.controlDb, appId);
  return toDetail(await requireFunction(ctx.controlDb, appId, name));
}

/** Creates version 1; a name the application already uses is 409 CONFLICT (the existing function is left alone). */
export async function createCloudFunction(ctx: CpContext, actor: Actor, input: CloudFunctionInput): Promise<CloudFunctionDetail> {
  assertValidFields(input);
  // The application is checked before the compiler runs: a syntax error is reported only for a save that could happen.
  await requireLiveApplication(ctx.controlDb, input.appId);
  await assertCompiles(input.script);
  let created: StoredFunction;
  try {
    created = await ctx.controlDb.transaction().execute(async (trx) => {
      await requireLiveApplication(trx, input.appId);
      const now = ctx.clock.now();
      const row = {
        id: newId("cfn"),
        app_id: input.appId,
        name: input.name,
        script: input.script,
        version: 1,
        timeout_ms: input.timeoutMs ?? DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS,
        enabled: input.enabled === false ? 0 : 1,
        created_at: now,
        updated_at: now,
        created_by: actor.agentId,
      };
      await trx.insertInto("cloud_functions").values(row).execute();
      return row;
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw duplicateName(input.name, error);
    throw error;
  }
  const detail = toDetail(created);
  announceChange(ctx, actor, "cloud_function.created", detail);
  return detail;
}

/**
 * Applies the given changes; the version goes up by one when the script or timeout actually
 * changes. Input equal to what is stored is a no-op (`changed: false`, no new version, no hint).
 */
export async function updateCloudFunction(
  ctx: CpContext,
  actor: Actor,
  appId: string,
  name: string,
  changes: CloudFunctionChanges,
): Promise<CloudFunctionDetail & { changed: boolean }> {
  assertValidFields({ script: changes.script, timeoutMs: changes.timeoutMs });
  if (changes.script !== undefined) {
    // Unknown application or function first: a syntax error is reported only for a save that could happen.
    await requireLiveApplication(ctx.controlDb, appId);
    await requireFunction(ctx.controlDb, appId, name);
    await assertCompiles(changes.script);
  }
  const result = await ctx.controlDb.transaction().execute(async (trx) => {
    await requireLiveApplication(trx, appId);
    const current = await requireFunction(trx, appId, name);
    const script = changes.script ?? current.script;
    const timeoutMs = changes.timeoutMs ?? current.timeout_ms;
    const enabled = changes.enabled === undefined ? current.enabled : changes.enabled ? 1 : 0;
    const codeChanged = script !== current.script || timeoutMs !== current.timeout_ms;
    if (!codeChanged && enabled === current.enabled) return { ...toDetail(current), changed: false };
    // version + 1 in SQL: two concurrent updates each get their own number. Switching a function
    // on or off keeps its version: what nodes run is the same script.
    await trx
      .updateTable("cloud_functions")
      .set((eb) => ({
        script,
        timeout_ms: timeoutMs,
        enabled,
        version: codeChanged ? eb("version", "+", 1) : eb.ref("version"),
        updated_at: ctx.clock.now(),
      }))
      .where("id", "=", current.id)
      .execute();
    const updated = await trx.selectFrom("cloud_functions").selectAll().where("id", "=", current.id).executeTakeFirstOrThrow();
    return { ...toDetail(updated), changed: true };
  });
  if (result.changed) announceChange(ctx, actor, "cloud_function.updated", result);
  return result;
}

/** Deletes the function: it leaves the manifest of the next config pull, and nodes stop serving it. */
export async function deleteCloudFunction(ctx: CpContext, actor: Actor, appId: string, name: string): Promise<CloudFunctionView> {
  const deleted = await ctx.controlDb.transaction().execute(async (trx) => {
    await requireLiveApplication(trx, appId);
    const current = await requireFunction(trx, appId, name);
    await trx.deleteFrom("cloud_functions").where("id", "=", current.id).execute();
    return toView(current);
  });
  announceChange(ctx, actor, "cloud_function.deleted", deleted);
  return deleted;
}

/** A function row as read back (enabled is filled in by the database's default). */
type StoredFunction = Omit<CloudFunctionsTable, "enabled"> & { enabled: number };

async function requireFunction(db: Kysely<ControlSchema>, appId: string, name: string): Promise<StoredFunction> {
  const row = CLOUD_FUNCTION_NAME.test(name)
    ? await db.selectFrom("cloud_functions").selectAll().where("app_id", "=", appId).where("name", "=", name).executeTakeFirst()
    : undefined;
  if (!row) throw new AuthNexusError("FUNCTION_NOT_FOUND", { message: "Cloud function not found." });
  return row;
}

function duplicateName(name: string, cause: unknown): AuthNexusError {
  return new AuthNexusError("CONFLICT", {
    message: `A cloud function named ${name} already exists in this application.`,
    cause,
  });
}

/** Logs the change and hints every node: the manifest rides on the config pull the hint triggers. */
function announceChange(ctx: CpContext, actor: Actor, event: string, fn: CloudFunctionView): void {
  ctx.log.category("CP Agent").info(event, { app_id: fn.app_id, name: fn.name, version: fn.version, agent_id: actor.agentId });
  ctx.events.publish("config.pending", null);
}

function toDetail(row: StoredFunction): CloudFunctionDetail {
  return { ...toView(row), script: row.script };
}

function toView(row: StoredFunction): CloudFunctionView {
  return {
    id: row.id,
    enabled: row.enabled === 1,
    app_id: row.app_id,
    name: row.name,
    version: Number(row.version),
    sha256: sha256Hex(row.script),
    timeout_ms: row.timeout_ms,
    size_bytes: Buffer.byteLength(row.script),
    created_at: row.created_at,
    updated_at: row.updated_at,
    created_by: row.created_by,
  };
}

/** Every problem with the fields at once (the name only when one is given: a path name is looked up instead). */
function assertValidFields(input: { name?: string; script?: string | undefined; timeoutMs?: number | undefined }): void {
  const problems: FieldProblem[] = [];
  if (input.name !== undefined && !CLOUD_FUNCTION_NAME.test(input.name))
    problems.push({ field: "name", problem: "must be 1-64 characters: letters, digits, _ . - (starting with a letter or _)" });
  if (input.script !== undefined) problems.push(...scriptProblems(input.script));
  if (input.timeoutMs !== undefined) problems.push(...timeoutProblems(input.timeoutMs));
  if (problems.length > 0) throw validationFailed(problems);
}

function scriptProblems(script: string): FieldProblem[] {
  if (Buffer.byteLength(script) > MAX_CLOUD_FUNCTION_SCRIPT_BYTES)
    return [{ field: "script", problem: `must be at most ${MAX_CLOUD_FUNCTION_SCRIPT_BYTES} bytes` }];
  if (script.trim() === "") return [{ field: "script", problem: "must not be empty" }];
  return [];
}

function timeoutProblems(timeoutMs: number): FieldProblem[] {
  if (Number.isInteger(timeoutMs) && timeoutMs >= MIN_CLOUD_FUNCTION_TIMEOUT_MS && timeoutMs <= MAX_CLOUD_FUNCTION_TIMEOUT_MS) return [];
  return [{ field: "timeout_ms", problem: `must be an integer from ${MIN_CLOUD_FUNCTION_TIMEOUT_MS} to ${MAX_CLOUD_FUNCTION_TIMEOUT_MS}` }];
}

/** 400 FUNCTION_SYNTAX_ERROR with the compiler's line and message when the script does not compile. */
async function assertCompiles(script: string): Promise<void> {
  const checked = await checkLuaSyntax(script);
  if (checked.ok) return;
  const where = checked.line === null ? "" : ` on line ${checked.line}`;
  throw new AuthNexusError("FUNCTION_SYNTAX_ERROR", {
    message: `The script is not valid Lua${where}: ${checked.message}`,
    publicDetail: { line: checked.line, message: checked.message },
  });
}
