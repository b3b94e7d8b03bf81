/**
 * Channel 4's view of the inventory: which CA a CertID names (by issuer name and key hash, SHA-1
 * or SHA-256) and what the inventory says of the serial. Signing keys are unsealed once per CA
 * and kept in memory; statuses are read from the Control DB on every request (no caching), so a
 * revocation is visible to the very next OCSP request.
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import { AuthNexusError } from "../../shared/errors/index.js";
import { type CaProfile, isRevocationReason, revocationReasonCode, x509 } from "../../shared/pki/index.js";
import { type CertIdQuery, computeIssuerHashes, type OcspAsyncResolver, type OcspCertStatus, type ResolvedIssuer } from "../ocsp/index.js";
import type { CpContext } from "./context.js";
import { loadActiveCa } from "./pki-inventory.js";

interface KnownIssuer {
  caId: string;
  certDer: Buffer;
  privateKey: KeyObject;
  hashes: ReturnType<typeof computeIssuerHashes>;
}

export async function loadOcspIssuers(ctx: CpContext): Promise<KnownIssuer[]> {
  const rows = await ctx.controlDb.selectFrom("certificate_authorities").select(["id", "profile"]).where("status", "=", "active").execute();
  const issuers: KnownIssuer[] = [];
  for (const row of rows) {
    const ca = await loadActiveCa(ctx, row.profile as CaProfile);
    const certDer = Buffer.from(new x509.X509Certificate(ca.certPem).rawData);
    issuers.push({ caId: ca.id, certDer, privateKey: createPrivateKey(ca.keyPem), hashes: computeIssuerHashes(certDer) });
  }
  return issuers;
}

function matchIssuer(issuers: KnownIssuer[], query: CertIdQuery): KnownIssuer | undefined {
  if (query.hashAlgorithm !== "sha1" && query.hashAlgorithm !== "sha256") return undefined;
  const algorithm = query.hashAlgorithm;
  return issuers.find((i) => i.hashes[algorithm].nameHash.equals(query.issuerNameHash) && i.hashes[algorithm].keyHash.equals(query.issuerKeyHash));
}

export function createInventoryResolver(ctx: CpContext, issuers: KnownIssuer[]): OcspAsyncResolver {
  return async (query): Promise<ResolvedIssuer | null> => {
    const issuer = matchIssuer(issuers, query);
    if (!issuer) return null;
    const row = await ctx.controlDb
      .selectFrom("certificates")
      .select(["status", "revoked_at", "revocation_reason"])
      .where("ca_id", "=", issuer.caId)
      .where("serial_hex", "=", query.serialHex)
      .executeTakeFirst();
    return { signer: { certDer: issuer.certDer, privateKey: issuer.privateKey }, status: toStatus(row) };
  };
}

function toStatus(row: { status: string; revoked_at: number | null; revocation_reason: string | null } | undefined): OcspCertStatus {
  if (!row) return { kind: "unknown" };
  if (row.status !== "revoked") return { kind: "good" };
  if (row.revoked_at === null) throw new AuthNexusError("INTERNAL", { message: "revoked certificate without a revocation time" });
  const reason = row.revocation_reason && isRevocationReason(row.revocation_reason) ? revocationReasonCode(row.revocation_reason) : undefined;
  return reason === undefined ? { kind: "revoked", revokedAt: row.revoked_at } : { kind: "revoked", revokedAt: row.revoked_at, reason };
}
