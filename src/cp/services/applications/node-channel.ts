/**
 * Applications and their cloud functions as nodes see them. Every config pull carries two small
 * manifests: the live applications (status and secret verifier, what a node checks an SDK's
 * hello against) and every cloud function of them (name, version, sha256, timeout); a node
 * downloads a function's body only when its sha256 differs from what it holds. Applications in
 * the recycle bin, their functions, and disabled functions are neither listed nor served.
 */
import { AuthNexusError } from "../../../shared/errors/index.js";
import { sha256Hex } from "../../../shared/ids.js";
import type { ApplicationManifest, CloudFunctionManifest } from "../../../shared/node-protocol/index.js";
import type { CpContext } from "../context.js";

/** The manifest every config pull carries: every function of every live application. */
export async function cloudFunctionManifest(ctx: CpContext): Promise<CloudFunctionManifest[]> {
  const rows = await ctx.controlDb
    .selectFrom("cloud_functions as f")
    .innerJoin("applications as a", "a.id", "f.app_id")
    .where("a.deleted_at", "is", null)
    .where("f.enabled", "=", 1)
    .select(["f.app_id", "f.name", "f.version", "f.timeout_ms", "f.script"])
    .orderBy("f.app_id")
    .orderBy("f.name")
    .execute();
  return rows.map((r) => ({
    app_id: r.app_id,
    name: r.name,
    version: Number(r.version),
    sha256: sha256Hex(r.script),
    timeout_ms: r.timeout_ms,
  }));
}

export interface CloudFunctionBody {
  script: string;
  version: number;
  sha256: string;
}

/** One function's script for a node; 404 when unknown or when its application is in the recycle bin. */
export async function cloudFunctionBody(ctx: CpContext, appId: string, name: string): Promise<CloudFunctionBody> {
  const row = await ctx.controlDb
    .selectFrom("cloud_functions as f")
    .innerJoin("applications as a", "a.id", "f.app_id")
    .where("a.deleted_at", "is", null)
    .where("f.app_id", "=", appId)
    .where("f.name", "=", name)
    .where("f.enabled", "=", 1)
    .select(["f.script", "f.version"])
    .executeTakeFirst();
  if (!row) throw new AuthNexusError("NOT_FOUND", { message: "Cloud function not found." });
  return { script: row.script, version: Number(row.version), sha256: sha256Hex(row.script) };
}

/** The manifest of live applications every config pull carries. */
export async function applicationManifest(ctx: CpContext): Promise<ApplicationManifest[]> {
  const rows = await ctx.controlDb
    .selectFrom("applications")
    .select(["id", "status", "secret_hash"])
    .where("deleted_at", "is", null)
    .orderBy("id")
    .execute();
  return rows.map((r) => ({ app_id: r.id, status: r.status === "active" ? "active" : "disabled", secret_sha256: r.secret_hash }));
}
