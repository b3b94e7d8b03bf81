/**
 * Stored deploy packages. The archive holds the node's private keys and the password-hash
 * secret, so it is sealed under the master key (AAD binds it to its package id) and only ever
 * leaves through the download endpoint, which re-checks its SHA-256 before handing it out.
 */
import type { Kysely } from "kysely";
import type { ControlSchema, DeployPackagesTable } from "../../../shared/db/control-schema.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { sha256Hex } from "../../../shared/ids.js";
import { openSecret, sealSecret } from "../../../shared/pki/index.js";
import { writeNodeAudit } from "../audit/node-audit.js";
import type { Actor, CpContext } from "../context.js";
import { nodeNotFound } from "./views.js";

export function deployPackageAad(packageId: string): string {
  return `deploy-package:${packageId}`;
}

export interface NewDeployPackage {
  id: string;
  nodeId: string;
  jobId: string | null;
  archive: Buffer;
  sha256: string;
}

/** Stores a package and marks the node's older ones superseded. Pass the caller's transaction. */
export async function storeDeployPackage(
  db: Kysely<ControlSchema>,
  ctx: Pick<CpContext, "masterKey" | "clock">,
  pkg: NewDeployPackage,
): Promise<void> {
  const now = ctx.clock.now();
  await db
    .updateTable("deploy_packages")
    .set({ superseded_at: now })
    .where("node_id", "=", pkg.nodeId)
    .where("superseded_at", "is", null)
    .execute();
  await db
    .insertInto("deploy_packages")
    .values({
      id: pkg.id,
      node_id: pkg.nodeId,
      job_id: pkg.jobId,
      created_at: now,
      sha256: pkg.sha256,
      size_bytes: pkg.archive.length,
      archive_ciphertext: sealSecret(ctx.masterKey, pkg.archive, deployPackageAad(pkg.id)),
      downloaded_at: null,
      superseded_at: null,
    })
    .execute();
}

/** A package as the API lists it: never the archive bytes. */
export type DeployPackageView = Omit<DeployPackagesTable, "archive_ciphertext"> & { current: boolean };

const VIEW_COLUMNS = ["id", "node_id", "job_id", "created_at", "sha256", "size_bytes", "downloaded_at", "superseded_at"] as const;

async function assertNodeExists(db: Kysely<ControlSchema>, nodeId: string): Promise<{ name: string }> {
  const node = await db.selectFrom("nodes").select("name").where("id", "=", nodeId).executeTakeFirst();
  if (!node) throw nodeNotFound();
  return node;
}

/** Newest first; never the archive bytes. */
export async function listDeployPackages(ctx: CpContext, nodeId: string): Promise<{ items: DeployPackageView[] }> {
  await assertNodeExists(ctx.controlDb, nodeId);
  const rows = await ctx.controlDb
    .selectFrom("deploy_packages")
    .select(VIEW_COLUMNS)
    .where("node_id", "=", nodeId)
    .orderBy("created_at", "desc")
    .orderBy("id", "desc")
    .execute();
  return { items: rows.map((r) => ({ ...r, current: r.superseded_at === null })) };
}

export interface DownloadedPackage {
  archive: Buffer;
  fileName: string;
  sha256: string;
}

/** The package's bytes; records the download (downloaded_at and a node audit row). */
export async function downloadDeployPackage(ctx: CpContext, actor: Actor, nodeId: string, packageId: string): Promise<DownloadedPackage> {
  const node = await assertNodeExists(ctx.controlDb, nodeId);
  const row = await ctx.controlDb
    .selectFrom("deploy_packages")
    .select(["id", "sha256", "archive_ciphertext", "superseded_at"])
    .where("id", "=", packageId)
    .where("node_id", "=", nodeId)
    .executeTakeFirst();
  if (!row) {
    const any = await ctx.controlDb.selectFrom("deploy_packages").select("id").where("node_id", "=", nodeId).executeTakeFirst();
    if (!any)
      throw new AuthNexusError("NODE_NOT_PROVISIONED", {
        message: "The node has no deploy package yet: its onboarding job has not finished.",
      });
    throw new AuthNexusError("NOT_FOUND", { message: "Deploy package not found." });
  }
  const archive = openSecret(ctx.masterKey, Buffer.from(row.archive_ciphertext), deployPackageAad(row.id));
  if (sha256Hex(archive) !== row.sha256)
    throw new AuthNexusError("INTERNAL", { message: "deploy package does not match its recorded SHA-256", detail: { package_id: row.id } });
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (tx) => {
    await tx.updateTable("deploy_packages").set({ downloaded_at: now }).where("id", "=", row.id).execute();
    await writeNodeAudit(tx, ctx.clock, {
      nodeId,
      event: "package.downloaded",
      actor,
      detail: { package_id: row.id, superseded: row.superseded_at !== null },
    });
  });
  ctx.log.category("PKI").info("package.downloaded", { node_id: nodeId, package_id: row.id, agent_id: actor.agentId });
  return { archive, fileName: `authnexus-node-${fileSafe(node.name)}-${row.id}.tar.gz`, sha256: row.sha256 };
}

function fileSafe(name: string): string {
  return (
    name
      .replace(/[^A-Za-z0-9._-]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, 64) || "node"
  );
}
