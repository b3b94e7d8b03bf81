/**
 * Test PKI for the OCSP responder tests: mints ECDSA P-256 CAs and leaves with @peculiar/x509.
 */
import "reflect-metadata";
import { KeyObject, randomBytes, webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import type { CertIdQuery, OcspResolver, ResolvedIssuer } from "../../src/cp/ocsp/index.js";
import { computeIssuerHashes, type OcspCertStatus } from "../../src/shared/pki/ocsp/index.js";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC_ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface TestCert {
  readonly cert: x509.X509Certificate;
  readonly certDer: Buffer;
  readonly certPem: string;
  /** Canonical lowercase hex serial (first octet 01..7f, so no stripping applies). */
  readonly serialHex: string;
  readonly privateKey: KeyObject;
  readonly keyPem: string;
}

/** A positive serial whose first octet is non-zero and has the top bit clear. */
export function randomSerialHex(bytes = 16): string {
  const serial = randomBytes(bytes);
  serial[0] = ((serial[0] as number) & 0x7f) | 0x01;
  return serial.toString("hex");
}

async function finish(cert: x509.X509Certificate, keys: CryptoKeyPair): Promise<TestCert> {
  const privateKey = KeyObject.from(keys.privateKey);
  return {
    cert,
    certDer: Buffer.from(cert.rawData),
    certPem: cert.toString("pem"),
    serialHex: cert.serialNumber.toLowerCase(),
    privateKey,
    keyPem: privateKey.export({ type: "pkcs8", format: "pem" }) as string,
  };
}

/**
 * A CA certificate: self-signed root when `issuer` is absent, else an intermediate signed by
 * `issuer`. Key usage keyCertSign + cRLSign only (no digitalSignature), as CA certs usually are.
 */
export async function mintCa(commonName: string, issuer?: TestCert): Promise<TestCert> {
  const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const now = Date.now();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  const common = {
    serialNumber: randomSerialHex(),
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 365 * DAY_MS),
    signingAlgorithm: EC_ALG,
  };
  if (issuer === undefined) {
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      ...common,
      name: `CN=${commonName}, O=AuthNexus Test`,
      keys,
      extensions,
    });
    return finish(cert, keys);
  }
  extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.cert));
  const cert = await x509.X509CertificateGenerator.create({
    ...common,
    subject: `CN=${commonName}, O=AuthNexus Test`,
    issuer: issuer.cert.subject,
    publicKey: keys.publicKey,
    signingKey: await issuerSigningKey(issuer),
    extensions,
  });
  return finish(cert, keys);
}

async function issuerSigningKey(issuer: TestCert): Promise<CryptoKey> {
  const pkcs8 = issuer.privateKey.export({ type: "pkcs8", format: "der" });
  return (await webcrypto.subtle.importKey("pkcs8", pkcs8, EC_ALG, false, ["sign"])) as CryptoKey;
}

/** A TLS server leaf issued by `ca`. */
export async function mintLeaf(ca: TestCert, commonName: string): Promise<TestCert> {
  const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: `CN=${commonName}`,
    issuer: ca.cert.subject,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 30 * DAY_MS),
    signingAlgorithm: EC_ALG,
    publicKey: keys.publicKey,
    signingKey: await issuerSigningKey(ca),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "dns", value: commonName }]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return finish(cert, keys);
}

export interface TestPki {
  readonly ca: TestCert;
  readonly leaves: TestCert[];
}

/** A root CA and `count` leaves it issued. */
export async function mintPki(count = 3, caName = "AuthNexus OCSP Test CA"): Promise<TestPki> {
  const ca = await mintCa(caName);
  const leaves: TestCert[] = [];
  for (let i = 0; i < count; i++) leaves.push(await mintLeaf(ca, `node${i}.test.authnexus`));
  return { ca, leaves };
}

export interface InventoryCa {
  readonly ca: TestCert;
  /** serialHex -> status; serials not listed answer `unknown`. */
  readonly statuses: ReadonlyMap<string, OcspCertStatus>;
}

/**
 * A resolver over an in-memory inventory, matching CertIDs by SHA-1 or SHA-256 issuer hashes
 * the way the CP's resolver does. `calls` counts invocations.
 */
export function inventoryResolver(cas: readonly InventoryCa[]): OcspResolver & { calls: number } {
  const byHashes = new Map<string, InventoryCa>();
  for (const entry of cas) {
    const hashes = computeIssuerHashes(entry.ca.certDer);
    for (const [alg, pair] of Object.entries(hashes)) {
      byHashes.set(`${alg}:${pair.nameHash.toString("hex")}:${pair.keyHash.toString("hex")}`, entry);
    }
  }
  const resolver = Object.assign(
    (query: CertIdQuery): ResolvedIssuer | null => {
      resolver.calls++;
      const key = `${query.hashAlgorithm}:${query.issuerNameHash.toString("hex")}:${query.issuerKeyHash.toString("hex")}`;
      const entry = byHashes.get(key);
      if (entry === undefined) return null;
      return {
        signer: { certDer: entry.ca.certDer, privateKey: entry.ca.privateKey },
        status: entry.statuses.get(query.serialHex) ?? { kind: "unknown" },
      };
    },
    { calls: 0 },
  );
  return resolver;
}
