/**
 * A provisioned node for tests that need one: created through the real service (node row +
 * NodeOnboard job), onboarded by the real job worker, and its deploy package unsealed and
 * unpacked with the system `tar` into a temp directory, ready for
 * `serve-node --agent <dir>/node_agent.json`. The setup must have completed on `cp`.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { createPkiJobWorker } from "../../src/cp/jobs/index.js";
import type { Actor, CpContext } from "../../src/cp/services/context.js";
import { deployPackageAad } from "../../src/cp/services/nodes/deploy-packages.js";
import { createNode } from "../../src/cp/services/nodes/lifecycle.js";
import { AGENT_FILE_NAME, type AgentPackage, agentPackageSchema } from "../../src/shared/node-protocol/index.js";
import { openSecret } from "../../src/shared/pki/index.js";
import { makeTempDir } from "./temp-dir.js";

export interface ProvisionNodeOptions {
  name?: string;
  /** DNS name or IP literal for the business certificate (default "localhost"). */
  host?: string;
  businessPort?: number;
  actor?: Actor;
}

export interface ProvisionedNode {
  nodeId: string;
  jobId: string;
  packageId: string;
  /** The .tar.gz exactly as the download endpoint serves it. */
  archive: Buffer;
  /** Where the package was unpacked; node_agent.json sits at its root. */
  dir: string;
  agentJsonPath: string;
  manifest: AgentPackage;
  /** Every unpacked file by its path relative to `dir` ("tls/node_client.key", …). */
  files: Record<string, Buffer>;
  /** Removes the unpacked directory. */
  cleanup(): Promise<void>;
}

const TEST_ACTOR: Actor = { agentId: null, username: "test-helper", ip: null, requestId: null };
/** More than enough: the job succeeds on its first attempt unless a test breaks the PKI. */
const MAX_WORKER_ROUNDS = 20;

let counter = 0;

export async function provisionNode(cp: { ctx: CpContext }, options: ProvisionNodeOptions = {}): Promise<ProvisionedNode> {
  const { ctx } = cp;
  counter += 1;
  const created = await createNode(ctx, options.actor ?? TEST_ACTOR, {
    name: options.name ?? `test-node-${process.pid}-${counter}`,
    host: options.host ?? "localhost",
    businessPort: options.businessPort ?? 8443,
  });
  await runJobToCompletion(ctx, created.job_id);
  const row = await ctx.controlDb
    .selectFrom("deploy_packages")
    .select(["id", "archive_ciphertext"])
    .where("node_id", "=", created.id)
    .where("superseded_at", "is", null)
    .executeTakeFirstOrThrow();
  const archive = openSecret(ctx.masterKey, Buffer.from(row.archive_ciphertext), deployPackageAad(row.id));
  const unpacked = await unpackPackage(archive);
  return { nodeId: created.id, jobId: created.job_id, packageId: row.id, archive, ...unpacked };
}

/** Runs the job worker until `jobId` has succeeded; throws with the job's last error otherwise. */
export async function runJobToCompletion(ctx: CpContext, jobId: string): Promise<void> {
  const worker = createPkiJobWorker(ctx);
  for (let round = 0; round < MAX_WORKER_ROUNDS; round++) {
    const job = await ctx.controlDb
      .selectFrom("pki_jobs")
      .select(["status", "last_error"])
      .where("id", "=", jobId)
      .executeTakeFirstOrThrow();
    if (job.status === "succeeded") return;
    if (job.status === "failed" || job.status === "cancelled") throw new Error(`job ${jobId} ended ${job.status}: ${job.last_error}`);
    if ((await worker.runOnce()) === null) throw new Error(`job ${jobId} is ${job.status} but not due (last error: ${job.last_error})`);
  }
  throw new Error(`job ${jobId} did not finish in ${MAX_WORKER_ROUNDS} worker rounds`);
}

/** Unpacks a deploy package with the system tar and validates its manifest. */
export async function unpackPackage(
  archive: Buffer,
): Promise<Pick<ProvisionedNode, "dir" | "agentJsonPath" | "manifest" | "files" | "cleanup">> {
  const temp = await makeTempDir("authnexus-node-package");
  const archivePath = join(temp.path, "package.tar.gz");
  const dir = join(temp.path, "node");
  writeFileSync(archivePath, archive);
  const run = spawnSync("sh", ["-c", 'mkdir -p "$2" && tar -xzf "$1" -C "$2"', "sh", archivePath, dir], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`tar -xzf failed: ${run.stderr}`);
  const agentJsonPath = join(dir, AGENT_FILE_NAME);
  const manifest = agentPackageSchema.parse(JSON.parse(readFileSync(agentJsonPath, "utf8")));
  return { dir, agentJsonPath, manifest, files: readTree(dir), cleanup: temp.cleanup };
}

function readTree(root: string, dir = root, out: Record<string, Buffer> = {}): Record<string, Buffer> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) readTree(root, path, out);
    else out[relative(root, path)] = readFileSync(path);
  }
  return out;
}
