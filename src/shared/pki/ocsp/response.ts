/**
 * Reading and verifying an OCSP response (RFC 6960 4.2), for the node's stapler (a response it
 * fetched) and the SDK (a response stapled to a handshake). Pure and I/O-free. A response is
 * accepted only when: its status is successful and it is a basic response; it is signed by the
 * certificate's issuer itself (AuthNexus's responder signs with the CA key; no delegated
 * responders are trusted); it holds a SingleResponse for exactly our CertID; our nonce comes
 * back when a nonce comes back at all; and its thisUpdate/nextUpdate window contains `now`.
 * Anything else is an OCSP_RESPONSE_INVALID error naming the reason, so a forged, foreign or
 * stale response is never stapled or trusted.
 */
import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { AuthNexusError } from "../../errors/index.js";
import { type CertId, canonicalSerial, extractCertificateParts, responderKeyHash } from "./cert-id.js";
import type { OcspCertStatus } from "./cert-status.js";
import { DerError, decodeGeneralizedTime, readChildren, readChildrenOf, readWhole, TAG, type Tlv, tlvBytes, tlvContent } from "./der.js";
import { OID_CONTENT } from "./oids.js";

export interface VerifyOcspOptions {
  /** DER of the issuing CA: the only key trusted to sign. */
  issuerDer: Uint8Array;
  certId: CertId;
  /** The nonce extension value we sent, or null (a stapled response carries none). */
  nonce: Buffer | null;
  now: number;
  /** How far thisUpdate may lie in the future (the responder's clock may run ahead), ms. */
  clockSkewMs: number;
  /** When set, thisUpdate may be at most this old (ms): the SDK's freshness bound for staples. */
  maxAgeMs?: number;
}

export interface VerifiedOcspResponse {
  status: OcspCertStatus;
  /** Epoch ms. */
  producedAt: number;
  thisUpdate: number;
  nextUpdate: number;
}

const RESPONSE_STATUS_NAMES: Readonly<Record<number, string>> = {
  1: "malformedRequest",
  2: "internalError",
  3: "tryLater",
  5: "sigRequired",
  6: "unauthorized",
};

/** An OCSP_RESPONSE_INVALID error; `tryLater` is set when the responder asked to be asked again. */
function invalid(reason: string, options: { tryLater?: boolean; cause?: unknown } = {}): AuthNexusError {
  return new AuthNexusError("OCSP_RESPONSE_INVALID", {
    message: `OCSP response rejected: ${reason}`,
    detail: { reason, ...(options.tryLater ? { responder_status: "tryLater" } : {}) },
    cause: options.cause,
  });
}

export function verifyOcspResponse(der: Uint8Array, options: VerifyOcspOptions): VerifiedOcspResponse {
  let parsed: ParsedBasicResponse;
  try {
    parsed = parseBasicResponse(der);
  } catch (error) {
    if (error instanceof DerError) throw invalid(`not a DER OCSPResponse (${error.message})`, { cause: error });
    throw error;
  }
  checkSigner(parsed, options.issuerDer);
  const single = parsed.responses.find((response) => sameCertId(response.certId, options.certId));
  if (!single) throw invalid("no SingleResponse for this certificate (CertID mismatch)");
  checkNonce(parsed.nonce, options.nonce);
  const { thisUpdate, nextUpdate } = single;
  if (nextUpdate === null) throw invalid("the response has no nextUpdate");
  if (nextUpdate <= thisUpdate) throw invalid("nextUpdate is not after thisUpdate");
  if (thisUpdate > options.now + options.clockSkewMs) throw invalid(`thisUpdate ${iso(thisUpdate)} is in the future`);
  if (nextUpdate <= options.now) throw invalid(`the response expired at ${iso(nextUpdate)}`);
  if (options.maxAgeMs !== undefined && options.now - thisUpdate > options.maxAgeMs) {
    throw invalid(`thisUpdate ${iso(thisUpdate)} is older than ${Math.round(options.maxAgeMs / 1000)} s`);
  }
  return { status: single.status, producedAt: parsed.producedAt, thisUpdate, nextUpdate };
}

interface ParsedSingleResponse {
  certId: CertId | null;
  status: OcspCertStatus;
  thisUpdate: number;
  nextUpdate: number | null;
}

interface ParsedBasicResponse {
  /** The exact DER of tbsResponseData: what the signature covers. */
  tbs: Buffer;
  signatureAlgorithm: Buffer;
  signature: Buffer;
  responderId: { byKey: Buffer } | { byName: Buffer };
  producedAt: number;
  responses: ParsedSingleResponse[];
  nonce: Buffer | null;
}

/**
 * OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT SEQUENCE {
 *   responseType OID, response OCTET STRING } OPTIONAL }
 * BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature BIT STRING,
 *   certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
 */
function parseBasicResponse(der: Uint8Array): ParsedBasicResponse {
  const outer = readWhole(der, TAG.SEQUENCE, "OCSPResponse");
  const [statusTlv, bytesTlv, ...extra] = readChildren(der, outer);
  const status = statusTlv?.tag === TAG.ENUMERATED ? tlvContent(der, statusTlv) : null;
  if (status === null || status.length !== 1 || extra.length > 0) throw new DerError("malformed OCSPResponse");
  const code = status[0] as number;
  if (code !== 0) throw invalid(`the responder answered ${RESPONSE_STATUS_NAMES[code] ?? `status ${code}`}`, { tryLater: code === 3 });
  if (bytesTlv?.tag !== TAG.CONTEXT_0) throw new DerError("a successful response without responseBytes");
  const [responseBytes, ...more] = readChildren(der, bytesTlv);
  if (responseBytes === undefined || more.length > 0) throw new DerError("malformed responseBytes");
  const [type, octets, ...rest] = readChildrenOf(der, responseBytes, TAG.SEQUENCE, "responseBytes");
  if (rest.length > 0) throw new DerError("malformed responseBytes");
  if (type?.tag !== TAG.OID || !tlvContent(der, type).equals(OID_CONTENT.basic)) throw invalid("not a basic OCSP response");
  if (octets?.tag !== TAG.OCTET_STRING) throw new DerError("responseBytes without its response");
  const basicDer = tlvContent(der, octets);
  const basic = readWhole(basicDer, TAG.SEQUENCE, "BasicOCSPResponse");
  const [tbs, algorithm, signature, certs, ...surplus] = readChildren(basicDer, basic);
  if (tbs === undefined || algorithm?.tag !== TAG.SEQUENCE || signature?.tag !== TAG.BIT_STRING)
    throw new DerError("malformed BasicOCSPResponse");
  // certs is not trusted (only the issuer from the deploy package may sign) but must still be the field it claims to be.
  if (surplus.length > 0 || (certs !== undefined && (certs.tag !== TAG.CONTEXT_0 || readChildren(basicDer, certs).length !== 1))) {
    throw new DerError("malformed BasicOCSPResponse certs");
  }
  const [algorithmOid] = readChildren(basicDer, algorithm);
  if (algorithmOid?.tag !== TAG.OID) throw new DerError("malformed signatureAlgorithm");
  const signatureBits = tlvContent(basicDer, signature);
  if (signatureBits[0] !== 0) throw new DerError("signature BIT STRING has unused bits");
  return {
    tbs: Buffer.from(tlvBytes(basicDer, tbs)),
    signatureAlgorithm: Buffer.from(tlvContent(basicDer, algorithmOid)),
    signature: Buffer.from(signatureBits.subarray(1)),
    ...parseResponseData(basicDer, tbs),
  };
}

/**
 * ResponseData ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1, responderID CHOICE { byName [1],
 *   byKey [2] }, producedAt GeneralizedTime, responses SEQUENCE OF SingleResponse,
 *   responseExtensions [1] EXPLICIT Extensions OPTIONAL }
 */
function parseResponseData(der: Uint8Array, tbs: Tlv): Pick<ParsedBasicResponse, "responderId" | "producedAt" | "responses" | "nonce"> {
  const fields = readChildrenOf(der, tbs, TAG.SEQUENCE, "tbsResponseData");
  let next = 0;
  if (fields[next]?.tag === TAG.CONTEXT_0) {
    const [version] = readChildren(der, fields[next] as Tlv);
    if (version?.tag !== TAG.INTEGER || !tlvContent(der, version).equals(Buffer.from([0]))) throw invalid("unsupported response version");
    next++;
  }
  const responder = fields[next++];
  let responderId: ParsedBasicResponse["responderId"];
  if (responder?.tag === TAG.CONTEXT_2) {
    const [keyHash] = readChildren(der, responder);
    if (keyHash?.tag !== TAG.OCTET_STRING) throw new DerError("malformed ResponderID byKey");
    responderId = { byKey: Buffer.from(tlvContent(der, keyHash)) };
  } else if (responder?.tag === TAG.CONTEXT_1) {
    const [name] = readChildren(der, responder);
    if (name?.tag !== TAG.SEQUENCE) throw new DerError("malformed ResponderID byName");
    responderId = { byName: Buffer.from(tlvBytes(der, name)) };
  } else throw new DerError("no ResponderID");
  const producedAt = fields[next++];
  if (producedAt?.tag !== TAG.GENERALIZED_TIME) throw new DerError("no producedAt");
  const responses = fields[next++];
  if (responses === undefined) throw new DerError("no responses");
  const extensions = fields[next]?.tag === TAG.CONTEXT_1 ? fields[next++] : undefined;
  if (next !== fields.length) throw new DerError("unexpected field in tbsResponseData");
  return {
    responderId,
    producedAt: decodeGeneralizedTime(tlvContent(der, producedAt)),
    responses: readChildrenOf(der, responses, TAG.SEQUENCE, "responses").map((single) => parseSingleResponse(der, single)),
    nonce: extensions ? findNonce(der, extensions) : null,
  };
}

/**
 * SingleResponse ::= SEQUENCE { certID, certStatus CHOICE { good [0] IMPLICIT NULL, revoked [1]
 *   IMPLICIT RevokedInfo, unknown [2] IMPLICIT NULL }, thisUpdate GeneralizedTime,
 *   nextUpdate [0] EXPLICIT GeneralizedTime OPTIONAL, singleExtensions [1] EXPLICIT OPTIONAL }
 */
function parseSingleResponse(der: Uint8Array, single: Tlv): ParsedSingleResponse {
  const [certId, status, thisUpdate, ...rest] = readChildrenOf(der, single, TAG.SEQUENCE, "SingleResponse");
  if (certId === undefined || status === undefined || thisUpdate?.tag !== TAG.GENERALIZED_TIME)
    throw new DerError("malformed SingleResponse");
  const nextUpdateField = rest[0]?.tag === TAG.CONTEXT_0 ? rest.shift() : undefined;
  if (rest[0]?.tag === TAG.CONTEXT_1) rest.shift();
  if (rest.length > 0) throw new DerError("unexpected field in SingleResponse");
  let nextUpdate: number | null = null;
  if (nextUpdateField) {
    const [time] = readChildren(der, nextUpdateField);
    if (time?.tag !== TAG.GENERALIZED_TIME) throw new DerError("malformed nextUpdate");
    nextUpdate = decodeGeneralizedTime(tlvContent(der, time));
  }
  return {
    certId: parseCertId(der, certId),
    status: parseCertStatus(der, status),
    thisUpdate: decodeGeneralizedTime(tlvContent(der, thisUpdate)),
    nextUpdate,
  };
}

/** A CertID under SHA-1 or SHA-256, or null for another hash (it can then never be ours). */
function parseCertId(der: Uint8Array, tlv: Tlv): CertId | null {
  const [algorithm, nameHash, keyHash, serial, ...extra] = readChildrenOf(der, tlv, TAG.SEQUENCE, "CertID");
  if (
    algorithm?.tag !== TAG.SEQUENCE ||
    nameHash?.tag !== TAG.OCTET_STRING ||
    keyHash?.tag !== TAG.OCTET_STRING ||
    serial?.tag !== TAG.INTEGER ||
    extra.length > 0
  ) {
    throw new DerError("malformed CertID");
  }
  const [oid] = readChildren(der, algorithm);
  if (oid?.tag !== TAG.OID) throw new DerError("malformed CertID hashAlgorithm");
  const oidContent = tlvContent(der, oid);
  const hashAlgorithm = oidContent.equals(OID_CONTENT.sha256) ? "sha256" : oidContent.equals(OID_CONTENT.sha1) ? "sha1" : null;
  if (hashAlgorithm === null) return null;
  return {
    hashAlgorithm,
    issuerNameHash: Buffer.from(tlvContent(der, nameHash)),
    issuerKeyHash: Buffer.from(tlvContent(der, keyHash)),
    serial: canonicalSerial(tlvContent(der, serial)),
  };
}

function parseCertStatus(der: Uint8Array, tlv: Tlv): OcspCertStatus {
  if (tlv.tag === TAG.IMPLICIT_PRIMITIVE_0 && tlv.end === tlv.contentStart) return { kind: "good" };
  if (tlv.tag === TAG.IMPLICIT_PRIMITIVE_2 && tlv.end === tlv.contentStart) return { kind: "unknown" };
  if (tlv.tag !== TAG.CONTEXT_1) throw new DerError("malformed certStatus");
  // RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }
  const [time, reason, ...extra] = readChildren(der, tlv);
  if (time?.tag !== TAG.GENERALIZED_TIME || extra.length > 0) throw new DerError("malformed RevokedInfo");
  const revokedAt = decodeGeneralizedTime(tlvContent(der, time));
  if (reason === undefined) return { kind: "revoked", revokedAt };
  const [enumerated] = readChildrenOf(der, reason, TAG.CONTEXT_0, "revocationReason");
  const code = enumerated?.tag === TAG.ENUMERATED ? tlvContent(der, enumerated) : null;
  if (code === null || code.length !== 1) throw new DerError("malformed revocationReason");
  return { kind: "revoked", revokedAt, reason: code[0] as number };
}

/** The nonce extension's extnValue octets, from `[1] EXPLICIT Extensions`. */
function findNonce(der: Uint8Array, wrapper: Tlv): Buffer | null {
  const [extensions, ...more] = readChildren(der, wrapper);
  if (extensions === undefined || more.length > 0) throw new DerError("malformed responseExtensions");
  let nonce: Buffer | null = null;
  for (const extension of readChildrenOf(der, extensions, TAG.SEQUENCE, "Extensions")) {
    const fields = readChildrenOf(der, extension, TAG.SEQUENCE, "Extension");
    const oid = fields[0];
    const value = fields[fields.length - 1];
    if (oid?.tag !== TAG.OID || value?.tag !== TAG.OCTET_STRING) throw new DerError("malformed Extension");
    if (!tlvContent(der, oid).equals(OID_CONTENT.nonce)) continue;
    if (nonce !== null) throw invalid("duplicate nonce extension");
    nonce = Buffer.from(tlvContent(der, value));
  }
  return nonce;
}

/** The responder must be the issuer (by key hash or by name), and the signature its own. */
function checkSigner(parsed: ParsedBasicResponse, issuerDer: Uint8Array): void {
  const issuer = extractCertificateParts(issuerDer);
  const named =
    "byKey" in parsed.responderId
      ? parsed.responderId.byKey.equals(responderKeyHash(issuerDer))
      : parsed.responderId.byName.equals(issuer.subjectDer);
  if (!named) throw invalid("signed by a responder other than the certificate's issuer");
  const key = createPublicKey({ key: Buffer.from(issuer.spkiDer), format: "der", type: "spki" });
  if (!signatureVerifies(parsed, key)) throw invalid("the signature does not verify against the issuer");
}

function signatureVerifies(parsed: ParsedBasicResponse, key: KeyObject): boolean {
  const algorithm = parsed.signatureAlgorithm;
  try {
    if (algorithm.equals(OID_CONTENT.ecdsaWithSha256) && key.asymmetricKeyType === "ec") {
      return verify("sha256", parsed.tbs, { key, dsaEncoding: "der" }, parsed.signature);
    }
    if (algorithm.equals(OID_CONTENT.sha256WithRsa) && key.asymmetricKeyType === "rsa")
      return verify("sha256", parsed.tbs, key, parsed.signature);
  } catch {
    return false;
  }
  throw invalid("unsupported signature algorithm");
}

function sameCertId(candidate: CertId | null, ours: CertId): boolean {
  return (
    candidate !== null &&
    candidate.hashAlgorithm === ours.hashAlgorithm &&
    candidate.issuerNameHash.equals(ours.issuerNameHash) &&
    candidate.issuerKeyHash.equals(ours.issuerKeyHash) &&
    candidate.serial.equals(ours.serial)
  );
}

/** A responder may omit the nonce (RFC 8954 §3); one that returns a different nonce is a replay. */
function checkNonce(received: Buffer | null, sent: Buffer | null): void {
  if (received === null || sent === null) return;
  if (!received.equals(sent)) throw invalid("the nonce does not match the request");
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
