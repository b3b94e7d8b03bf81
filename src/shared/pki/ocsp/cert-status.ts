/**
 * What an OCSP response says of one certificate (RFC 6960 CertStatus), as the responder builds
 * it and as the stapler and the SDK read it back. One type for every role.
 */
import { REVOCATION_REASON_CODES } from "../revocation-reasons.js";

export type OcspCertStatus =
  | { kind: "good" }
  /** revokedAt: epoch ms; reason: the CRLReason code (0-6, 8-10) when the response names one. */
  | { kind: "revoked"; revokedAt: number; reason?: number }
  | { kind: "unknown" };

export type OcspCertStatusKind = OcspCertStatus["kind"];

const REASON_CODES: ReadonlySet<number> = new Set(Object.values(REVOCATION_REASON_CODES));

/** A CRLReason code RFC 5280 assigns (7 is unassigned). */
export function isRevocationReasonCode(code: number): boolean {
  return REASON_CODES.has(code);
}
