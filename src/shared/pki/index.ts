/**
 * AuthNexus PKI: pure certificate and key-sealing code shared by every role. No database,
 * no network, no logging; time comes from an injected Clock.
 */
import "./crypto-provider.js";

export type { CreateRootCaOptions } from "./create-root-ca.js";
export { createRootCa, DEFAULT_CA_ORGANISATION } from "./create-root-ca.js";
export { x509 } from "./crypto-provider.js";
export type { IssueLeafOptions, LeafSansInput } from "./issue-leaf.js";
export { issueLeafCertificate } from "./issue-leaf.js";
export type { IssuedCertificate } from "./issued-certificate.js";
export { encodeMasterKey, generateMasterKey, MASTER_KEY_BYTES, openSecret, parseMasterKey, sealSecret } from "./key-encryption.js";
export type { CryptoKey, CryptoKeyPair } from "./keys.js";
export { generateKeyPair, privateKeyToPem } from "./keys.js";
export { MUST_STAPLE_DER, TLS_FEATURE_OID } from "./oids.js";
export type { CertificateInfo, SubjectAltNames } from "./parse-certificate.js";
export { certificateDerToPem, parseCertificate, splitPemBundle } from "./parse-certificate.js";
export type { CaProfile, ExtendedKeyUsageName, IdentityUriKind, LeafProfile, LeafProfileSpec } from "./profiles.js";
export {
  appUri,
  CA_PROFILES,
  isCaProfile,
  isLeafProfile,
  isValidIdentityId,
  LEAF_PROFILE_NAMES,
  LEAF_PROFILES,
  nodeUri,
  parseAppUri,
  parseIdentityUri,
  parseNodeUri,
} from "./profiles.js";
export type { RevocationReason } from "./revocation-reasons.js";
export {
  isRevocationReason,
  REVOCATION_REASON_CODES,
  REVOCATION_REASONS,
  revocationReasonCode,
  revocationReasonFromCode,
} from "./revocation-reasons.js";
export type { ChainFailureReason, ChainVerificationResult, VerifyChainOptions } from "./verify-chain.js";
export { verifyCertificateChain } from "./verify-chain.js";
