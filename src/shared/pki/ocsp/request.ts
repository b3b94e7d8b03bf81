/**
 * The OCSP request a node sends for its business certificate (RFC 6960 4.1): one SHA-256
 * CertID and a nonce (RFC 8954). Pure: the random source is injected.
 */
import { randomBytes } from "node:crypto";
import { type CertId, certIdOf } from "./cert-id.js";
import { encodeTlv, encodeUnsignedInteger, TAG } from "./der.js";
import { OID_CONTENT } from "./oids.js";

/** Random octets in the nonce: RFC 8954 allows 1 to 32, and recommends at least 16 (32 here would leave no margin for no benefit). */
const NONCE_BYTES = 16;

export interface BuiltOcspRequest {
  der: Buffer;
  certId: CertId;
  /** The nonce extension's extnValue sent: the DER of an OCTET STRING holding the random octets. */
  nonce: Buffer;
}

/** DER of a CertID: SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber }. */
export function encodeCertId(certId: CertId): Buffer {
  const algorithm = encodeTlv(TAG.SEQUENCE, encodeTlv(TAG.OID, OID_CONTENT[certId.hashAlgorithm]), Buffer.from([TAG.NULL, 0x00]));
  return encodeTlv(
    TAG.SEQUENCE,
    algorithm,
    encodeTlv(TAG.OCTET_STRING, certId.issuerNameHash),
    encodeTlv(TAG.OCTET_STRING, certId.issuerKeyHash),
    encodeUnsignedInteger(certId.serial),
  );
}

export function buildOcspRequest(
  certDer: Uint8Array,
  issuerDer: Uint8Array,
  random: (size: number) => Buffer = randomBytes,
): BuiltOcspRequest {
  const certId = certIdOf(certDer, issuerDer, "sha256");
  const nonce = encodeTlv(TAG.OCTET_STRING, random(NONCE_BYTES));
  const nonceExtension = encodeTlv(TAG.SEQUENCE, encodeTlv(TAG.OID, OID_CONTENT.nonce), encodeTlv(TAG.OCTET_STRING, nonce));
  // OCSPRequest ::= SEQUENCE { tbsRequest SEQUENCE { requestList SEQUENCE OF Request,
  //   requestExtensions [2] EXPLICIT Extensions } }; Request ::= SEQUENCE { reqCert CertID }
  const requestList = encodeTlv(TAG.SEQUENCE, encodeTlv(TAG.SEQUENCE, encodeCertId(certId)));
  const extensions = encodeTlv(TAG.CONTEXT_2, encodeTlv(TAG.SEQUENCE, nonceExtension));
  return { der: encodeTlv(TAG.SEQUENCE, encodeTlv(TAG.SEQUENCE, requestList, extensions)), certId, nonce };
}
