/**
 * Reading certificates: one place that turns PEM or DER into the facts the rest of AuthNexus
 * looks at. Extensions are decoded with @peculiar/asn1-x509 directly rather than through
 * @peculiar/x509's typed extension classes, because those throw on SAN kinds they do not
 * model (otherName, x400Address); a foreign certificate with such a SAN must still parse.
 */
import "./crypto-provider.js";
import { createHash } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import * as asn1X509 from "@peculiar/asn1-x509";
import { AuthNexusError } from "../errors/index.js";
import { x509 } from "./crypto-provider.js";
import { canonicalIp } from "./names.js";
import { ekuName, TLS_FEATURE_OID, TLS_FEATURE_STATUS_REQUEST } from "./oids.js";

export interface SubjectAltNames {
  dns: string[];
  ip: string[];
  uri: string[];
}

export interface CertificateInfo {
  /**
   * Canonical serial: lowercase hex of the DER INTEGER content octets with leading 0x00
   * octets removed (so a positive serial is its big-endian magnitude, no sign byte, no
   * colons). Issued certificates report exactly this form.
   */
  serialHex: string;
  /** RFC 4514-style text as rendered by @peculiar/x509, e.g. "CN=node-1, O=AuthNexus". */
  subject: string;
  issuer: string;
  /** Epoch milliseconds (whole seconds: X.509 times have no fractions). */
  notBefore: number;
  notAfter: number;
  sans: SubjectAltNames;
  /** "serverAuth" / "clientAuth", or the dotted OID for any other purpose. */
  extendedKeyUsages: string[];
  /** Key usage bit names as in RFC 5280 ("digitalSignature", "keyCertSign", "crlSign", …). */
  keyUsages: string[];
  isCa: boolean;
  mustStaple: boolean;
  ocspUrls: string[];
  /** Lowercase hex SHA-256 of the certificate DER. */
  fingerprintSha256: string;
  /** Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER, for SPKI pinning. */
  publicKeySpkiSha256: string;
}

/** A decoded certificate: the DER, its ASN.1 tree, and the x509 view used for signatures. */
export interface DecodedCertificate {
  der: Buffer;
  asn: asn1X509.Certificate;
  cert: x509.X509Certificate;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n?([\s\S]*?)-----END \1-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/=\s]+$/;
const CERTIFICATE_LABEL = "CERTIFICATE";

export function parseCertificate(pemOrDer: string | Buffer): CertificateInfo {
  return describeCertificate(decodeCertificate(pemOrDer));
}

/**
 * Every CERTIFICATE block in a PEM bundle, re-encoded canonically (64-column base64, "\n"
 * line ends) so equal certificates compare equal as strings. Other blocks (keys, CRLs) are
 * skipped; a certificate block whose body is not base64 throws CERTIFICATE_INVALID.
 */
export function splitPemBundle(text: string): string[] {
  return pemBlocks(text)
    .filter((block) => block.label === CERTIFICATE_LABEL)
    .map((block) => certificateDerToPem(block.der));
}

export function certificateDerToPem(der: Buffer): string {
  const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join("\n")}\n-----END CERTIFICATE-----\n`;
}

/**
 * Decodes exactly one certificate. A string (or a Buffer holding PEM text) must contain
 * exactly one CERTIFICATE block; a Buffer otherwise is DER and must be nothing but the
 * certificate, so trailing bytes cannot smuggle data past a fingerprint comparison.
 */
export function decodeCertificate(pemOrDer: string | Buffer): DecodedCertificate {
  const der = certificateDer(pemOrDer);
  try {
    if (derElementLength(der) !== der.length) throw new Error("trailing or missing bytes");
    const asn = AsnConvert.parse(der, asn1X509.Certificate);
    return { der, asn, cert: new x509.X509Certificate(asn) };
  } catch (cause) {
    throw invalid("not a DER X.509 certificate", cause);
  }
}

export function describeCertificate({ der, asn, cert }: DecodedCertificate): CertificateInfo {
  try {
    const extensions = extensionValues(asn);
    const san = extensions.get(asn1X509.id_ce_subjectAltName);
    const eku = extensions.get(asn1X509.id_ce_extKeyUsage);
    const keyUsage = extensions.get(asn1X509.id_ce_keyUsage);
    const basic = extensions.get(asn1X509.id_ce_basicConstraints);
    const aia = extensions.get(asn1X509.id_pe_authorityInfoAccess);
    const tlsFeature = extensions.get(TLS_FEATURE_OID);
    return {
      serialHex: serialHexOf(asn),
      subject: cert.subject,
      issuer: cert.issuer,
      notBefore: cert.notBefore.getTime(),
      notAfter: cert.notAfter.getTime(),
      sans: san ? readSans(san) : { dns: [], ip: [], uri: [] },
      extendedKeyUsages: eku ? Array.from(AsnConvert.parse(eku, asn1X509.ExtendedKeyUsage), ekuName) : [],
      keyUsages: keyUsage ? AsnConvert.parse(keyUsage, asn1X509.KeyUsage).toJSON() : [],
      isCa: basic ? AsnConvert.parse(basic, asn1X509.BasicConstraints).cA : false,
      mustStaple: tlsFeature ? readTlsFeatures(tlsFeature).includes(TLS_FEATURE_STATUS_REQUEST) : false,
      ocspUrls: aia ? readOcspUrls(aia) : [],
      fingerprintSha256: sha256Hex(der),
      publicKeySpkiSha256: sha256Hex(Buffer.from(AsnConvert.serialize(asn.tbsCertificate.subjectPublicKeyInfo))),
    };
  } catch (cause) {
    if (cause instanceof AuthNexusError) throw cause;
    throw invalid("certificate has a malformed field or extension", cause);
  }
}

export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function certificateDer(input: string | Buffer): Buffer {
  if (typeof input !== "string" && !looksLikePem(input)) return input;
  const text = typeof input === "string" ? input : input.toString("latin1");
  const blocks = pemBlocks(text).filter((block) => block.label === CERTIFICATE_LABEL);
  const first = blocks[0];
  if (blocks.length !== 1 || !first) throw invalid("expected exactly one PEM CERTIFICATE block");
  return first.der;
}

function looksLikePem(buffer: Buffer): boolean {
  return buffer.subarray(0, 64).toString("latin1").trimStart().startsWith("-----BEGIN ");
}

function pemBlocks(text: string): { label: string; der: Buffer }[] {
  const blocks: { label: string; der: Buffer }[] = [];
  for (const match of text.matchAll(PEM_BLOCK)) {
    const label = match[1] ?? "";
    const body = match[2] ?? "";
    if (label === CERTIFICATE_LABEL && !BASE64_BODY.test(body)) throw invalid("PEM body is not base64");
    blocks.push({ label, der: Buffer.from(body, "base64") });
  }
  return blocks;
}

/** Total length (header + content) of the DER element at the start of `der`. */
function derElementLength(der: Buffer): number {
  const first = der[1];
  if (der[0] !== 0x30 || first === undefined) throw new Error("not a DER SEQUENCE");
  if (first < 0x80) return 2 + first;
  const octets = first & 0x7f;
  if (octets === 0 || octets > 4 || der.length < 2 + octets) throw new Error("bad DER length");
  let length = 0;
  for (let i = 0; i < octets; i++) length = length * 256 + (der[2 + i] ?? 0);
  return 2 + octets + length;
}

// RFC 5280 §4.2: a certificate must not include more than one instance of an extension;
// taking "the first" of two SANs would let a crafted certificate show different names to
// different parsers.
function extensionValues(asn: asn1X509.Certificate): Map<string, Buffer> {
  const values = new Map<string, Buffer>();
  for (const extension of asn.tbsCertificate.extensions ?? []) {
    if (values.has(extension.extnID)) throw invalid(`duplicate extension ${extension.extnID}`);
    values.set(extension.extnID, Buffer.from(extension.extnValue.buffer));
  }
  return values;
}

function serialHexOf(asn: asn1X509.Certificate): string {
  const bytes = Buffer.from(asn.tbsCertificate.serialNumber);
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  return bytes.subarray(start).toString("hex");
}

function readSans(value: Buffer): SubjectAltNames {
  const sans: SubjectAltNames = { dns: [], ip: [], uri: [] };
  for (const name of AsnConvert.parse(value, asn1X509.SubjectAlternativeName)) {
    if (name.dNSName !== undefined) sans.dns.push(name.dNSName);
    if (name.uniformResourceIdentifier !== undefined) sans.uri.push(name.uniformResourceIdentifier);
    if (name.iPAddress !== undefined) sans.ip.push(canonicalIp(name.iPAddress) ?? name.iPAddress);
  }
  return sans;
}

function readOcspUrls(value: Buffer): string[] {
  // Array.from: AsnArray subclasses would make map/filter return schema objects, not arrays.
  return Array.from(AsnConvert.parse(value, asn1X509.AuthorityInfoAccessSyntax))
    .filter((access) => access.accessMethod === asn1X509.id_ad_ocsp)
    .map((access) => access.accessLocation.uniformResourceIdentifier)
    .filter((url): url is string => url !== undefined);
}

/**
 * TLS Feature value: SEQUENCE OF INTEGER (RFC 7633). Decoded by hand because it is five
 * bytes in practice and has no schema class in @peculiar/asn1-x509.
 */
function readTlsFeatures(value: Buffer): number[] {
  if (value[0] !== 0x30 || value[1] === undefined || value[1] >= 0x80 || value.length !== 2 + value[1]) {
    throw invalid("malformed TLS Feature extension");
  }
  const features: number[] = [];
  for (let offset = 2; offset < value.length; ) {
    const length = value[offset + 1];
    const end = offset + 2 + (length ?? 0);
    if (value[offset] !== 0x02 || length === undefined || length < 1 || length > 2 || end > value.length) {
      throw invalid("malformed TLS Feature extension");
    }
    features.push(value.readUIntBE(offset + 2, length));
    offset = end;
  }
  return features;
}

function invalid(message: string, cause?: unknown): AuthNexusError {
  return new AuthNexusError("CERTIFICATE_INVALID", { message, cause });
}
