/**
 * Cloud functions, admin side: scripts live in the Control DB, unique per (app_id, name). A
 * change bumps the function's version and hints every node with config.pending, since the
 * manifest rides on the config pull (node side: ./node-channel.ts).
 */
import {
  DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS,
  MAX_CLOUD_FUNCTION_SCRIPT_BYTES,
  MAX_CLOUD_FUNCTION_TIMEOUT_MS,
  MIN_CLOUD_FUNCTION_TIMEOUT_MS,
} from "../../../shared/config/defaults.js";
import type { CloudFunctionsTable } from "../../../shared/db/control-schema.js";
import { isUniqueViolation } from "../../../shared/db/index.js";
import { type FieldProblem, validationFailed } from "../../../shared/errors/index.js";
import { newId, sha256Hex } from "../../../shared/ids.js";
import type { CloudFunctionManifest } from "../../../shared/node-protocol/index.js";
import type { Actor, CpContext } from "../context.js";
import { requireLiveApplication } from "./lookup.js";

/** Function names: an identifier-like word, safe in a URL path segment without escaping. */
export const CLOUD_FUNCTION_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

export interface CloudFunctionInput {
  appId: string;
  name: string;
  script: string;
  /** Omitted: keep the current timeout (or the default for a new function). */
  timeoutMs?: number | undefined;
}

export interface CloudFunctionView extends CloudFunctionManifest {
  id: string;
  size_bytes: number;
  created_at: number;
  updated_at: number;
  created_by: string | null;
}

/**
 * Creates the function (version 1) or replaces its script/timeout (version + 1). Unchanged input
 * is a no-op returning the current version without a hint.
 */
export async function upsertCloudFunction(
  ctx: CpContext,
  actor: Actor,
  input: CloudFunctionInput,
): Promise<CloudFunctionView & { changed: boolean }> {
  assertValidInput(input);
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await ctx.controlDb.transaction().execute(async (trx) => {
        await requireLiveApplication(trx, input.appId);
        const now = ctx.clock.now();
        const current = await trx
          .selectFrom("cloud_functions")
          .selectAll()
          .where("app_id", "=", input.appId)
          .where("name", "=", input.name)
          .executeTakeFirst();
        const timeoutMs = input.timeoutMs ?? current?.timeout_ms ?? DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS;
        if (!current) {
          const row = {
            id: newId("cfn"),
            app_id: input.appId,
            name: input.name,
            script: input.script,
            version: 1,
            timeout_ms: timeoutMs,
            created_at: now,
            updated_at: now,
            created_by: actor.agentId,
          };
          await trx.insertInto("cloud_functions").values(row).execute();
          return { ...toView(row), changed: true };
        }
        if (current.script === input.script && current.timeout_ms === timeoutMs) return { ...toView(current), changed: false };
        // version + 1 in SQL: two concurrent replacements each get their own number.
        await trx
          .updateTable("cloud_functions")
          .set((eb) => ({ script: input.script, timeout_ms: timeoutMs, version: eb("version", "+", 1), updated_at: now }))
          .where("id", "=", current.id)
          .execute();
        const updated = await trx.selectFrom("cloud_functions").selectAll().where("id", "=", current.id).executeTakeFirstOrThrow();
        return { ...toView(updated), changed: true };
      });
      if (result.changed) {
        ctx.log
          .category("CP Agent")
          .info("cloud_function.updated", { app_id: result.app_id, name: result.name, version: result.version, agent_id: actor.agentId });
        ctx.events.publish("config.pending", null);
      }
      return result;
    } catch (error) {
      // Two first-time creations raced: the loser retries and takes the replace path.
      if (isUniqueViolation(error) && attempt < 3) continue;
      throw error;
    }
  }
}

function toView(row: CloudFunctionsTable): CloudFunctionView {
  return {
    id: row.id,
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

function assertValidInput(input: CloudFunctionInput): void {
  const problems: FieldProblem[] = [];
  if (!CLOUD_FUNCTION_NAME.test(input.name))
    problems.push({ field: "name", problem: "must be 1-64 characters: letters, digits, _ . - (starting with a letter or _)" });
  if (Buffer.byteLength(input.script) > MAX_CLOUD_FUNCTION_SCRIPT_BYTES)
    problems.push({ field: "script", problem: `must be at most ${MAX_CLOUD_FUNCTION_SCRIPT_BYTES} bytes` });
  if (input.script.trim() === "") problems.push({ field: "script", problem: "must not be empty" });
  const t = input.timeoutMs;
  if (t !== undefined && (!Number.isInteger(t) || t < MIN_CLOUD_FUNCTION_TIMEOUT_MS || t > MAX_CLOUD_FUNCTION_TIMEOUT_MS)) {
    problems.push({
      field: "timeout_ms",
      problem: `must be an integer from ${MIN_CLOUD_FUNCTION_TIMEOUT_MS} to ${MAX_CLOUD_FUNCTION_TIMEOUT_MS}`,
    });
  }
  if (problems.length > 0) throw validationFailed(problems);
}
