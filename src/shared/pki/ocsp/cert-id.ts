/**
 * CertID hashing (RFC 6960 4.1.1), the one implementation for the CP's responder, the node's
 * stapler and the SDK's staple verifier: the issuer's subject Name and public key are hashed
 * exactly as they are encoded in the issuer certificate, found by walking its DER.
 */
import { createHash } from "node:crypto";
import { DerError, readChildren, readTlv, TAG, type Tlv, tlvBytes, tlvContent } from "./der.js";

/** The CertID hash algorithms AuthNexus reads and writes: SHA-1 (openssl's default) and SHA-256. */
export type CertIdHash = "sha1" | "sha256";

export interface IssuerHashPair {
  /** Hash of the DER encoding of the issuer certificate's subject Name. */
  readonly nameHash: Buffer;
  /** Hash of the issuer's subjectPublicKey BIT STRING value (key bits, no unused-bits octet). */
  readonly keyHash: Buffer;
}

/** The CertID hashes a request may carry for certificates issued by one CA. */
export type IssuerHashes = Readonly<Record<CertIdHash, IssuerHashPair>>;

/** The byte ranges of a certificate OCSP needs, copied out of the DER. */
export interface CertificateParts {
  /** Canonical serial: the INTEGER's content octets without leading 0x00 octets. */
  readonly serial: Buffer;
  /** DER of tbsCertificate.subject (exact bytes, never re-encoded). */
  readonly subjectDer: Buffer;
  /** DER of the whole SubjectPublicKeyInfo. */
  readonly spkiDer: Buffer;
  /** subjectPublicKey BIT STRING content without the leading unused-bits octet. */
  readonly publicKeyBits: Buffer;
}

/** One certificate's identity in OCSP: the issuer hashes under one algorithm and the serial. */
export interface CertId {
  readonly hashAlgorithm: CertIdHash;
  readonly issuerNameHash: Buffer;
  readonly issuerKeyHash: Buffer;
  /** Canonical serial (big-endian magnitude, no leading zero octets). */
  readonly serial: Buffer;
}

/**
 * Finds the serial, subject Name and public key of an X.509 certificate by walking its DER:
 * Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
 * signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }.
 * Throws a TypeError for anything that is not a single DER certificate.
 */
export function extractCertificateParts(certDer: Uint8Array): CertificateParts {
  try {
    const cert = readTlv(certDer, 0);
    if (cert.tag !== TAG.SEQUENCE || cert.end !== certDer.length) throw new DerError("not a single DER SEQUENCE");
    const [tbs] = readChildren(certDer, cert);
    if (tbs === undefined || tbs.tag !== TAG.SEQUENCE) throw new DerError("no tbsCertificate");
    const fields = readChildren(certDer, tbs);
    const base = fields[0]?.tag === TAG.CONTEXT_0 ? 1 : 0;
    const serial = fields[base];
    const subject = fields[base + 4];
    const spki = fields[base + 5];
    if (serial === undefined || serial.tag !== TAG.INTEGER) throw new DerError("no serialNumber");
    if (subject === undefined || subject.tag !== TAG.SEQUENCE) throw new DerError("no subject");
    if (spki === undefined || spki.tag !== TAG.SEQUENCE) throw new DerError("no subjectPublicKeyInfo");
    const keyFields: Tlv[] = readChildren(certDer, spki);
    const bitString = keyFields[1];
    if (bitString === undefined || bitString.tag !== TAG.BIT_STRING) throw new DerError("no subjectPublicKey BIT STRING");
    const bits = tlvContent(certDer, bitString);
    if (bits.length < 1 || bits[0] !== 0) throw new DerError("subjectPublicKey has unused bits");
    return {
      serial: canonicalSerial(tlvContent(certDer, serial)),
      subjectDer: Buffer.from(tlvBytes(certDer, subject)),
      spkiDer: Buffer.from(tlvBytes(certDer, spki)),
      publicKeyBits: Buffer.from(bits.subarray(1)),
    };
  } catch (error) {
    if (error instanceof DerError) throw new TypeError(`Not a DER X.509 certificate: ${error.message}`, { cause: error });
    throw error;
  }
}

function digest(algorithm: CertIdHash, data: Uint8Array): Buffer {
  return createHash(algorithm).update(data).digest();
}

/** SHA-1 of the public key bits: the KeyHash of a ResponderID byKey (RFC 6960 4.2.1). */
export function responderKeyHash(certDer: Uint8Array): Buffer {
  return digest("sha1", extractCertificateParts(certDer).publicKeyBits);
}

/**
 * The issuerNameHash / issuerKeyHash pairs that identify certificates issued by the CA whose
 * certificate is `caCertDer`, for both SHA-1 and SHA-256.
 */
export function computeIssuerHashes(caCertDer: Uint8Array): IssuerHashes {
  const { subjectDer, publicKeyBits } = extractCertificateParts(caCertDer);
  return {
    sha1: { nameHash: digest("sha1", subjectDer), keyHash: digest("sha1", publicKeyBits) },
    sha256: { nameHash: digest("sha256", subjectDer), keyHash: digest("sha256", publicKeyBits) },
  };
}

/** The CertID of `certDer`, issued by `issuerDer`, under `hashAlgorithm` (SHA-256 unless told). */
export function certIdOf(certDer: Uint8Array, issuerDer: Uint8Array, hashAlgorithm: CertIdHash = "sha256"): CertId {
  const issuer = computeIssuerHashes(issuerDer)[hashAlgorithm];
  return { hashAlgorithm, issuerNameHash: issuer.nameHash, issuerKeyHash: issuer.keyHash, serial: extractCertificateParts(certDer).serial };
}

/** A positive INTEGER's magnitude: leading 0x00 octets removed (one octet kept for zero). */
export function canonicalSerial(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  return Buffer.from(bytes.subarray(start));
}
