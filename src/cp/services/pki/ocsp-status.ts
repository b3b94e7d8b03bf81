/**
 * Channel 4's view of the inventory: which CA a CertID names (by issuer name and key hash, SHA-1
 * or SHA-256) and what the inventory says of the serial. Signing keys are unsealed once per CA
 * and kept in memory; statuses are read from the Control DB on every request (no caching), so a
 * revocation is visible to the very next OCSP request. A certificate owned by a disabled node
 * answers revoked (certificateHold, at the node's disabled_at) until the node is enabled again.
 *
 * Every CA of the inventory is answered for except an abandoned one (a rotation rolled back):
 * during a CA rotation both the CA being replaced and its successor have certificates in use.
 * The list of CAs is read again when a request names an issuer it does not hold (at most once
 * per OCSP_ISSUER_MISS_REFRESH_MS: a CA created since, on this CP process or another) and every
 * OCSP_ISSUER_MAX_AGE_MS (a CA abandoned since).
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import type { Kysely } from "kysely";
import { type ControlSchema, precompiled } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { type CaProfile, isRevocationReason, openSecret, revocationReasonCode, x509 } from "../../../shared/pki/index.js";
import { computeIssuerHashes, type OcspCertStatus } from "../../../shared/pki/ocsp/index.js";
import type { CertIdQuery, OcspAsyncResolver, ResolvedIssuer } from "../../ocsp/index.js";
import type { CpContext } from "../context.js";
import { caKeyAad } from "./inventory.js";

/** A request naming an unknown issuer reads the CA list again at most this often (ms). */
export const OCSP_ISSUER_MISS_REFRESH_MS = 1_000;
/** The CA list is read again when older than this (ms), so an abandoned CA stops being answered for. */
export const OCSP_ISSUER_MAX_AGE_MS = 60_000;
/** CA statuses the responder does not answer for. */
const UNANSWERED_CA_STATUSES = ["abandoned"];

interface KnownIssuer {
  caId: string;
  certDer: Buffer;
  privateKey: KeyObject;
  hashes: ReturnType<typeof computeIssuerHashes>;
}

/** Every CA that is not abandoned; keys already unsealed in `known` are reused. */
export async function loadOcspIssuers(ctx: CpContext, known: readonly KnownIssuer[] = []): Promise<KnownIssuer[]> {
  const rows = await ctx.controlDb
    .selectFrom("certificate_authorities")
    .select(["id", "profile", "cert_pem", "key_ciphertext"])
    .where("status", "not in", UNANSWERED_CA_STATUSES)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
  const byId = new Map(known.map((i) => [i.caId, i]));
  const issuers: KnownIssuer[] = [];
  for (const row of rows) {
    const loaded = byId.get(row.id);
    if (loaded) {
      issuers.push(loaded);
      continue;
    }
    const keyPem = openSecret(ctx.masterKey, Buffer.from(row.key_ciphertext), caKeyAad(row.profile as CaProfile, row.id)).toString("utf8");
    const certDer = Buffer.from(new x509.X509Certificate(row.cert_pem).rawData);
    issuers.push({ caId: row.id, certDer, privateKey: createPrivateKey(keyPem), hashes: computeIssuerHashes(certDer) });
  }
  return issuers;
}

function matchIssuer(issuers: KnownIssuer[], query: CertIdQuery): KnownIssuer | undefined {
  if (query.hashAlgorithm !== "sha1" && query.hashAlgorithm !== "sha256") return undefined;
  const algorithm = query.hashAlgorithm;
  return issuers.find(
    (i) => i.hashes[algorithm].nameHash.equals(query.issuerNameHash) && i.hashes[algorithm].keyHash.equals(query.issuerKeyHash),
  );
}

export function createInventoryResolver(ctx: CpContext, initial: KnownIssuer[]): OcspAsyncResolver {
  let issuers = initial;
  let loadedAt = ctx.clock.now();
  let lastMissRefresh = Number.NEGATIVE_INFINITY;
  let refreshing: Promise<void> | null = null;
  /** One reload at a time; a failed reload keeps the list it had until the next one is due (the status query reports an outage). */
  const refresh = (): Promise<void> => {
    refreshing ??= loadOcspIssuers(ctx, issuers)
      .then(
        (loaded) => {
          issuers = loaded;
        },
        () => undefined,
      )
      .then(() => {
        loadedAt = ctx.clock.now();
      })
      .finally(() => {
        refreshing = null;
      });
    return refreshing;
  };
  return async (query): Promise<ResolvedIssuer | null> => {
    const now = ctx.clock.now();
    if (now - loadedAt >= OCSP_ISSUER_MAX_AGE_MS) await refresh();
    let issuer = matchIssuer(issuers, query);
    if (!issuer && now - lastMissRefresh >= OCSP_ISSUER_MISS_REFRESH_MS) {
      lastMissRefresh = now;
      await refresh();
      issuer = matchIssuer(issuers, query);
    }
    if (!issuer) return null;
    const row = (await statusQuery(ctx.controlDb, { caId: issuer.caId, serialHex: query.serialHex })).rows[0];
    return { signer: { certDer: issuer.certDer, privateKey: issuer.privateKey }, status: toStatus(row, ctx.clock.now()) };
  };
}

/** One precompiled query per request: the owning node comes along so a disabled node answers revoked. */
const statusQuery = precompiled<{ caId: string; serialHex: string }, StatusRow>((db: Kysely<ControlSchema>, p) =>
  db
    .selectFrom("certificates")
    .leftJoin("nodes", (join) => join.onRef("nodes.id", "=", "certificates.owner_id").on("certificates.owner_type", "=", "node"))
    .select([
      "certificates.status",
      "certificates.revoked_at",
      "certificates.revocation_reason",
      "nodes.status as node_status",
      "nodes.disabled_at as node_disabled_at",
    ])
    .where("certificates.ca_id", "=", p.caId)
    .where("certificates.serial_hex", "=", p.serialHex),
);

interface StatusRow {
  status: string;
  revoked_at: number | null;
  revocation_reason: string | null;
  node_status: string | null;
  node_disabled_at: number | null;
}

function toStatus(row: StatusRow | undefined, now: number): OcspCertStatus {
  if (!row) return { kind: "unknown" };
  // A disabled node's certificates are on hold (reversible): enabling the node makes them good again.
  if (row.status !== "revoked" && row.node_status === "disabled") {
    return { kind: "revoked", revokedAt: row.node_disabled_at ?? now, reason: revocationReasonCode("certificateHold") };
  }
  if (row.status !== "revoked") return { kind: "good" };
  if (row.revoked_at === null) throw new AuthNexusError("INTERNAL", { message: "revoked certificate without a revocation time" });
  const reason =
    row.revocation_reason && isRevocationReason(row.revocation_reason) ? revocationReasonCode(row.revocation_reason) : undefined;
  return reason === undefined ? { kind: "revoked", revokedAt: row.revoked_at } : { kind: "revoked", revokedAt: row.revoked_at, reason };
}
