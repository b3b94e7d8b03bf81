/**
 * The NodeOnboard job: issues the node's business server certificate (tcp_server_ca,
 * must-staple, the host as SAN, AIA → public OCSP URL) and its CP client certificate
 * (cp_node_client_ca, URI SAN urn:authnexus:node:<nid>), builds the deploy package, and then
 * records everything in ONE transaction together with the job's success. Signing happens before
 * that transaction and leaves no trace, so a crash anywhere before commit leaves nothing behind
 * and a retry simply starts over.
 */
import type { Kysely } from "kysely";
import { z } from "zod";
import { LEAF_VALIDITY_DAYS } from "../../shared/config/defaults.js";
import type { ControlSchema, NodesTable } from "../../shared/db/control-schema.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import { newId } from "../../shared/ids.js";
import { type CaProfile, type IssuedCertificate, issueLeafCertificate, nodeUri } from "../../shared/pki/index.js";
import { buildDeployPackage } from "../packages/deploy-package.js";
import { writeNodeAudit } from "../services/audit/node-audit.js";
import { writePkiAudit } from "../services/audit/pki-audit.js";
import type { CpContext } from "../services/context.js";
import { storeDeployPackage } from "../services/nodes/deploy-packages.js";
import { canonicalNodeHost } from "../services/nodes/lifecycle.js";
import { loadActiveCa, recordCertificate, type StoredCa } from "../services/pki/inventory.js";
import { loadPasswordHashKey } from "../services/setup/setup.js";
import { type JobHandler, type JobRun, PermanentJobError } from "./worker.js";

const JOB_ACTOR = "job:node_onboard";
const payloadSchema = z.object({ node_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/) });
/** X.520 ub-common-name. */
const MAX_COMMON_NAME = 64;

export function nodeOnboardHandler(ctx: CpContext): JobHandler {
  return (run) => onboardNode(ctx, run);
}

interface IssuedPair {
  server: IssuedCertificate & { keyPem: string };
  client: IssuedCertificate & { keyPem: string };
  serverCa: StoredCa;
  clientCa: StoredCa;
}

async function onboardNode(ctx: CpContext, run: JobRun): Promise<void> {
  const log = ctx.log.category("PKI");
  const payload = payloadSchema.safeParse(run.job.payload);
  if (!payload.success) throw new PermanentJobError("job payload does not name a node");
  const nodeId = payload.data.node_id;
  const node = await ctx.controlDb.selectFrom("nodes").selectAll().where("id", "=", nodeId).executeTakeFirst();
  if (!node) throw new PermanentJobError("node no longer exists");

  const certs = await issueNodeCertificates(ctx, node);
  const packageId = newId("pkg");
  const pkg = buildDeployPackage({
    nodeId,
    nodeName: node.name,
    packageId,
    createdAt: ctx.clock.now(),
    cpUrl: ctx.publicCpUrl,
    ocspUrl: ctx.publicOcspUrl,
    business: { host: node.host, port: node.business_port },
    cpServerCaPem: await activeCaPem(ctx, "cp_server_ca"),
    client: certs.client,
    server: certs.server,
    tcpServerCaPem: certs.serverCa.certPem,
    appClientCaPem: await activeCaPem(ctx, "app_client_ca"),
    passwordHashKey: await loadPasswordHashKey(ctx),
  });

  const recorded = await ctx.controlDb.transaction().execute(async (tx) => {
    // Touching the node first takes its row lock: a concurrent delete either ran first (we
    // stop here) or waits and then revokes what this transaction recorded.
    const touched = await tx.updateTable("nodes").set({ updated_at: ctx.clock.now() }).where("id", "=", nodeId).executeTakeFirst();
    if (Number(touched.numUpdatedRows) !== 1) throw new PermanentJobError("node was deleted while its onboarding job ran");
    const serverCertId = await recordCertificate(tx, ctx.clock, {
      issued: certs.server,
      caId: certs.serverCa.id,
      leafProfile: "node_server",
      purpose: "node_server",
      ownerType: "node",
      ownerId: nodeId,
      actor: JOB_ACTOR,
      jobId: run.job.id,
    });
    const clientCertId = await recordCertificate(tx, ctx.clock, {
      issued: certs.client,
      caId: certs.clientCa.id,
      leafProfile: "node_client",
      purpose: "node_client",
      ownerType: "node",
      ownerId: nodeId,
      actor: JOB_ACTOR,
      jobId: run.job.id,
    });
    const status = await attachCertificates(tx, ctx, nodeId, serverCertId, clientCertId);
    await storeDeployPackage(tx, ctx, { id: packageId, nodeId, jobId: run.job.id, archive: pkg.archive, sha256: pkg.sha256 });
    await writePkiAudit(tx, ctx.clock, {
      event: "package.built",
      jobId: run.job.id,
      actor: JOB_ACTOR,
      detail: { node_id: nodeId, package_id: packageId, sha256: pkg.sha256, job_id: run.job.id },
    });
    await writeNodeAudit(tx, ctx.clock, {
      nodeId,
      event: "node.provisioned",
      actor: JOB_ACTOR,
      detail: { job_id: run.job.id, package_id: packageId, server_cert_id: serverCertId, client_cert_id: clientCertId, status },
    });
    const result = {
      node_id: nodeId,
      server_cert_id: serverCertId,
      client_cert_id: clientCertId,
      package_id: packageId,
      package_sha256: pkg.sha256,
      node_status: status,
    };
    await run.complete(tx, result);
    return result;
  });

  log.info("cert.issued", {
    purpose: "node_server",
    node_id: nodeId,
    certificate_id: recorded.server_cert_id,
    serial: certs.server.serialHex,
    not_after: certs.server.notAfter,
  });
  log.info("cert.issued", {
    purpose: "node_client",
    node_id: nodeId,
    certificate_id: recorded.client_cert_id,
    serial: certs.client.serialHex,
    not_after: certs.client.notAfter,
  });
  log.info("package.built", {
    node_id: nodeId,
    package_id: packageId,
    sha256: pkg.sha256,
    size_bytes: pkg.archive.length,
    job_id: run.job.id,
  });
}

async function issueNodeCertificates(ctx: CpContext, node: NodesTable): Promise<IssuedPair> {
  const host = canonicalNodeHost(node.host);
  if (!host) throw new PermanentJobError("the node's host cannot be put in a certificate");
  const serverCa = await loadActiveCa(ctx, "tcp_server_ca");
  const clientCa = await loadActiveCa(ctx, "cp_node_client_ca");
  const server = await issueLeafCertificate({
    profile: "node_server",
    issuer: serverCa,
    commonName: host.value.length <= MAX_COMMON_NAME ? host.value : node.id,
    sans: host.kind === "dns" ? { dns: [host.value] } : { ip: [host.value] },
    ocspUrl: ctx.publicOcspUrl,
    validityDays: LEAF_VALIDITY_DAYS,
    clock: ctx.clock,
  });
  const client = await issueLeafCertificate({
    profile: "node_client",
    issuer: clientCa,
    commonName: node.id,
    sans: { uri: [nodeUri(node.id)] },
    ocspUrl: ctx.publicOcspUrl,
    validityDays: LEAF_VALIDITY_DAYS,
    clock: ctx.clock,
  });
  return { server: withKey(server), client: withKey(client), serverCa, clientCa };
}

function withKey(issued: IssuedCertificate): IssuedCertificate & { keyPem: string } {
  if (issued.keyPem === null) throw new AuthNexusError("INTERNAL", { message: "issued node certificate came without its key" });
  return { ...issued, keyPem: issued.keyPem };
}

/** Sets the node's certificates; provisioning → active, but a node disabled meanwhile stays disabled. */
async function attachCertificates(
  tx: Kysely<ControlSchema>,
  ctx: CpContext,
  nodeId: string,
  serverCertId: string,
  clientCertId: string,
): Promise<string> {
  const current = await tx.selectFrom("nodes").select(["status", "client_cert_id"]).where("id", "=", nodeId).executeTakeFirstOrThrow();
  const status = current.status === "disabled" ? "disabled" : "active";
  await tx
    .updateTable("nodes")
    .set({
      server_cert_id: serverCertId,
      client_cert_id: clientCertId,
      previous_client_cert_id: current.client_cert_id,
      status,
      updated_at: ctx.clock.now(),
    })
    .where("id", "=", nodeId)
    .execute();
  return status;
}

async function activeCaPem(ctx: CpContext, profile: CaProfile): Promise<string> {
  const row = await ctx.controlDb
    .selectFrom("certificate_authorities")
    .select("cert_pem")
    .where("profile", "=", profile)
    .where("status", "=", "active")
    .executeTakeFirst();
  if (!row) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: `No active ${profile} exists.` });
  return row.cert_pem;
}
