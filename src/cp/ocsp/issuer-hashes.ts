import { createHash } from "node:crypto";
import { DerError, readChildren, readTlv, TAG, type Tlv, tlvBytes, tlvContent } from "./der.js";

export interface IssuerHashPair {
  /** Hash of the DER encoding of the issuer certificate's subject Name. */
  readonly nameHash: Buffer;
  /** Hash of the issuer's subjectPublicKey BIT STRING value (key bits, no unused-bits octet). */
  readonly keyHash: Buffer;
}

/** The CertID hashes a request may carry for certificates issued by one CA. */
export interface IssuerHashes {
  readonly sha1: IssuerHashPair;
  readonly sha256: IssuerHashPair;
}

/** The byte ranges of a certificate the responder needs, copied out of the DER. */
export interface CertificateParts {
  /** DER of tbsCertificate.subject (exact bytes, never re-encoded). */
  readonly subjectDer: Buffer;
  /** DER of the whole SubjectPublicKeyInfo. */
  readonly spkiDer: Buffer;
  /** subjectPublicKey BIT STRING content without the leading unused-bits octet. */
  readonly publicKeyBits: Buffer;
}

/**
 * Finds the subject Name and the public key of an X.509 certificate by walking its DER:
 * Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
 * signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }.
 */
export function extractCertificateParts(certDer: Uint8Array): CertificateParts {
  try {
    const cert = readTlv(certDer, 0);
    if (cert.tag !== TAG.SEQUENCE || cert.end !== certDer.length) {
      throw new DerError("not a single DER SEQUENCE");
    }
    const [tbs] = readChildren(certDer, cert);
    if (tbs === undefined || tbs.tag !== TAG.SEQUENCE) throw new DerError("no tbsCertificate");
    const fields = readChildren(certDer, tbs);
    const first = fields[0];
    const base = first !== undefined && first.tag === TAG.CONTEXT_0 ? 1 : 0;
    const subject = fields[base + 4];
    const spki = fields[base + 5];
    if (subject === undefined || subject.tag !== TAG.SEQUENCE) throw new DerError("no subject");
    if (spki === undefined || spki.tag !== TAG.SEQUENCE) throw new DerError("no subjectPublicKeyInfo");
    const keyFields: Tlv[] = readChildren(certDer, spki);
    const bitString = keyFields[1];
    if (bitString === undefined || bitString.tag !== TAG.BIT_STRING) {
      throw new DerError("no subjectPublicKey BIT STRING");
    }
    const bits = tlvContent(certDer, bitString);
    if (bits.length < 1 || bits[0] !== 0) throw new DerError("subjectPublicKey has unused bits");
    return {
      subjectDer: Buffer.from(tlvBytes(certDer, subject)),
      spkiDer: Buffer.from(tlvBytes(certDer, spki)),
      publicKeyBits: Buffer.from(bits.subarray(1)),
    };
  } catch (error) {
    if (error instanceof DerError) {
      throw new TypeError(`Not a DER X.509 certificate: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

function digest(algorithm: "sha1" | "sha256", data: Uint8Array): Buffer {
  return createHash(algorithm).update(data).digest();
}

/** SHA-1 of the public key bits: the KeyHash of a ResponderID byKey (RFC 6960 4.2.1). */
export function responderKeyHash(certDer: Uint8Array): Buffer {
  return digest("sha1", extractCertificateParts(certDer).publicKeyBits);
}

/**
 * The issuerNameHash / issuerKeyHash pairs (RFC 6960 4.1.1) that identify certificates issued
 * by the CA whose certificate is `caCertDer`, for both SHA-1 (openssl's default) and SHA-256.
 */
export function computeIssuerHashes(caCertDer: Uint8Array): IssuerHashes {
  const { subjectDer, publicKeyBits } = extractCertificateParts(caCertDer);
  return {
    sha1: { nameHash: digest("sha1", subjectDer), keyHash: digest("sha1", publicKeyBits) },
    sha256: { nameHash: digest("sha256", subjectDer), keyHash: digest("sha256", publicKeyBits) },
  };
}
