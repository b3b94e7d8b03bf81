import { type CertID, id_pkix_ocsp_nonce, OCSPRequest } from "@peculiar/asn1-ocsp";
import { AsnConvert } from "@peculiar/asn1-schema";
import { AuthNexusError } from "../../shared/errors/index.js";
import { DerError, readTlv, TAG } from "./der.js";

export const OID_SHA1 = "1.3.14.3.2.26";
export const OID_SHA256 = "2.16.840.1.101.3.4.2.1";

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
  /** The decoded CertID, echoed back in the SingleResponse. */
  readonly raw: CertID;
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

/** A request the responder cannot decode: answered with OCSP status malformedRequest (1). */
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

function hashName(oid: string): OcspHashAlgorithm {
  if (oid === OID_SHA1) return "sha1";
  if (oid === OID_SHA256) return "sha256";
  return oid as DottedOid;
}

/** Canonical serial hex: the positive INTEGER value, minimal octets, at least one octet. */
function serialToHex(serial: ArrayBuffer): string {
  const bytes = new Uint8Array(serial);
  if (bytes.length === 0) throw new OcspRequestError("empty serialNumber");
  if (((bytes[0] as number) & 0x80) !== 0) throw new OcspRequestError("negative serialNumber");
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, bytes.length - start).toString("hex");
}

function toQuery(certId: CertID): CertIdQuery {
  const hashAlgorithm = hashName(certId.hashAlgorithm.algorithm);
  const issuerNameHash = Buffer.from(certId.issuerNameHash.buffer);
  const issuerKeyHash = Buffer.from(certId.issuerKeyHash.buffer);
  const expected = EXPECTED_HASH_LENGTH[hashAlgorithm];
  if (
    expected !== undefined &&
    (issuerNameHash.length !== expected || issuerKeyHash.length !== expected)
  ) {
    throw new OcspRequestError(`issuer hash length does not match ${hashAlgorithm}`);
  }
  return {
    hashAlgorithm,
    issuerNameHash,
    issuerKeyHash,
    serialHex: serialToHex(certId.serialNumber),
    raw: certId,
  };
}

/**
 * Decodes a DER OCSPRequest (RFC 6960 4.1). Throws OcspRequestError when the input is not a
 * single well-formed OCSPRequest, has no CertID, has a negative or empty serial, hash lengths
 * that do not fit the hash algorithm, duplicate nonces, or a critical extension the responder
 * does not understand. A request signature (optionalSignature) is accepted and ignored.
 */
export function parseOcspRequest(der: Uint8Array): ParsedOcspRequest {
  if (der.length === 0) throw new OcspRequestError("empty body");
  try {
    const outer = readTlv(der, 0);
    if (outer.tag !== TAG.SEQUENCE) throw new OcspRequestError("not a SEQUENCE");
    if (outer.end !== der.length) throw new OcspRequestError("trailing data after the request");
  } catch (error) {
    if (error instanceof DerError) throw new OcspRequestError(error.message, error);
    throw error;
  }

  let request: OCSPRequest;
  try {
    request = AsnConvert.parse(der, OCSPRequest);
  } catch (error) {
    throw new OcspRequestError("not a decodable OCSPRequest", error);
  }

  const tbs = request.tbsRequest;
  if (tbs.version !== 0) throw new OcspRequestError("unsupported request version");
  if (tbs.requestList.length === 0) throw new OcspRequestError("empty requestList");

  const certIds: CertIdQuery[] = [];
  for (const single of tbs.requestList) {
    for (const ext of single.singleRequestExtensions ?? []) {
      if (ext.critical) throw new OcspRequestError(`unsupported critical extension ${ext.extnID}`);
    }
    certIds.push(toQuery(single.reqCert));
  }

  let nonce: Buffer | null = null;
  for (const ext of tbs.requestExtensions ?? []) {
    if (ext.extnID === id_pkix_ocsp_nonce) {
      if (nonce !== null) throw new OcspRequestError("duplicate nonce extension");
      nonce = Buffer.from(ext.extnValue.buffer);
      if (nonce.length === 0) throw new OcspRequestError("empty nonce");
    } else if (ext.critical) {
      throw new OcspRequestError(`unsupported critical extension ${ext.extnID}`);
    }
  }

  return { certIds, nonce };
}
