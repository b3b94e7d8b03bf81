/**
 * What onboarding and rotation both do for a node: issue its business server certificate
 * (tcp_server_ca, must-staple, the host as SAN, AIA → public OCSP URL) and its CP client
 * certificate (cp_node_client_ca, URI SAN urn:authnexus:node:<nid>), build the deploy package
 * holding them, and record both certificates inside the caller's transaction. Signing leaves no
 * trace before that transaction commits, so a job that dies half-way simply starts over.
 */
import type { Kysely } from "kysely";
import { LEAF_VALIDITY_DAYS } from "../../shared/config/defaults.js";
import type { ControlSchema, NodesTable } from "../../shared/db/control-schema.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import { type CaProfile, type IssuedCertificate, issueLeafCertificate, nodeUri } from "../../shared/pki/index.js";
import { buildDeployPackage } from "../packages/deploy-package.js";
import type { CpContext } from "../services/context.js";
import { canonicalNodeHost } from "../services/nodes/lifecycle.js";
import { loadActiveCa, recordCertificate, type StoredCa, trustedCaBundle } from "../services/pki/inventory.js";
import { loadPasswordHashKey } from "../services/setup/setup.js";
import { PermanentJobError } from "./worker.js";

/** X.520 ub-common-name. */
const MAX_COMMON_NAME = 64;

export interface NodeCredentials {
  server: IssuedCertificate & { keyPem: string };
  client: IssuedCertificate & { keyPem: string };
  serverCa: StoredCa;
  clientCa: StoredCa;
}

export async function issueNodeCredentials(ctx: CpContext, node: NodesTable): Promise<NodeCredentials> {
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

/** The deploy package carrying these credentials (what a fresh install or a re-install of the node uses). */
export async function buildNodePackage(
  ctx: CpContext,
  node: NodesTable,
  credentials: NodeCredentials,
  packageId: string,
): Promise<{ archive: Buffer; sha256: string }> {
  return buildDeployPackage({
    nodeId: node.id,
    nodeName: node.name,
    packageId,
    createdAt: ctx.clock.now(),
    cpUrl: ctx.publicCpUrl,
    ocspUrl: ctx.publicOcspUrl,
    business: { host: node.host, port: node.business_port },
    // Every cp_server_ca the CP may present during a rotation of that CA, not only the active one.
    cpServerCaPem: await trustedCaBundle(ctx.controlDb, "cp_server_ca"),
    client: credentials.client,
    server: credentials.server,
    tcpServerCaPem: credentials.serverCa.certPem,
    appClientCaPem: await activeCaPem(ctx, "app_client_ca"),
    passwordHashKey: await loadPasswordHashKey(ctx),
  });
}

/** Records both certificates (each with its PKI audit row) inside `tx`; returns their ids. */
export async function recordNodeCredentials(
  tx: Kysely<ControlSchema>,
  ctx: CpContext,
  nodeId: string,
  credentials: NodeCredentials,
  by: { actor: string; jobId: string },
): Promise<{ serverCertId: string; clientCertId: string }> {
  const serverCertId = await recordCertificate(tx, ctx.clock, {
    issued: credentials.server,
    caId: credentials.serverCa.id,
    leafProfile: "node_server",
    purpose: "node_server",
    ownerType: "node",
    ownerId: nodeId,
    actor: by.actor,
    jobId: by.jobId,
  });
  const clientCertId = await recordCertificate(tx, ctx.clock, {
    issued: credentials.client,
    caId: credentials.clientCa.id,
    leafProfile: "node_client",
    purpose: "node_client",
    ownerType: "node",
    ownerId: nodeId,
    actor: by.actor,
    jobId: by.jobId,
  });
  return { serverCertId, clientCertId };
}

/** The [PKI] lines for what a job issued, after its transaction committed. */
export function logNodeCredentialsIssued(
  ctx: CpContext,
  nodeId: string,
  credentials: NodeCredentials,
  ids: { serverCertId: string; clientCertId: string },
): void {
  const log = ctx.log.category("PKI");
  for (const [purpose, issued, id] of [
    ["node_server", credentials.server, ids.serverCertId],
    ["node_client", credentials.client, ids.clientCertId],
  ] as const) {
    log.info("cert.issued", { purpose, node_id: nodeId, certificate_id: id, serial: issued.serialHex, not_after: issued.notAfter });
  }
}

function withKey(issued: IssuedCertificate): IssuedCertificate & { keyPem: string } {
  if (issued.keyPem === null) throw new AuthNexusError("INTERNAL", { message: "issued node certificate came without its key" });
  return { ...issued, keyPem: issued.keyPem };
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
