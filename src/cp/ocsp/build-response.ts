/**
 * The responder's half of RFC 6960: a signed BasicOCSPResponse for a parsed request, and the
 * bare error responses. Pure: the clock and the signer come in as arguments.
 *
 * Errors: a RangeError or TypeError means the caller passed a value no caller should (a
 * validity over the SDK's 1800 s, a CRLReason that does not exist, a non-private key): a
 * programming error, raised at once. A resolver that hands back the wrong CA or a key that does
 * not match its certificate is an INTERNAL AuthNexusError (the answerer turns it into an OCSP
 * internalError answer and logs its detail).
 */

import { createHash, type KeyObject, sign, X509Certificate } from "node:crypto";
import { DEFAULT_OCSP_VALIDITY_MS, MAX_OCSP_VALIDITY_MS } from "../../shared/config/defaults.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import { computeIssuerHashes, extractCertificateParts, type IssuerHashes } from "../../shared/pki/ocsp/cert-id.js";
import { isRevocationReasonCode, type OcspCertStatus } from "../../shared/pki/ocsp/cert-status.js";
import { encodeGeneralizedTime, encodeTlv, TAG } from "../../shared/pki/ocsp/der.js";
import { OID_CONTENT } from "../../shared/pki/ocsp/oids.js";
import type { Clock } from "../../shared/time/index.js";
import type { CertIdQuery, ParsedOcspRequest } from "./parse-request.js";

/** The issuing CA, which signs responses about its own certificates directly. */
export interface OcspSigner {
  /** DER of the CA certificate; embedded verbatim in the response's certs field. */
  certDer: Buffer;
  /** The CA's private key: EC signs ecdsa-with-SHA256, RSA signs sha256WithRSAEncryption. */
  privateKey: KeyObject;
}

export interface ResolvedIssuer {
  signer: OcspSigner;
  status: OcspCertStatus;
}

/**
 * Finds the CA that issued the queried certificate (by the query's issuer hashes), with the
 * certificate's status; null when no CA here issued it. Only called for sha1/sha256 CertIDs.
 */
export type OcspResolver = (query: CertIdQuery) => ResolvedIssuer | null;

export interface BuildOcspResponseOptions {
  request: ParsedOcspRequest;
  resolve: OcspResolver;
  clock: Clock;
  /** nextUpdate - thisUpdate in ms; default 30 min, must be in (0, 1800 s]. */
  validityMs?: number;
}

export type OcspErrorStatus = "malformedRequest" | "internalError" | "tryLater" | "unauthorized";

const ERROR_STATUS_CODE: Readonly<Record<OcspErrorStatus, number>> = {
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  unauthorized: 6,
};

/** An OCSPResponse carrying only a responseStatus (no responseBytes): RFC 6960 4.2.1. */
export function buildOcspErrorResponse(status: OcspErrorStatus): Buffer {
  const code = ERROR_STATUS_CODE[status];
  if (code === undefined) throw new RangeError(`Unknown OCSP error status: ${String(status)}`);
  return Buffer.from([TAG.SEQUENCE, 0x03, TAG.ENUMERATED, 0x01, code]);
}

/** AlgorithmIdentifier { ecdsa-with-SHA256 } (parameters absent, RFC 5758). */
const ALG_ECDSA_WITH_SHA256 = Buffer.from("300a06082a8648ce3d040302", "hex");
/** AlgorithmIdentifier { sha256WithRSAEncryption, NULL }. */
const ALG_SHA256_WITH_RSA = Buffer.from("300d06092a864886f70d01010b0500", "hex");
/** OBJECT IDENTIFIER id-pkix-ocsp-basic and id-pkix-ocsp-nonce, encoded whole. */
const OID_OCSP_BASIC = encodeTlv(TAG.OID, OID_CONTENT.basic);
/** responseStatus successful (0). */
const STATUS_SUCCESSFUL = Buffer.from([TAG.ENUMERATED, 0x01, 0x00]);

const OID_OCSP_NONCE = encodeTlv(TAG.OID, OID_CONTENT.nonce);
/** CertStatus good [0] IMPLICIT NULL and unknown [2] IMPLICIT NULL. */
const STATUS_GOOD = Buffer.from([TAG.IMPLICIT_PRIMITIVE_0, 0x00]);
const STATUS_UNKNOWN = Buffer.from([TAG.IMPLICIT_PRIMITIVE_2, 0x00]);

interface SignerInfo {
  /** certs [0] EXPLICIT SEQUENCE OF Certificate holding the signer certificate, ready to append. */
  readonly certsField: Buffer;
  /** responderID byKey: [2] EXPLICIT KeyHash (OCTET STRING of the SHA-1 of the signer's key). */
  readonly responderIdField: Buffer;
  readonly hashes: IssuerHashes;
  readonly checkedKeys: WeakSet<KeyObject>;
  readonly certificate: X509Certificate;
}

// Per-signer derived data. The WeakMap hits when the resolver hands back the same Buffer; the
// bounded fingerprint map covers resolvers that copy the certificate on every lookup.
const infoByBuffer = new WeakMap<Buffer, SignerInfo>();
const infoByFingerprint = new Map<string, SignerInfo>();
const MAX_FINGERPRINTS = 256;

function signerInfo(signer: OcspSigner): SignerInfo {
  let info = infoByBuffer.get(signer.certDer);
  if (info === undefined) {
    const fingerprint = createHash("sha256").update(signer.certDer).digest("base64");
    info = infoByFingerprint.get(fingerprint);
    if (info === undefined) {
      const certDer = Buffer.from(signer.certDer);
      const parts = extractCertificateParts(certDer);
      const responderKeyHash = createHash("sha1").update(parts.publicKeyBits).digest();
      info = {
        certsField: encodeTlv(TAG.CONTEXT_0, encodeTlv(TAG.SEQUENCE, certDer)),
        responderIdField: encodeTlv(TAG.CONTEXT_2, encodeTlv(TAG.OCTET_STRING, responderKeyHash)),
        hashes: computeIssuerHashes(certDer),
        checkedKeys: new WeakSet(),
        certificate: new X509Certificate(certDer),
      };
      if (infoByFingerprint.size >= MAX_FINGERPRINTS) infoByFingerprint.clear();
      infoByFingerprint.set(fingerprint, info);
    }
    infoByBuffer.set(signer.certDer, info);
  }
  if (!info.checkedKeys.has(signer.privateKey)) {
    if (signer.privateKey.type !== "private") {
      throw new TypeError("OCSP signer key must be a private key");
    }
    if (!info.certificate.checkPrivateKey(signer.privateKey)) {
      throw new AuthNexusError("INTERNAL", { message: "OCSP signer private key does not match the signer certificate" });
    }
    info.checkedKeys.add(signer.privateKey);
  }
  return info;
}

function signatureAlgorithm(key: KeyObject): Buffer {
  switch (key.asymmetricKeyType) {
    case "ec":
      return ALG_ECDSA_WITH_SHA256;
    case "rsa":
      return ALG_SHA256_WITH_RSA;
    default:
      throw new TypeError(`Unsupported OCSP signer key type: ${String(key.asymmetricKeyType)}`);
  }
}

/**
 * CertStatus ::= CHOICE { good [0] IMPLICIT NULL, revoked [1] IMPLICIT RevokedInfo, unknown [2] IMPLICIT NULL }
 * RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }
 * Times are whole seconds, truncated (never rounded up).
 */
function certStatus(status: OcspCertStatus): Buffer {
  switch (status.kind) {
    case "good":
      return STATUS_GOOD;
    case "unknown":
      return STATUS_UNKNOWN;
    case "revoked": {
      if (!Number.isFinite(status.revokedAt)) throw new RangeError("revokedAt must be epoch ms");
      const time = encodeGeneralizedTime(status.revokedAt);
      if (status.reason === undefined) return encodeTlv(TAG.CONTEXT_1, time);
      if (!isRevocationReasonCode(status.reason)) throw new RangeError(`Invalid CRLReason code: ${status.reason}`);
      return encodeTlv(TAG.CONTEXT_1, time, encodeTlv(TAG.CONTEXT_0, Buffer.from([TAG.ENUMERATED, 0x01, status.reason])));
    }
    default:
      throw new TypeError(`Unknown certificate status: ${JSON.stringify(status)}`);
  }
}

function matchesIssuer(query: CertIdQuery, hashes: IssuerHashes): boolean {
  if (query.hashAlgorithm !== "sha1" && query.hashAlgorithm !== "sha256") return false;
  const pair = hashes[query.hashAlgorithm];
  return pair.nameHash.equals(query.issuerNameHash) && pair.keyHash.equals(query.issuerKeyHash);
}

export function validateValidityMs(validityMs: number): number {
  if (!Number.isInteger(validityMs) || validityMs <= 0 || validityMs > MAX_OCSP_VALIDITY_MS) {
    throw new RangeError(`OCSP validity must be an integer in (0, ${MAX_OCSP_VALIDITY_MS}] ms`);
  }
  return validityMs;
}

/**
 * Builds the DER of tbsResponseData (ResponseData) for a request whose CertIDs all resolved to
 * one signer. Deterministic for a given request, statuses, signer and clock reading.
 *
 * ResponseData ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1 (omitted), responderID,
 *   producedAt GeneralizedTime, responses SEQUENCE OF SingleResponse,
 *   responseExtensions [1] EXPLICIT Extensions OPTIONAL }
 * SingleResponse ::= SEQUENCE { certID (the request's bytes), certStatus, thisUpdate,
 *   nextUpdate [0] EXPLICIT GeneralizedTime }
 */
function buildTbsResponseData(
  request: ParsedOcspRequest,
  statuses: readonly OcspCertStatus[],
  info: SignerInfo,
  now: number,
  validityMs: number,
): Buffer {
  const thisUpdateMs = Math.floor(now / 1000) * 1000;
  const thisUpdate = encodeGeneralizedTime(thisUpdateMs);
  const nextUpdate = encodeTlv(TAG.CONTEXT_0, encodeGeneralizedTime(thisUpdateMs + validityMs));
  const responses = request.certIds.map((query, i) =>
    encodeTlv(TAG.SEQUENCE, query.raw, certStatus(statuses[i] as OcspCertStatus), thisUpdate, nextUpdate),
  );
  const fields = [info.responderIdField, thisUpdate, encodeTlv(TAG.SEQUENCE, ...responses)];
  if (request.nonce !== null) {
    // The nonce's extnValue octets echoed verbatim; critical is FALSE, so omitted (DER).
    const nonce = encodeTlv(TAG.SEQUENCE, OID_OCSP_NONCE, encodeTlv(TAG.OCTET_STRING, request.nonce));
    fields.push(encodeTlv(TAG.CONTEXT_1, encodeTlv(TAG.SEQUENCE, nonce)));
  }
  return encodeTlv(TAG.SEQUENCE, ...fields);
}

/**
 * Answers a parsed request (RFC 6960): a successful BasicOCSPResponse signed directly by the
 * issuing CA (responderID byKey, certs = [CA certificate]), or an unauthorized (6) response
 * when any CertID uses a hash other than SHA-1/SHA-256, any CertID's issuer is not resolved, or
 * the CertIDs resolve to different signers. Throws (for an internalError answer) when the
 * resolver hands back a signer that does not match the CertID's issuer hashes, a private key
 * that does not match its certificate, or an invalid status.
 */
export function buildOcspResponse(options: BuildOcspResponseOptions): Buffer {
  const { request, resolve, clock } = options;
  const validityMs = validateValidityMs(options.validityMs ?? DEFAULT_OCSP_VALIDITY_MS);
  if (request.certIds.length === 0) return buildOcspErrorResponse("malformedRequest");

  let signer: OcspSigner | undefined;
  let info: SignerInfo | undefined;
  const statuses: OcspCertStatus[] = [];
  for (const query of request.certIds) {
    if (query.hashAlgorithm !== "sha1" && query.hashAlgorithm !== "sha256") {
      return buildOcspErrorResponse("unauthorized");
    }
    const resolved = resolve(query);
    if (resolved === null) return buildOcspErrorResponse("unauthorized");
    if (signer === undefined || info === undefined) {
      signer = resolved.signer;
      info = signerInfo(signer);
    } else if (
      resolved.signer !== signer &&
      !(
        resolved.signer.certDer.equals(signer.certDer) &&
        (resolved.signer.privateKey === signer.privateKey || resolved.signer.privateKey.equals(signer.privateKey))
      )
    ) {
      return buildOcspErrorResponse("unauthorized");
    }
    if (!matchesIssuer(query, info.hashes)) {
      throw new AuthNexusError("INTERNAL", {
        message: `OCSP resolver returned a signer that did not issue serial ${query.serialHex}`,
        detail: { serial: query.serialHex },
      });
    }
    statuses.push(resolved.status);
  }
  if (signer === undefined || info === undefined) return buildOcspErrorResponse("unauthorized");

  const algorithm = signatureAlgorithm(signer.privateKey);
  const tbs = buildTbsResponseData(request, statuses, info, clock.now(), validityMs);
  const signature =
    algorithm === ALG_ECDSA_WITH_SHA256
      ? sign("sha256", tbs, { key: signer.privateKey, dsaEncoding: "der" })
      : sign("sha256", tbs, signer.privateKey);

  // BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature BIT STRING,
  //   certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
  const basic = encodeTlv(TAG.SEQUENCE, tbs, algorithm, encodeTlv(TAG.BIT_STRING, Buffer.from([0x00]), signature), info.certsField);
  // OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT ResponseBytes }
  // ResponseBytes ::= SEQUENCE { responseType OBJECT IDENTIFIER, response OCTET STRING }
  return encodeTlv(
    TAG.SEQUENCE,
    STATUS_SUCCESSFUL,
    encodeTlv(TAG.CONTEXT_0, encodeTlv(TAG.SEQUENCE, OID_OCSP_BASIC, encodeTlv(TAG.OCTET_STRING, basic))),
  );
}
