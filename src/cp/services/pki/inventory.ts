/**
 * The Control DB's certificate inventory: the four CAs (private keys sealed with the master
 * key), every certificate the CP issues, revocation, and the PKI audit trail. Issuing always
 * goes through here so that no certificate exists that the inventory (and so OCSP) does not
 * know about.
 */
import type { Kysely } from "kysely";
import type { ControlSchema } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import {
  type CaProfile,
  type IssuedCertificate,
  LEAF_PROFILES,
  type LeafProfile,
  openSecret,
  type RevocationReason,
  sealSecret,
} from "../../../shared/pki/index.js";
import type { Clock } from "../../../shared/time/index.js";
import { writePkiAudit } from "../audit/pki-audit.js";
import type { CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";

export function caKeyAad(profile: CaProfile, caId: string): string {
  return `ca-key:${profile}:${caId}`;
}

export function leafKeySecretName(certificateId: string): string {
  return `leaf-key:${certificateId}`;
}

/**
 * A CA's lifecycle. Setup creates each profile's CA `active`; a CA rotation (./ca-rotations.ts)
 * creates the successor `pending`, makes it `next` when the trust bundles holding it are
 * published, `active` at the switch (the one it replaces becomes `retiring`), and ends with the
 * old one `retired`, or, rolled back, with the successor `abandoned`. At most one CA per profile
 * is `active` (a partial unique index): it is the one that signs.
 */
export const CA_STATUSES = ["pending", "next", "active", "retiring", "retired", "abandoned"] as const;
export type CaStatus = (typeof CA_STATUSES)[number];
/** The CAs of a profile that the trust published for it holds (oldest first). */
export const TRUSTED_CA_STATUSES: readonly CaStatus[] = ["next", "active", "retiring"];

export interface StoredCa {
  id: string;
  profile: CaProfile;
  certPem: string;
  keyPem: string;
}

/** Inserts a freshly created root CA, its key sealed under the master key; `active` unless a rotation creates its successor. */
export async function recordCa(
  db: Kysely<ControlSchema>,
  clock: Clock,
  masterKey: Buffer,
  profile: CaProfile,
  ca: IssuedCertificate,
  actor: string,
  status: CaStatus = "active",
): Promise<string> {
  if (!ca.keyPem) throw new AuthNexusError("INTERNAL", { message: "a CA must come with its private key" });
  const id = newId("ca");
  await db
    .insertInto("certificate_authorities")
    .values({
      id,
      profile,
      status,
      subject: ca.subject,
      serial_hex: ca.serialHex,
      cert_pem: ca.certPem,
      key_ciphertext: sealSecret(masterKey, Buffer.from(ca.keyPem), caKeyAad(profile, id)),
      not_before: ca.notBefore,
      not_after: ca.notAfter,
      fingerprint_sha256: ca.fingerprintSha256,
      created_at: clock.now(),
    })
    .execute();
  await writePkiAudit(db, clock, {
    event: "ca.created",
    caProfile: profile,
    profile,
    serialHex: ca.serialHex,
    actor,
    detail: { subject: ca.subject, status },
  });
  return id;
}

export async function loadActiveCa(ctx: Pick<CpContext, "controlDb" | "masterKey">, profile: CaProfile): Promise<StoredCa> {
  const row = await ctx.controlDb
    .selectFrom("certificate_authorities")
    .select(["id", "cert_pem", "key_ciphertext"])
    .where("profile", "=", profile)
    .where("status", "=", "active")
    .executeTakeFirst();
  if (!row) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: `No active ${profile} exists.` });
  const keyPem = openSecret(ctx.masterKey, Buffer.from(row.key_ciphertext), caKeyAad(profile, row.id)).toString("utf8");
  return { id: row.id, profile, certPem: row.cert_pem, keyPem };
}

/** The trust published for a profile: its CAs in TRUSTED_CA_STATUSES, oldest first, as one PEM bundle. */
export async function trustedCaBundle(db: Kysely<ControlSchema>, profile: CaProfile): Promise<string> {
  return (await trustedCas(db, profile)).bundle;
}

/** The same, with the CA ids the bundle holds. */
export async function trustedCas(db: Kysely<ControlSchema>, profile: CaProfile): Promise<{ ids: string[]; bundle: string }> {
  const rows = await db
    .selectFrom("certificate_authorities")
    .select(["id", "cert_pem"])
    .where("profile", "=", profile)
    .where("status", "in", TRUSTED_CA_STATUSES)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
  if (rows.length === 0) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: `No active ${profile} exists.` });
  return {
    ids: rows.map((r) => r.id),
    bundle: rows.map((r) => (r.cert_pem.endsWith("\n") ? r.cert_pem : `${r.cert_pem}\n`)).join(""),
  };
}

export interface CertificateRecord {
  issued: IssuedCertificate;
  caId: string;
  leafProfile: LeafProfile;
  purpose: string;
  ownerType: string | null;
  ownerId: string | null;
  actor: string;
  /** The PKI job that issued it, when one did. */
  jobId?: string;
}

export async function recordCertificate(db: Kysely<ControlSchema>, clock: Clock, record: CertificateRecord): Promise<string> {
  const id = newId("crt");
  const caProfile = LEAF_PROFILES[record.leafProfile].ca;
  await db
    .insertInto("certificates")
    .values({
      id,
      ca_id: record.caId,
      ca_profile: caProfile,
      leaf_profile: record.leafProfile,
      serial_hex: record.issued.serialHex,
      subject: record.issued.subject,
      sans: JSON.stringify(record.issued.sans),
      not_before: record.issued.notBefore,
      not_after: record.issued.notAfter,
      purpose: record.purpose,
      owner_type: record.ownerType,
      owner_id: record.ownerId,
      status: "valid",
      revoked_at: null,
      revocation_reason: null,
      cert_pem: record.issued.certPem,
      fingerprint_sha256: record.issued.fingerprintSha256,
      created_at: clock.now(),
    })
    .execute();
  await writePkiAudit(db, clock, {
    event: "cert.issued",
    certificateId: id,
    caProfile,
    serialHex: record.issued.serialHex,
    profile: record.leafProfile,
    ...(record.jobId ? { jobId: record.jobId } : {}),
    actor: record.actor,
    detail: { purpose: record.purpose, subject: record.issued.subject, owner_type: record.ownerType, owner_id: record.ownerId },
  });
  return id;
}

export interface CertificateView {
  id: string;
  serial: string;
  ca_profile: string;
  profile: string;
  subject: string;
  sans: { dns: string[]; ip: string[]; uri: string[] };
  not_before: number;
  not_after: number;
  purpose: string;
  owner_type: string | null;
  owner_id: string | null;
  status: "valid" | "revoked" | "expired";
  revoked_at: number | null;
  revocation_reason: string | null;
  fingerprint_sha256: string;
  created_at: number;
}

export interface CertificateFilter {
  caProfile?: CaProfile | undefined;
  profile?: LeafProfile | undefined;
  ownerType?: string | undefined;
  ownerId?: string | undefined;
  status?: "valid" | "revoked" | "expired" | undefined;
}

const CERT_COLUMNS = [
  "id",
  "serial_hex",
  "ca_profile",
  "leaf_profile",
  "subject",
  "sans",
  "not_before",
  "not_after",
  "purpose",
  "owner_type",
  "owner_id",
  "status",
  "revoked_at",
  "revocation_reason",
  "fingerprint_sha256",
  "created_at",
] as const;

export async function listCertificates(ctx: CpContext, filter: CertificateFilter, request: PageRequest): Promise<Page<CertificateView>> {
  const now = ctx.clock.now();
  const base = ctx.controlDb.selectFrom("certificates").$call((q) => {
    let out = q;
    if (filter.caProfile) out = out.where("ca_profile", "=", filter.caProfile);
    if (filter.profile) out = out.where("leaf_profile", "=", filter.profile);
    if (filter.ownerType) out = out.where("owner_type", "=", filter.ownerType);
    if (filter.ownerId) out = out.where("owner_id", "=", filter.ownerId);
    if (filter.status === "revoked") out = out.where("status", "=", "revoked");
    if (filter.status === "valid") out = out.where("status", "=", "valid").where("not_after", ">", now);
    if (filter.status === "expired") out = out.where("status", "=", "valid").where("not_after", "<=", now);
    return out;
  });
  return paginate(
    base,
    request,
    (q) => q.select(CERT_COLUMNS).orderBy("created_at", "desc").orderBy("id"),
    (r) => toCertificateView(r, now),
  );
}

function toCertificateView(row: Pick<ControlSchema["certificates"], (typeof CERT_COLUMNS)[number]>, now: number): CertificateView {
  const status = row.status === "revoked" ? "revoked" : row.not_after <= now ? "expired" : "valid";
  return {
    id: row.id,
    serial: row.serial_hex,
    ca_profile: row.ca_profile,
    profile: row.leaf_profile,
    subject: row.subject,
    sans: JSON.parse(row.sans) as CertificateView["sans"],
    not_before: row.not_before,
    not_after: row.not_after,
    purpose: row.purpose,
    owner_type: row.owner_type,
    owner_id: row.owner_id,
    status,
    revoked_at: row.revoked_at,
    revocation_reason: row.revocation_reason,
    fingerprint_sha256: row.fingerprint_sha256,
    created_at: row.created_at,
  };
}

export async function getCertificate(ctx: CpContext, id: string): Promise<CertificateView & { certificate_pem: string }> {
  const row = await ctx.controlDb
    .selectFrom("certificates")
    .select([...CERT_COLUMNS, "cert_pem"])
    .where("id", "=", id)
    .executeTakeFirst();
  if (!row) throw new AuthNexusError("NOT_FOUND", { message: "Certificate not found." });
  return { ...toCertificateView(row, ctx.clock.now()), certificate_pem: row.cert_pem };
}

/** Marks a certificate revoked; OCSP answers `revoked` from the next request on. */
export async function revokeCertificate(ctx: CpContext, id: string, reason: RevocationReason, actor: string): Promise<CertificateView> {
  const now = ctx.clock.now();
  const revoked = await ctx.controlDb.transaction().execute(async (tx) => {
    const row = await tx
      .selectFrom("certificates")
      .select(["status", "serial_hex", "ca_profile", "leaf_profile", "owner_type", "owner_id", "purpose"])
      .where("id", "=", id)
      .executeTakeFirst();
    if (!row) throw new AuthNexusError("NOT_FOUND", { message: "Certificate not found." });
    if (row.status === "revoked") throw new AuthNexusError("CONFLICT", { message: "Certificate is already revoked." });
    // The status check in the WHERE makes a concurrent second revoke lose instead of overwriting.
    const updated = await tx
      .updateTable("certificates")
      .set({ status: "revoked", revoked_at: now, revocation_reason: reason })
      .where("id", "=", id)
      .where("status", "!=", "revoked")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) throw new AuthNexusError("CONFLICT", { message: "Certificate is already revoked." });
    await writePkiAudit(tx, ctx.clock, {
      event: "cert.revoked",
      certificateId: id,
      caProfile: row.ca_profile,
      serialHex: row.serial_hex,
      profile: row.leaf_profile,
      actor,
      detail: { reason },
    });
    return row;
  });
  ctx.log.category("PKI").info("cert.revoked", {
    certificate_id: id,
    serial: revoked.serial_hex,
    profile: revoked.leaf_profile,
    reason,
    actor,
  });
  // A node's open SSE stream was admitted with this certificate: end it now, not at its next reconnect.
  if (revoked.owner_type === "node" && revoked.owner_id && revoked.purpose === "node_client")
    ctx.events.notice({ kind: "node.credentials_changed", nodeId: revoked.owner_id });
  return getCertificate(ctx, id);
}

export interface CaView {
  id: string;
  profile: string;
  status: string;
  subject: string;
  serial: string;
  not_before: number;
  not_after: number;
  fingerprint_sha256: string;
  certificate_pem: string;
}

/** Public CA certificates only; keys never leave this module unsealed except to sign. */
export async function listCas(ctx: CpContext): Promise<CaView[]> {
  const rows = await ctx.controlDb
    .selectFrom("certificate_authorities")
    .select(["id", "profile", "status", "subject", "serial_hex", "not_before", "not_after", "fingerprint_sha256", "cert_pem"])
    .orderBy("profile")
    .orderBy("created_at")
    .execute();
  return rows.map((r) => ({
    id: r.id,
    profile: r.profile,
    status: r.status,
    subject: r.subject,
    serial: r.serial_hex,
    not_before: r.not_before,
    not_after: r.not_after,
    fingerprint_sha256: r.fingerprint_sha256,
    certificate_pem: r.cert_pem,
  }));
}
