/**
 * Chain verification for AuthNexus's flat PKI: every leaf is signed directly by one of the
 * trusted roots, so a "chain" is leaf + one anchor. Layers 1 and 2 of business mTLS
 * (docs/architecture.md, "PKI") live here: chain to a trusted CA, then certificate semantics for the
 * expected profile. Untrusted input never throws: every failure is a result with a reason.
 */
import "./crypto-provider.js";
import { AsnConvert } from "@peculiar/asn1-schema";
import type * as asn1X509 from "@peculiar/asn1-x509";
import { AuthNexusError, isAuthNexusError } from "../errors/index.js";
import type { Clock } from "../time/index.js";
import {
  type CertificateInfo,
  type DecodedCertificate,
  decodeCertificate,
  describeCertificate,
  splitPemBundle,
} from "./parse-certificate.js";
import { LEAF_PROFILES, type LeafProfile, parseIdentityUri } from "./profiles.js";

export type ChainFailureReason =
  | "MALFORMED"
  | "UNTRUSTED_ISSUER"
  | "BAD_SIGNATURE"
  | "NOT_YET_VALID"
  | "EXPIRED"
  | "NOT_END_ENTITY"
  | "WRONG_EKU"
  | "BAD_URI_SAN";

export type ChainVerificationResult =
  | { ok: true; issuerPem: string; info: CertificateInfo }
  | { ok: false; reason: ChainFailureReason; message: string };

export interface VerifyChainOptions {
  /** The certificate to check (the peer's): PEM, or DER as from getPeerCertificate().raw. */
  leaf: string | Buffer;
  /**
   * PEMs of the trusted roots; an entry may be a bundle of several. These are configuration,
   * not peer input: an entry that is not a certificate throws CERTIFICATE_INVALID.
   */
  trustedCas: string[];
  clock: Clock;
  /** When given, also require the profile's EKU and identity URI. */
  expectedProfile?: LeafProfile;
}

interface Anchor extends DecodedCertificate {
  info: CertificateInfo;
  pem: string;
}

type Failure = Extract<ChainVerificationResult, { ok: false }>;

export async function verifyCertificateChain(options: VerifyChainOptions): Promise<ChainVerificationResult> {
  const anchors = loadAnchors(options.trustedCas);
  const leaf = decodeLeaf(options.leaf);
  if ("reason" in leaf) return leaf;
  const issuer = await findIssuer(leaf.decoded, anchors);
  if ("reason" in issuer) return issuer;
  const now = options.clock.now();
  const failure =
    checkEndEntity(leaf.info) ??
    checkWindow(issuer.info, now, "issuing CA") ??
    checkWindow(leaf.info, now, "certificate") ??
    (options.expectedProfile ? checkProfile(leaf.info, options.expectedProfile) : null);
  return failure ?? { ok: true, issuerPem: issuer.pem, info: leaf.info };
}

function loadAnchors(trustedCas: string[]): Anchor[] {
  return trustedCas.flatMap((entry) => {
    const pems = splitPemBundle(entry);
    if (pems.length === 0) {
      throw new AuthNexusError("CERTIFICATE_INVALID", { message: "trusted CA entry holds no certificate" });
    }
    return pems.map((pem) => {
      const decoded = decodeCertificate(pem);
      return { ...decoded, info: describeCertificate(decoded), pem };
    });
  });
}

function decodeLeaf(pem: string | Buffer): { decoded: DecodedCertificate; info: CertificateInfo } | Failure {
  try {
    const decoded = decodeCertificate(pem);
    return { decoded, info: describeCertificate(decoded) };
  } catch (error) {
    if (!isAuthNexusError(error, "CERTIFICATE_INVALID")) throw error;
    return fail("MALFORMED", error.message);
  }
}

/**
 * The anchor whose subject is the leaf's issuer and whose key verifies the leaf's signature.
 * Several anchors may share a name (a CA being rotated), so each one is tried.
 */
async function findIssuer(leaf: DecodedCertificate, anchors: Anchor[]): Promise<Anchor | Failure> {
  const issuerName = nameDer(leaf.asn.tbsCertificate.issuer);
  const named = anchors.filter((anchor) => anchor.info.isCa && nameDer(anchor.asn.tbsCertificate.subject).equals(issuerName));
  if (named.length === 0) return fail("UNTRUSTED_ISSUER", "issuer is not a trusted CA");
  if (!signatureAlgorithmsAgree(leaf.asn)) return fail("BAD_SIGNATURE", "signature algorithm fields disagree");
  for (const anchor of named) {
    if (canSignCertificates(anchor.info) && (await signedBy(leaf, anchor))) return anchor;
  }
  return fail("BAD_SIGNATURE", "signature does not verify under the trusted CA");
}

function nameDer(name: asn1X509.Name): Buffer {
  return Buffer.from(AsnConvert.serialize(name));
}

// RFC 5280 §4.1.1.2: the signed and unsigned algorithm fields must be identical; otherwise
// the algorithm actually checked is not the one the signer committed to.
function signatureAlgorithmsAgree(asn: asn1X509.Certificate): boolean {
  const outer = Buffer.from(AsnConvert.serialize(asn.signatureAlgorithm));
  return outer.equals(Buffer.from(AsnConvert.serialize(asn.tbsCertificate.signature)));
}

function canSignCertificates(info: CertificateInfo): boolean {
  return info.keyUsages.length === 0 || info.keyUsages.includes("keyCertSign");
}

async function signedBy(leaf: DecodedCertificate, anchor: Anchor): Promise<boolean> {
  try {
    return await leaf.cert.verify({ publicKey: anchor.cert.publicKey, signatureOnly: true });
  } catch {
    return false;
  }
}

// A CA certificate presented as a peer certificate is never acceptable: it would let the
// holder of any root key authenticate as that root.
function checkEndEntity(info: CertificateInfo): Failure | null {
  return info.isCa ? fail("NOT_END_ENTITY", "certificate is a CA certificate") : null;
}

/** RFC 5280 validity is inclusive at both ends. */
function checkWindow(info: CertificateInfo, now: number, what: string): Failure | null {
  if (now < info.notBefore) return fail("NOT_YET_VALID", `${what} is not yet valid`);
  if (now > info.notAfter) return fail("EXPIRED", `${what} has expired`);
  return null;
}

function checkProfile(info: CertificateInfo, profile: LeafProfile): Failure | null {
  const spec = LEAF_PROFILES[profile];
  if (!info.extendedKeyUsages.includes(spec.extendedKeyUsage)) {
    return fail("WRONG_EKU", `certificate lacks the ${spec.extendedKeyUsage} extended key usage`);
  }
  const kind = spec.requiresUriSan;
  if (kind === null) return null;
  const [only] = info.sans.uri;
  if (info.sans.uri.length !== 1 || only === undefined || parseIdentityUri(kind, only) === null) {
    return fail("BAD_URI_SAN", `certificate must carry exactly one URI SAN urn:authnexus:${kind}:<id>`);
  }
  return null;
}

function fail(reason: ChainFailureReason, message: string): Failure {
  return { ok: false, reason, message };
}
