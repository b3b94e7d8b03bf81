/** What the issuers hand back, and the pieces of issuance shared by CAs and leaves. */
import "./crypto-provider.js";
import { randomBytes } from "node:crypto";
import { CLOCK_SKEW_MS } from "../config/defaults.js";
import { AuthNexusError } from "../errors/index.js";
import type { x509 } from "./crypto-provider.js";
import { certificateDerToPem, parseCertificate, type SubjectAltNames } from "./parse-certificate.js";

export interface IssuedCertificate {
  certPem: string;
  certDer: Buffer;
  /** PKCS#8 PEM of the generated private key; null when the caller supplied the public key. */
  keyPem: string | null;
  /** Same canonical form as CertificateInfo.serialHex (always 32 hex digits for our serials). */
  serialHex: string;
  subject: string;
  issuer: string;
  /** Epoch milliseconds. */
  notBefore: number;
  notAfter: number;
  /** Lowercase hex SHA-256 of certDer. */
  fingerprintSha256: string;
  sans: SubjectAltNames;
}

const DAY_SECONDS = 86_400;
const SERIAL_BYTES = 16;
/** X.520 ub-common-name: longer CNs are rejected by strict parsers. */
const MAX_COMMON_NAME_LENGTH = 64;

/**
 * 16 random bytes with the top bit cleared (a DER INTEGER that is positive without a sign
 * byte) and the next bit set (never zero, never shortened by DER's minimal encoding), so
 * every serial is exactly 32 hex digits with 126 random bits.
 */
export function randomSerialHex(): string {
  const bytes = randomBytes(SERIAL_BYTES);
  bytes[0] = ((bytes[0] ?? 0) & 0x3f) | 0x40;
  return bytes.toString("hex");
}

/** X.509 times carry whole seconds; rounding here keeps reported and encoded times equal. */
export function validityWindow(nowMs: number, validityDays: number): { notBefore: number; notAfter: number } {
  const now = Math.floor(nowMs / 1000) * 1000;
  return { notBefore: now - CLOCK_SKEW_MS, notAfter: now + Math.floor(validityDays * DAY_SECONDS) * 1000 };
}

export function assertValidityDays(validityDays: number): void {
  if (!Number.isFinite(validityDays) || validityDays <= 0) {
    throw new AuthNexusError("CERTIFICATE_INVALID", { message: "validityDays must be a positive number" });
  }
}

export function assertCommonName(commonName: string): void {
  if (typeof commonName !== "string" || commonName.trim().length === 0) {
    throw new AuthNexusError("CERTIFICATE_INVALID", { message: "commonName must not be empty" });
  }
  if (commonName.length > MAX_COMMON_NAME_LENGTH) {
    throw new AuthNexusError("CERTIFICATE_INVALID", { message: "commonName must be at most 64 characters" });
  }
}

/** Built from the parsed certificate, so every reported field matches parseCertificate. */
export function toIssuedCertificate(cert: x509.X509Certificate, keyPem: string | null): IssuedCertificate {
  const certDer = Buffer.from(cert.rawData);
  const info = parseCertificate(certDer);
  return {
    certPem: certificateDerToPem(certDer),
    certDer,
    keyPem,
    serialHex: info.serialHex,
    subject: info.subject,
    issuer: info.issuer,
    notBefore: info.notBefore,
    notAfter: info.notAfter,
    fingerprintSha256: info.fingerprintSha256,
    sans: info.sans,
  };
}
