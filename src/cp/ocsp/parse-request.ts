import { AuthNexusError } from "../../shared/errors/index.js";
import {
  DerError,
  decodeOid,
  readChildren,
  readChildrenOf,
  readTlv,
  TAG,
  type Tlv,
  tlvBytes,
  tlvContent,
} from "../../shared/pki/ocsp/der.js";
import { OID_CONTENT } from "../../shared/pki/ocsp/oids.js";

/** A dotted-decimal OBJECT IDENTIFIER, e.g. "2.16.840.1.101.3.4.2.2". */
export type DottedOid = `${number}.${number}.${string}` | `${number}.${number}`;

/**
 * "sha1" / "sha256" for the hashes the responder matches, else the dotted OID as sent. The OID
 * member is a template type so that `if (alg !== "sha1" && alg !== "sha256") return` narrows.
 */
export type OcspHashAlgorithm = "sha1" | "sha256" | DottedOid;

/** One CertID of a request, decoded for lookup. */
export interface CertIdQuery {
  readonly hashAlgorithm: OcspHashAlgorithm;
  readonly issuerNameHash: Buffer;
  readonly issuerKeyHash: Buffer;
  /** The serial as a positive integer in lowercase hex, leading 00 octets stripped ("00" for 0). */
  readonly serialHex: string;
  /** The CertID's DER exactly as the client sent it, echoed back in the SingleResponse. */
  readonly raw: Buffer;
}

export interface ParsedOcspRequest {
  /** In request order; never empty. */
  readonly certIds: CertIdQuery[];
  /**
   * The nonce extension's extnValue octets, echoed verbatim in the response (for openssl and
   * RFC 8954 clients this is the DER of an OCTET STRING holding the random bytes); null when
   * the request has no nonce.
   */
  readonly nonce: Buffer | null;
}

/**
 * A request the responder cannot decode: answered with OCSP status malformedRequest (1). A
 * catalogue error (VALIDATION_FAILED) with the reason as internal detail, so the answerer logs
 * why without the client learning more than "malformed".
 */
export class OcspRequestError extends AuthNexusError {
  constructor(reason: string, cause?: unknown) {
    super("VALIDATION_FAILED", {
      message: `Malformed OCSP request: ${reason}`,
      detail: { reason },
      cause,
    });
    this.name = "OcspRequestError";
  }
}

const EXPECTED_HASH_LENGTH: Readonly<Record<string, number>> = { sha1: 20, sha256: 32 };

function hashName(oid: Buffer): OcspHashAlgorithm {
  if (oid.equals(OID_CONTENT.sha1)) return "sha1";
  if (oid.equals(OID_CONTENT.sha256)) return "sha256";
  return decodeOid(oid) as DottedOid;
}

/** Canonical serial hex: the positive INTEGER value, minimal octets, at least one octet. */
function serialToHex(bytes: Buffer): string {
  if (bytes.length === 0) throw new OcspRequestError("empty serialNumber");
  if (((bytes[0] as number) & 0x80) !== 0) throw new OcspRequestError("negative serialNumber");
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  return bytes.subarray(start).toString("hex");
}

function primitive(der: Uint8Array, tlv: Tlv | undefined, tag: number, what: string): Buffer {
  if (tlv === undefined || tlv.tag !== tag) throw new OcspRequestError(`${what} missing or of the wrong type`);
  return tlvContent(der, tlv);
}

/** CertID ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, issuerNameHash, issuerKeyHash OCTET STRING, serialNumber INTEGER } */
function parseCertId(der: Uint8Array, certId: Tlv): CertIdQuery {
  const fields = readChildrenOf(der, certId, TAG.SEQUENCE, "CertID");
  if (fields.length !== 4) throw new OcspRequestError("CertID must have four fields");
  const [algorithm, nameHash, keyHash, serial] = fields as [Tlv, Tlv, Tlv, Tlv];
  const algorithmFields = readChildrenOf(der, algorithm, TAG.SEQUENCE, "hashAlgorithm");
  if (algorithmFields.length < 1 || algorithmFields.length > 2)
    throw new OcspRequestError("hashAlgorithm must be an OID and optional parameters");
  const hashAlgorithm = hashName(primitive(der, algorithmFields[0], TAG.OID, "hashAlgorithm OID"));
  const issuerNameHash = primitive(der, nameHash, TAG.OCTET_STRING, "issuerNameHash");
  const issuerKeyHash = primitive(der, keyHash, TAG.OCTET_STRING, "issuerKeyHash");
  const expected = EXPECTED_HASH_LENGTH[hashAlgorithm];
  if (expected !== undefined && (issuerNameHash.length !== expected || issuerKeyHash.length !== expected)) {
    throw new OcspRequestError(`issuer hash length does not match ${hashAlgorithm}`);
  }
  return {
    hashAlgorithm,
    issuerNameHash,
    issuerKeyHash,
    serialHex: serialToHex(primitive(der, serial, TAG.INTEGER, "serialNumber")),
    raw: tlvBytes(der, certId),
  };
}

interface ParsedExtension {
  oid: Buffer;
  critical: boolean;
  value: Buffer;
}

/** `[n] EXPLICIT Extensions`, Extensions ::= SEQUENCE OF Extension { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
function parseExtensions(der: Uint8Array, wrapper: Tlv): ParsedExtension[] {
  const inner = readChildren(der, wrapper);
  if (inner.length !== 1) throw new OcspRequestError("extensions must be one SEQUENCE");
  return readChildrenOf(der, inner[0] as Tlv, TAG.SEQUENCE, "Extensions").map((extension) => {
    const fields = readChildrenOf(der, extension, TAG.SEQUENCE, "Extension");
    const oid = primitive(der, fields[0], TAG.OID, "extnID");
    decodeOid(oid); // well-formed, even when not one we know
    const hasCritical = fields.length === 3;
    if (fields.length !== 2 && !hasCritical) throw new OcspRequestError("an Extension has two or three fields");
    const critical = hasCritical ? primitive(der, fields[1], TAG.BOOLEAN, "critical") : undefined;
    if (critical !== undefined && critical.length !== 1) throw new OcspRequestError("critical must be one octet");
    return {
      oid,
      critical: critical !== undefined && critical[0] !== 0,
      value: primitive(der, fields[fields.length - 1], TAG.OCTET_STRING, "extnValue"),
    };
  });
}

function describeOid(oid: Buffer): string {
  try {
    return decodeOid(oid);
  } catch {
    return oid.toString("hex");
  }
}

/**
 * Decodes a DER OCSPRequest (RFC 6960 4.1). Throws OcspRequestError when the input is not a
 * single well-formed OCSPRequest, has no CertID, has a negative or empty serial, hash lengths
 * that do not fit the hash algorithm, duplicate nonces, or a critical extension the responder
 * does not understand. A request signature (optionalSignature) and a requestorName are
 * accepted and ignored.
 */
export function parseOcspRequest(der: Uint8Array): ParsedOcspRequest {
  if (der.length === 0) throw new OcspRequestError("empty body");
  try {
    return parseRequestDer(der);
  } catch (error) {
    if (error instanceof DerError) throw new OcspRequestError(error.message, error);
    throw error;
  }
}

function parseRequestDer(der: Uint8Array): ParsedOcspRequest {
  const outer = readTlv(der, 0);
  if (outer.tag !== TAG.SEQUENCE) throw new OcspRequestError("not a SEQUENCE");
  if (outer.end !== der.length) throw new OcspRequestError("trailing data after the request");
  // OCSPRequest ::= SEQUENCE { tbsRequest TBSRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }
  const [tbs, signature, ...extra] = readChildren(der, outer);
  if (tbs === undefined || extra.length > 0 || (signature !== undefined && signature.tag !== TAG.CONTEXT_0)) {
    throw new OcspRequestError("not a decodable OCSPRequest");
  }
  // TBSRequest ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1, requestorName [1] EXPLICIT OPTIONAL,
  //   requestList SEQUENCE OF Request, requestExtensions [2] EXPLICIT Extensions OPTIONAL }
  const fields = readChildrenOf(der, tbs, TAG.SEQUENCE, "tbsRequest");
  let next = 0;
  if (fields[next]?.tag === TAG.CONTEXT_0) {
    const version = readChildren(der, fields[next] as Tlv);
    const value = primitive(der, version[0], TAG.INTEGER, "version");
    if (version.length !== 1 || value.length !== 1 || value[0] !== 0) throw new OcspRequestError("unsupported request version");
    next++;
  }
  if (fields[next]?.tag === TAG.CONTEXT_1) next++;
  const requestList = fields[next++];
  if (requestList === undefined) throw new OcspRequestError("no requestList");
  const requestExtensions = fields[next]?.tag === TAG.CONTEXT_2 ? fields[next++] : undefined;
  if (next !== fields.length) throw new OcspRequestError("unexpected field in tbsRequest");

  const requests = readChildrenOf(der, requestList, TAG.SEQUENCE, "requestList");
  if (requests.length === 0) throw new OcspRequestError("empty requestList");
  const certIds = requests.map((request) => {
    // Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
    const [certId, extensions, ...rest] = readChildrenOf(der, request, TAG.SEQUENCE, "Request");
    if (certId === undefined || rest.length > 0 || (extensions !== undefined && extensions.tag !== TAG.CONTEXT_0))
      throw new OcspRequestError("malformed Request");
    for (const ext of extensions ? parseExtensions(der, extensions) : []) {
      if (ext.critical) throw new OcspRequestError(`unsupported critical extension ${describeOid(ext.oid)}`);
    }
    return parseCertId(der, certId);
  });

  let nonce: Buffer | null = null;
  for (const ext of requestExtensions ? parseExtensions(der, requestExtensions) : []) {
    if (ext.oid.equals(OID_CONTENT.nonce)) {
      if (nonce !== null) throw new OcspRequestError("duplicate nonce extension");
      if (ext.value.length === 0) throw new OcspRequestError("empty nonce");
      nonce = Buffer.from(ext.value);
    } else if (ext.critical) {
      throw new OcspRequestError(`unsupported critical extension ${describeOid(ext.oid)}`);
    }
  }
  return { certIds, nonce };
}
