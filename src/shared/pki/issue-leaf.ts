/** End-entity certificates, signed directly by one of the four roots under a leaf profile. */
import "./crypto-provider.js";
import { AsnConvert } from "@peculiar/asn1-schema";
import * as asn1X509 from "@peculiar/asn1-x509";
import { LEAF_VALIDITY_DAYS } from "../config/defaults.js";
import { AuthNexusError } from "../errors/index.js";
import type { Clock } from "../time/index.js";
import { x509 } from "./crypto-provider.js";
import {
  assertCommonName,
  assertValidityDays,
  type IssuedCertificate,
  randomSerialHex,
  toIssuedCertificate,
  validityWindow,
} from "./issued-certificate.js";
import { type CryptoKey, generateKeyPair, importSigningKey, privateKeyToPem, SIGNING_ALGORITHM, spkiOfPrivateKey } from "./keys.js";
import { canonicalDnsName, canonicalIp, isAbsoluteUri } from "./names.js";
import { EKU_OIDS, MUST_STAPLE_DER, TLS_FEATURE_OID } from "./oids.js";
import { type DecodedCertificate, decodeCertificate, describeCertificate, type SubjectAltNames } from "./parse-certificate.js";
import { isCaProfile, LEAF_PROFILES, type LeafProfile, type LeafProfileSpec, parseIdentityUri } from "./profiles.js";

export interface LeafSansInput {
  dns?: string[];
  ip?: string[];
  uri?: string[];
}

export interface IssueLeafOptions {
  profile: LeafProfile;
  issuer: { certPem: string; keyPem: string };
  commonName: string;
  sans?: LeafSansInput;
  /** OCSP responder URL put in Authority Information Access. */
  ocspUrl?: string;
  /** Defaults to LEAF_VALIDITY_DAYS; clamped to the issuer's notAfter. */
  validityDays?: number;
  clock: Clock;
  /** Certify this key (keyPem is then null); otherwise a P-256 key pair is generated. */
  publicKey?: CryptoKey;
}

// digitalSignature only: ECDHE suites and TLS 1.3 need nothing else from an ECDSA key.
const LEAF_KEY_USAGES = x509.KeyUsageFlags.digitalSignature;

export async function issueLeafCertificate(options: IssueLeafOptions): Promise<IssuedCertificate> {
  const spec = leafProfileSpec(options.profile);
  const validityDays = options.validityDays ?? LEAF_VALIDITY_DAYS;
  assertCommonName(options.commonName);
  assertValidityDays(validityDays);
  const sans = checkSans(spec, options.sans ?? {});
  if (options.ocspUrl !== undefined) checkOcspUrl(options.ocspUrl);
  const issuer = loadIssuer(options.profile, spec, options.issuer);
  const window = leafWindow(options.clock.now(), validityDays, issuer.cert);
  const signingKey = await importSigningKey(options.issuer.keyPem);
  const keys = options.publicKey ? null : await generateKeyPair();
  const publicKey = options.publicKey ?? keys?.publicKey;
  if (publicKey?.type !== "public") throw invalid("publicKey must be a public CryptoKey");
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: [{ CN: [options.commonName] }],
    // The issuer's own encoded name, so name chaining is byte-exact.
    issuer: issuer.cert.subjectName,
    notBefore: new Date(window.notBefore),
    notAfter: new Date(window.notAfter),
    publicKey,
    signingKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: await leafExtensions(spec, sans, options.ocspUrl, publicKey, issuer),
  });
  return toIssuedCertificate(cert, keys ? privateKeyToPem(keys.privateKey) : null);
}

function leafProfileSpec(profile: LeafProfile): LeafProfileSpec {
  if (!Object.hasOwn(LEAF_PROFILES, profile)) throw invalid("unknown leaf profile");
  return LEAF_PROFILES[profile];
}

function checkSans(spec: LeafProfileSpec, input: LeafSansInput): SubjectAltNames {
  const dns = (input.dns ?? []).map((name) => canonicalDnsName(name) ?? fail(`invalid DNS name: ${name}`));
  const ip = (input.ip ?? []).map((address) => canonicalIp(address) ?? fail(`invalid IP address: ${address}`));
  const uri = (input.uri ?? []).map((value) => (isAbsoluteUri(value) ? value : fail(`invalid URI: ${value}`)));
  if (spec.requiresUriSan) checkIdentityUri(spec.requiresUriSan, uri);
  return { dns: unique(dns), ip: unique(ip), uri: unique(uri) };
}

// Exactly one URI and it is the identity: a second URI would give TLS peers and the CP two
// identities to choose between.
function checkIdentityUri(kind: "app" | "node", uris: string[]): void {
  const [only] = uris;
  if (uris.length !== 1 || only === undefined || parseIdentityUri(kind, only) === null) {
    fail(`profile requires exactly one URI SAN urn:authnexus:${kind}:<id>`);
  }
}

function checkOcspUrl(url: string): void {
  if (!isAbsoluteUri(url) || !/^https?:\/\//i.test(url)) fail("ocspUrl must be an http(s) URL");
}

interface Issuer extends DecodedCertificate {
  keyIdentifier: string | null;
}

function loadIssuer(profile: LeafProfile, spec: LeafProfileSpec, issuer: IssueLeafOptions["issuer"]): Issuer {
  const decoded = decodeCertificate(issuer.certPem);
  const info = describeCertificate(decoded);
  if (!info.isCa || (info.keyUsages.length > 0 && !info.keyUsages.includes("keyCertSign"))) {
    fail("issuer certificate is not a CA");
  }
  const issuerProfile = decoded.cert.subjectName.getField("OU").find(isCaProfile);
  if (issuerProfile !== undefined && issuerProfile !== spec.ca) {
    fail(`profile ${profile} must be issued by ${spec.ca}, not ${issuerProfile}`);
  }
  const certSpki = Buffer.from(AsnConvert.serialize(decoded.asn.tbsCertificate.subjectPublicKeyInfo));
  if (!spkiOfPrivateKey(issuer.keyPem).equals(certSpki)) fail("issuer key does not match issuer certificate");
  return { ...decoded, keyIdentifier: subjectKeyIdentifier(decoded.asn) };
}

function subjectKeyIdentifier(asn: asn1X509.Certificate): string | null {
  const extension = asn.tbsCertificate.extensions?.find((ext) => ext.extnID === asn1X509.id_ce_subjectKeyIdentifier);
  if (!extension) return null;
  const keyId = AsnConvert.parse(extension.extnValue, asn1X509.SubjectKeyIdentifier);
  return Buffer.from(keyId.buffer).toString("hex");
}

/** now-5min … now+days, never outside the issuer's own window (a leaf cannot outlive its CA). */
function leafWindow(nowMs: number, validityDays: number, issuer: x509.X509Certificate) {
  const wanted = validityWindow(nowMs, validityDays);
  const notBefore = Math.max(wanted.notBefore, issuer.notBefore.getTime());
  const notAfter = Math.min(wanted.notAfter, issuer.notAfter.getTime());
  if (notAfter <= nowMs) fail("issuer certificate has expired");
  if (notBefore > nowMs) fail("issuer certificate is not yet valid");
  return { notBefore, notAfter };
}

async function leafExtensions(
  spec: LeafProfileSpec,
  sans: SubjectAltNames,
  ocspUrl: string | undefined,
  publicKey: CryptoKey,
  issuer: Issuer,
): Promise<x509.Extension[]> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(LEAF_KEY_USAGES, true),
    new x509.ExtendedKeyUsageExtension([EKU_OIDS[spec.extendedKeyUsage]], false),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
    issuer.keyIdentifier
      ? new x509.AuthorityKeyIdentifierExtension(issuer.keyIdentifier)
      : await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey),
  ];
  const names = sanEntries(sans);
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  if (ocspUrl !== undefined) extensions.push(new x509.AuthorityInfoAccessExtension({ ocsp: [ocspUrl] }));
  if (spec.mustStaple) extensions.push(new x509.Extension(TLS_FEATURE_OID, false, MUST_STAPLE_DER));
  return extensions;
}

function sanEntries(sans: SubjectAltNames): x509.JsonGeneralNames {
  return [
    ...sans.dns.map((value) => ({ type: "dns" as const, value })),
    ...sans.ip.map((value) => ({ type: "ip" as const, value })),
    ...sans.uri.map((value) => ({ type: "url" as const, value })),
  ];
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

function fail(message: string): never {
  throw invalid(message);
}

function invalid(message: string): AuthNexusError {
  return new AuthNexusError("CERTIFICATE_INVALID", { message });
}
