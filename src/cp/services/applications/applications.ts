/**
 * Applications (tenants). The app secret is shown once at creation and stored only as a
 * SHA-256 hash — the verifier nodes check an SDK's hello against. Creating an application also
 * publishes its client CA trust bundle (the trusted app_client_ca certificates), so its client
 * certificates work on every node at once. Deleting moves an application to the recycle bin; only from there
 * can it be restored or purged for good. Every change that alters what nodes accept (status,
 * deletion, restore) hints them to pull the application manifest again.
 */
import { sql } from "kysely";
import type { ApplicationsTable } from "../../../shared/db/control-schema.js";
import { isUniqueViolation } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId, randomToken, sha256Hex } from "../../../shared/ids.js";
import { appScope } from "../../../shared/node-protocol/index.js";
import { setConfig } from "../configs/admin-write.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { trustedCaBundle } from "../pki/inventory.js";

/** An application as the API shows it: `app_id` instead of `id`, never the secret hash. */
export type ApplicationView = Omit<ApplicationsTable, "id" | "secret_hash"> & { app_id: string };

export type ApplicationFilter = "live" | "recycle_bin" | "all";

const COLUMNS = ["id", "name", "description", "status", "created_at", "updated_at", "created_by", "deleted_at", "deleted_by"] as const;

type ApplicationRow = Pick<ApplicationsTable, (typeof COLUMNS)[number]>;

/** Built field by field: a row that carries more (the secret's hash at creation) never leaks it. */
function toView(row: ApplicationRow): ApplicationView {
  return {
    app_id: row.id,
    name: row.name,
    description: row.description,
    status: row.status,
    created_at: row.created_at,
    updated_at: row.updated_at,
    created_by: row.created_by,
    deleted_at: row.deleted_at,
    deleted_by: row.deleted_by,
  };
}

function nameTaken(name: string): AuthNexusError {
  return new AuthNexusError("CONFLICT", { message: `An application named "${name}" already exists.` });
}

export interface NewApplication {
  name: string;
  description?: string | null;
}

export async function createApplication(
  ctx: CpContext,
  actor: Actor,
  input: NewApplication,
): Promise<ApplicationView & { app_secret: string }> {
  const now = ctx.clock.now();
  const secret = `ans_${randomToken(32)}`;
  const row = {
    id: newId("app"),
    name: input.name,
    description: input.description ?? null,
    secret_hash: sha256Hex(secret),
    status: "active",
    created_at: now,
    updated_at: now,
    created_by: actor.agentId,
    deleted_at: null,
    deleted_by: null,
  };
  try {
    await ctx.controlDb.insertInto("applications").values(row).execute();
  } catch (error) {
    if (isUniqueViolation(error)) throw nameTaken(input.name);
    throw error;
  }
  await publishClientCaBundle(ctx, actor, row.id);
  ctx.events.publish("config.pending", null);
  return { ...toView(row), app_secret: secret };
}

/**
 * Publishes the application's app_client_ca_bundle with the trusted app_client_ca certificates
 * (the active one, and during a CA rotation its successor or predecessor): the CP binding of
 * business mTLS (a client certificate's issuer must be in its app's bundle).
 */
export async function publishClientCaBundle(ctx: CpContext, actor: Actor, appId: string): Promise<void> {
  const pem = await trustedCaBundle(ctx.controlDb, "app_client_ca");
  await setConfig(ctx, actor, { type: "app_client_ca_bundle", scope: appScope(appId), appId }, { pem });
}

/** Every live application without a client CA bundle gets one (applications created before bundles were published). */
export async function ensureClientCaBundles(ctx: CpContext): Promise<number> {
  const missing = await ctx.controlDb
    .selectFrom("applications as a")
    .select("a.id")
    .where("a.deleted_at", "is", null)
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom("config_versions as v")
            .select("v.id")
            .where("v.config_type", "=", "app_client_ca_bundle")
            .where("v.scope", "=", sql<string>`'app:' || a.id`),
        ),
      ),
    )
    .execute();
  const system = { agentId: null, username: "system", ip: null, requestId: null };
  for (const app of missing) await publishClientCaBundle(ctx, system, app.id);
  return missing.length;
}

export async function listApplications(ctx: CpContext, filter: ApplicationFilter, request: PageRequest): Promise<Page<ApplicationView>> {
  const base = ctx.controlDb.selectFrom("applications").$call((q) => {
    if (filter === "live") return q.where("deleted_at", "is", null);
    if (filter === "recycle_bin") return q.where("deleted_at", "is not", null);
    return q;
  });
  return paginate(base, request, (q) => q.select(COLUMNS).orderBy("created_at").orderBy("id"), toView);
}

export async function getApplication(ctx: CpContext, appId: string): Promise<ApplicationView> {
  const row = await ctx.controlDb.selectFrom("applications").select(COLUMNS).where("id", "=", appId).executeTakeFirst();
  if (!row) throw new AuthNexusError("NOT_FOUND", { message: "Application not found." });
  return toView(row);
}

/** Absent (or undefined) fields are left as they are. */
export interface ApplicationPatch {
  name?: string | undefined;
  description?: string | null | undefined;
  status?: "active" | "disabled" | undefined;
}

export async function updateApplication(ctx: CpContext, appId: string, patch: ApplicationPatch): Promise<ApplicationView> {
  const current = await getApplication(ctx, appId);
  if (current.deleted_at !== null) throw new AuthNexusError("APPLICATION_DELETED");
  try {
    // deleted_at in the WHERE too: a delete that lands between the read and this write wins.
    const updated = await ctx.controlDb
      .updateTable("applications")
      .set({
        ...(patch.name !== undefined ? { name: patch.name } : {}),
        ...(patch.description !== undefined ? { description: patch.description } : {}),
        ...(patch.status !== undefined ? { status: patch.status } : {}),
        updated_at: ctx.clock.now(),
      })
      .where("id", "=", appId)
      .where("deleted_at", "is", null)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) throw new AuthNexusError("APPLICATION_DELETED");
  } catch (error) {
    if (isUniqueViolation(error) && patch.name !== undefined) throw nameTaken(patch.name);
    throw error;
  }
  if (patch.status !== undefined && patch.status !== current.status) ctx.events.publish("config.pending", null);
  return getApplication(ctx, appId);
}

export async function softDeleteApplication(ctx: CpContext, actor: Actor, appId: string): Promise<ApplicationView> {
  const now = ctx.clock.now();
  const result = await ctx.controlDb
    .updateTable("applications")
    .set({ deleted_at: now, deleted_by: actor.agentId, updated_at: now })
    .where("id", "=", appId)
    .where("deleted_at", "is", null)
    .executeTakeFirst();
  if (Number(result.numUpdatedRows) === 0) {
    await getApplication(ctx, appId);
    throw new AuthNexusError("APPLICATION_DELETED");
  }
  ctx.events.publish("config.pending", null);
  return getApplication(ctx, appId);
}

export async function restoreApplication(ctx: CpContext, appId: string): Promise<ApplicationView> {
  await requireInRecycleBin(ctx, appId);
  try {
    await ctx.controlDb
      .updateTable("applications")
      .set({ deleted_at: null, deleted_by: null, updated_at: ctx.clock.now() })
      .where("id", "=", appId)
      .execute();
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw new AuthNexusError("CONFLICT", { message: "A live application already uses this name; rename it before restoring." });
    }
    throw error;
  }
  ctx.events.publish("config.pending", null);
  return getApplication(ctx, appId);
}

/** Permanently removes an application from the recycle bin (its cloud functions cascade). */
export async function purgeApplication(ctx: CpContext, appId: string): Promise<void> {
  await requireInRecycleBin(ctx, appId);
  // Config items are keyed by scope, not by a foreign key: they go with the application.
  const scope = `app:${appId}`;
  await ctx.controlDb.transaction().execute(async (tx) => {
    await tx.deleteFrom("node_config_states").where("scope", "=", scope).execute();
    await tx.deleteFrom("config_versions").where("scope", "=", scope).execute();
    await tx.deleteFrom("applications").where("id", "=", appId).where("deleted_at", "is not", null).execute();
  });
}

async function requireInRecycleBin(ctx: CpContext, appId: string): Promise<void> {
  const app = await getApplication(ctx, appId);
  if (app.deleted_at === null) throw new AuthNexusError("APPLICATION_NOT_IN_RECYCLE_BIN");
}
