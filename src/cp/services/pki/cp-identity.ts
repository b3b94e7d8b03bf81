/**
 * The CP's own TLS identity on 9091: a cp_server certificate from cp_server_ca whose key is
 * sealed in server_secrets. It is issued at setup and renewed (at start, and by the running CP's
 * renewal check) when it is revoked, expired or within CP_CERT_RENEW_BEFORE_MS of expiry, so a
 * CP never refuses to start its node API over its own certificate. The listener trusts every
 * cp_node_client_ca a CA rotation still trusts (inventory.ts TRUSTED_CA_STATUSES), so nodes
 * holding certificates of the old and of the new CA both get in during the overlap.
 */
import { isIP } from "node:net";
import type { TlsOptions } from "node:tls";
import type { Kysely } from "kysely";
import { CP_CERT_RENEW_BEFORE_MS, LEAF_VALIDITY_DAYS } from "../../../shared/config/defaults.js";
import type { ControlSchema } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { type IssuedCertificate, issueLeafCertificate, openSecret, sealSecret } from "../../../shared/pki/index.js";
import type { CpContext } from "../context.js";
import { leafKeySecretName, loadActiveCa, recordCertificate, TRUSTED_CA_STATUSES } from "./inventory.js";

/** What the node API listener (9091) needs: its own certificate and the CA it trusts for nodes. */
export interface CpTlsIdentity {
  certPem: string;
  keyPem: string;
  /** The cp_server_ca that issued certPem, appended to the chain so nodes can verify against their bundle. */
  serverCaPem: string;
  /** Every trusted cp_node_client_ca: the only issuers accepted for node client certificates. */
  nodeClientCaPems: string[];
}

/**
 * TLS settings of the node API (9091): the CP's chain, and a client certificate from
 * cp_node_client_ca required of every peer. One definition for the CP, its tests and benchmarks.
 */
export function nodeApiTlsOptions(identity: CpTlsIdentity): TlsOptions {
  return {
    key: identity.keyPem,
    cert: `${identity.certPem.trim()}\n${identity.serverCaPem.trim()}\n`,
    ca: identity.nodeClientCaPems,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.2",
  };
}

/** The CP's 9091 names: the public CP host plus loopback names, so local nodes verify it too. */
export function cpServerHosts(publicCpUrl: string, extra: string[]): { dns: string[]; ip: string[] } {
  const hosts = new Set<string>(["localhost", "127.0.0.1", "::1", ...extra]);
  hosts.add(new URL(publicCpUrl).hostname.replace(/^\[|\]$/g, ""));
  const dns: string[] = [];
  const ip: string[] = [];
  for (const h of hosts) (isIP(h) ? ip : dns).push(h);
  return { dns, ip };
}

export async function issueCpServerCertificate(
  ctx: CpContext,
  ca: { certPem: string; keyPem: string },
  extraHosts: string[],
): Promise<IssuedCertificate> {
  const sans = cpServerHosts(ctx.publicCpUrl, extraHosts);
  return issueLeafCertificate({
    profile: "cp_server",
    issuer: ca,
    commonName: sans.dns.find((h) => h !== "localhost") ?? "authnexus-control-plane",
    sans,
    validityDays: LEAF_VALIDITY_DAYS,
    clock: ctx.clock,
  });
}

export async function storeCpServerCertificate(
  db: Kysely<ControlSchema>,
  ctx: CpContext,
  issued: IssuedCertificate,
  caId: string,
  actor: string,
): Promise<string> {
  const id = await recordCertificate(db, ctx.clock, {
    issued,
    caId,
    leafProfile: "cp_server",
    purpose: "cp_server",
    ownerType: "control_plane",
    ownerId: "cp",
    actor,
  });
  const name = leafKeySecretName(id);
  await db
    .insertInto("server_secrets")
    .values({ name, ciphertext: sealSecret(ctx.masterKey, Buffer.from(issued.keyPem ?? ""), name), created_at: ctx.clock.now() })
    .execute();
  return id;
}

async function newestCpServerCertificate(ctx: CpContext, usableOnly: boolean) {
  let query = ctx.controlDb
    .selectFrom("certificates")
    .select(["id", "ca_id", "cert_pem", "not_after", "sans"])
    .where("purpose", "=", "cp_server")
    .where("status", "!=", "revoked");
  if (usableOnly) query = query.where("status", "=", "valid").where("not_after", ">", ctx.clock.now());
  // The newest issued, not the longest-lived: after a CA switch the new certificate is the one to serve.
  return query.orderBy("not_before", "desc").orderBy("not_after", "desc").executeTakeFirst();
}

/**
 * Issues a fresh CP server certificate (keeping the previous one's names) when none is usable
 * for long, or when the one in use was not issued by the active cp_server_ca (a CA rotation
 * switched); true when it issued one.
 */
export async function ensureCpServerCertificate(ctx: CpContext): Promise<boolean> {
  const current = await newestCpServerCertificate(ctx, true);
  const activeCa = await ctx.controlDb
    .selectFrom("certificate_authorities")
    .select("id")
    .where("profile", "=", "cp_server_ca")
    .where("status", "=", "active")
    .executeTakeFirst();
  const fromActiveCa = current !== undefined && current.ca_id === activeCa?.id;
  if (current && fromActiveCa && current.not_after - ctx.clock.now() > CP_CERT_RENEW_BEFORE_MS) return false;
  const previous = current ?? (await newestCpServerCertificate(ctx, false));
  const previousSans = previous ? (JSON.parse(previous.sans) as { dns: string[]; ip: string[] }) : { dns: [], ip: [] };
  const ca = await loadActiveCa(ctx, "cp_server_ca");
  const issued = await issueCpServerCertificate(ctx, ca, [...previousSans.dns, ...previousSans.ip]);
  const id = await ctx.controlDb.transaction().execute((tx) => storeCpServerCertificate(tx, ctx, issued, ca.id, "system"));
  ctx.log
    .category("PKI")
    .info("cert.renewed", { purpose: "cp_server", certificate_id: id, replaced_certificate_id: previous?.id, not_after: issued.notAfter });
  return true;
}

export async function loadCpTlsIdentity(ctx: CpContext): Promise<CpTlsIdentity> {
  const cert = await newestCpServerCertificate(ctx, true);
  if (!cert) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: "No valid CP server certificate in the inventory." });
  const secret = await ctx.controlDb
    .selectFrom("server_secrets")
    .select("ciphertext")
    .where("name", "=", leafKeySecretName(cert.id))
    .executeTakeFirst();
  if (!secret) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: "The CP server certificate's key is missing." });
  const keyPem = openSecret(ctx.masterKey, Buffer.from(secret.ciphertext), leafKeySecretName(cert.id)).toString("utf8");
  const issuer = await ctx.controlDb
    .selectFrom("certificate_authorities")
    .select("cert_pem")
    .where("id", "=", cert.ca_id)
    .executeTakeFirst();
  if (!issuer) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: "The CP server certificate's CA is missing." });
  const clientCas = await ctx.controlDb
    .selectFrom("certificate_authorities")
    .select("cert_pem")
    .where("profile", "=", "cp_node_client_ca")
    .where("status", "in", [...TRUSTED_CA_STATUSES])
    .orderBy("created_at")
    .execute();
  if (clientCas.length === 0) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: "No trusted cp_node_client_ca." });
  return { certPem: cert.cert_pem, keyPem, serverCaPem: issuer.cert_pem, nodeClientCaPems: clientCas.map((c) => c.cert_pem) };
}
