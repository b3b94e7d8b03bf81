/**
 * OCSP pieces every role shares: the DER reader/writer, CertID hashing, the certificate-status
 * type, the request a node sends and the verification of the response it (or an SDK, from a
 * staple) receives. The responder's own request parser and response builder live in src/cp/ocsp.
 */
export {
  type CertId,
  type CertIdHash,
  type CertificateParts,
  canonicalSerial,
  certIdOf,
  computeIssuerHashes,
  extractCertificateParts,
  type IssuerHashes,
  type IssuerHashPair,
  responderKeyHash,
} from "./cert-id.js";
export { isRevocationReasonCode, type OcspCertStatus, type OcspCertStatusKind } from "./cert-status.js";
export { type BuiltOcspRequest, buildOcspRequest, encodeCertId } from "./request.js";
export { type VerifiedOcspResponse, type VerifyOcspOptions, verifyOcspResponse } from "./response.js";
