/**
 * RFC 5280 §5.3.1 CRLReason names and codes. OCSP (RFC 6960) reuses the same enumeration for
 * revokedInfo.revocationReason, so the CP's responder and the SDK both map through here.
 * Code 7 is unassigned in the RFC and deliberately absent.
 */

export const REVOCATION_REASON_CODES = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;

export type RevocationReason = keyof typeof REVOCATION_REASON_CODES;

export const REVOCATION_REASONS = Object.keys(REVOCATION_REASON_CODES) as RevocationReason[];

export function isRevocationReason(value: unknown): value is RevocationReason {
  return typeof value === "string" && Object.hasOwn(REVOCATION_REASON_CODES, value);
}

export function revocationReasonCode(name: RevocationReason): number {
  return REVOCATION_REASON_CODES[name];
}

/** The reason name for a wire code, or null for an unassigned code (7, >10, negative). */
export function revocationReasonFromCode(code: number): RevocationReason | null {
  return REVOCATION_REASONS.find((name) => REVOCATION_REASON_CODES[name] === code) ?? null;
}
