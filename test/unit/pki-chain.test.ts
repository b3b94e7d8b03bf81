/**
 * Chain verification (layers 1 and 2 of business mTLS) and a real node:tls mTLS handshake
 * with certificates from the four-CA PKI.
 */
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import tls from "node:tls";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import {
  appUri,
  type CaProfile,
  createRootCa,
  type IssuedCertificate,
  issueLeafCertificate,
  LEAF_PROFILES,
  type LeafProfile,
  nodeUri,
  verifyCertificateChain,
  x509,
} from "../../src/shared/pki/index.js";
import { importSigningKey } from "../../src/shared/pki/keys.js";
import { type Clock, ManualClock, systemClock } from "../../src/shared/time/index.js";

const FROZEN_NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const DAY_MS = 86_400_000;

function issuerOf(ca: IssuedCertificate): { certPem: string; keyPem: string } {
  return { certPem: ca.certPem, keyPem: ca.keyPem ?? "" };
}

const LEAF_SANS: Record<LeafProfile, { dns?: string[]; ip?: string[]; uri?: string[] }> = {
  cp_server: { dns: ["localhost"], ip: ["127.0.0.1"] },
  node_server: { dns: ["localhost"], ip: ["127.0.0.1"] },
  node_client: { uri: [nodeUri("n1")] },
  app_client: { uri: [appUri("app1")] },
};

async function pki(clock: Clock) {
  const ca = async (profile: CaProfile) => createRootCa({ profile, commonName: `Test ${profile}`, clock });
  const cas = {
    cp_server_ca: await ca("cp_server_ca"),
    cp_node_client_ca: await ca("cp_node_client_ca"),
    tcp_server_ca: await ca("tcp_server_ca"),
    app_client_ca: await ca("app_client_ca"),
  };
  const leaf = (profile: LeafProfile, extra: { validityDays?: number; clock?: Clock } = {}) =>
    issueLeafCertificate({
      profile,
      issuer: issuerOf(cas[LEAF_PROFILES[profile].ca]),
      commonName: `test ${profile}`,
      sans: LEAF_SANS[profile],
      clock,
      ...extra,
    });
  return { cas, leaf };
}

/** A clientAuth certificate signed by `ca` with arbitrary URIs: what issueLeafCertificate refuses to make. */
async function forgeClientCert(ca: IssuedCertificate, uris: string[]): Promise<string> {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const caCert = new x509.X509Certificate(ca.certPem);
  const cert = await x509.X509CertificateGenerator.create({
    subject: "CN=forged",
    issuer: caCert.subjectName,
    notBefore: new Date(ca.notBefore),
    notAfter: new Date(ca.notAfter),
    publicKey: keys.publicKey,
    signingKey: await importSigningKey(ca.keyPem ?? ""),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      ...(uris.length ? [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: "url" as const, value })))] : []),
    ],
  });
  return cert.toString("pem");
}

describe("verifyCertificateChain", async () => {
  const clock = new ManualClock(FROZEN_NOW);
  const { cas, leaf } = await pki(clock);
  const allCas = Object.values(cas).map((ca) => ca.certPem);

  for (const profile of Object.keys(LEAF_PROFILES) as LeafProfile[]) {
    test(`accepts a ${profile} leaf against its CA and returns that CA`, async () => {
      const issued = await leaf(profile);
      const result = await verifyCertificateChain({ leaf: issued.certPem, trustedCas: allCas, clock, expectedProfile: profile });
      assert.ok(result.ok, JSON.stringify(result));
      assert.equal(result.issuerPem, cas[LEAF_PROFILES[profile].ca].certPem);
      assert.equal(result.info.serialHex, issued.serialHex);
      assert.deepEqual(result.info.sans.uri, LEAF_SANS[profile].uri ?? []);
    });
  }

  test("accepts DER input and a trust bundle in one string", async () => {
    const issued = await leaf("app_client");
    const bundle = cas.cp_server_ca.certPem + cas.app_client_ca.certPem;
    const result = await verifyCertificateChain({ leaf: issued.certDer, trustedCas: [bundle], clock, expectedProfile: "app_client" });
    assert.ok(result.ok);
  });

  test("UNTRUSTED_ISSUER when the issuing CA is not in the trust list", async () => {
    const issued = await leaf("app_client");
    const result = await verifyCertificateChain({ leaf: issued.certPem, trustedCas: [cas.cp_node_client_ca.certPem], clock });
    assert.deepEqual(result.ok ? null : result.reason, "UNTRUSTED_ISSUER");
    const none = await verifyCertificateChain({ leaf: issued.certPem, trustedCas: [], clock });
    assert.deepEqual(none.ok ? null : none.reason, "UNTRUSTED_ISSUER");
  });

  test("BAD_SIGNATURE for an impostor CA with the same name, and rotation with both trusted works", async () => {
    // An attacker can copy a CA's subject; only the key decides.
    const impostor = await createRootCa({ profile: "app_client_ca", commonName: "Test app_client_ca", clock });
    assert.equal(impostor.subject, cas.app_client_ca.subject);
    const forged = await issueLeafCertificate({
      profile: "app_client",
      issuer: issuerOf(impostor),
      commonName: "x",
      sans: LEAF_SANS.app_client,
      clock,
    });
    const result = await verifyCertificateChain({ leaf: forged.certPem, trustedCas: [cas.app_client_ca.certPem], clock });
    assert.deepEqual(result.ok ? null : result.reason, "BAD_SIGNATURE");
    const both = await verifyCertificateChain({ leaf: forged.certPem, trustedCas: [cas.app_client_ca.certPem, impostor.certPem], clock });
    assert.ok(both.ok);
    assert.equal(both.issuerPem, impostor.certPem);
  });

  test("BAD_SIGNATURE when a signed byte is tampered with", async () => {
    const issued = await leaf("app_client");
    const der = Buffer.from(issued.certDer);
    const at = der.indexOf(Buffer.from("app1"));
    assert.ok(at > 0);
    der[at] = "b".charCodeAt(0); // urn:authnexus:app:app1 -> bpp1, still well-formed
    const tampered = new x509.X509Certificate(der).toString("pem");
    const result = await verifyCertificateChain({ leaf: tampered, trustedCas: allCas, clock, expectedProfile: "app_client" });
    assert.deepEqual(result.ok ? null : result.reason, "BAD_SIGNATURE");
  });

  test("EXPIRED after notAfter, valid at notAfter exactly", async () => {
    const issued = await leaf("node_client", { validityDays: 1 });
    const later = new ManualClock(issued.notAfter);
    assert.ok((await verifyCertificateChain({ leaf: issued.certPem, trustedCas: allCas, clock: later })).ok);
    later.advance(1000);
    const result = await verifyCertificateChain({ leaf: issued.certPem, trustedCas: allCas, clock: later });
    assert.deepEqual(result.ok ? null : result.reason, "EXPIRED");
  });

  test("EXPIRED when the issuing CA has expired", async () => {
    const issued = await leaf("node_client");
    const result = await verifyCertificateChain({
      leaf: issued.certPem,
      trustedCas: allCas,
      clock: new ManualClock(FROZEN_NOW + 3651 * DAY_MS),
    });
    assert.ok(!result.ok && result.reason === "EXPIRED");
  });

  test("NOT_YET_VALID before notBefore (leaf issued tomorrow, checked today)", async () => {
    const tomorrow = new ManualClock(FROZEN_NOW + DAY_MS);
    const issued = await leaf("cp_server", { clock: tomorrow });
    const result = await verifyCertificateChain({ leaf: issued.certPem, trustedCas: allCas, clock });
    assert.ok(!result.ok);
    assert.equal(result.reason, "NOT_YET_VALID");
    assert.match(result.message, /^certificate/);
    assert.ok((await verifyCertificateChain({ leaf: issued.certPem, trustedCas: allCas, clock: tomorrow })).ok);
  });

  test("WRONG_EKU for a server certificate presented as a client certificate", async () => {
    const server = await leaf("cp_server");
    const result = await verifyCertificateChain({ leaf: server.certPem, trustedCas: allCas, clock, expectedProfile: "node_client" });
    assert.deepEqual(result.ok ? null : result.reason, "WRONG_EKU");
    const client = await leaf("app_client");
    const reverse = await verifyCertificateChain({ leaf: client.certPem, trustedCas: allCas, clock, expectedProfile: "node_server" });
    assert.deepEqual(reverse.ok ? null : reverse.reason, "WRONG_EKU");
  });

  test("BAD_URI_SAN for a client certificate without exactly one identity URI", async () => {
    const cases: [LeafProfile, string[]][] = [
      ["app_client", []],
      ["app_client", [appUri("a"), appUri("b")]],
      ["app_client", [nodeUri("a")]],
      ["node_client", [appUri("a")]],
      ["node_client", [nodeUri("a"), "https://example.test/"]],
    ];
    for (const [profile, uris] of cases) {
      const pem = await forgeClientCert(cas[LEAF_PROFILES[profile].ca], uris);
      const result = await verifyCertificateChain({ leaf: pem, trustedCas: allCas, clock, expectedProfile: profile });
      assert.deepEqual(result.ok ? null : result.reason, "BAD_URI_SAN", `${profile} ${uris.join(",")}`);
      // Without a profile only the chain is checked, so the same certificate passes.
      assert.ok((await verifyCertificateChain({ leaf: pem, trustedCas: allCas, clock })).ok);
    }
  });

  test("NOT_END_ENTITY for a CA certificate presented as a leaf", async () => {
    const result = await verifyCertificateChain({ leaf: cas.app_client_ca.certPem, trustedCas: allCas, clock });
    assert.deepEqual(result.ok ? null : result.reason, "NOT_END_ENTITY");
  });

  test("MALFORMED for a leaf that is not a certificate", async () => {
    for (const leafInput of ["garbage", "", cas.app_client_ca.keyPem ?? ""]) {
      const result = await verifyCertificateChain({ leaf: leafInput, trustedCas: allCas, clock });
      assert.deepEqual(result.ok ? null : result.reason, "MALFORMED");
    }
  });

  test("throws CERTIFICATE_INVALID when a trust anchor is not a certificate", async () => {
    const issued = await leaf("app_client");
    await assert.rejects(verifyCertificateChain({ leaf: issued.certPem, trustedCas: ["not a pem"], clock }), (e) =>
      isAuthNexusError(e, "CERTIFICATE_INVALID"),
    );
  });

  test("a leaf certificate in the trust list does not act as an issuer", async () => {
    // A leaf's subject can never match, but a non-CA anchor must be ignored even if it did.
    const issued = await leaf("app_client");
    const result = await verifyCertificateChain({ leaf: issued.certPem, trustedCas: [issued.certPem], clock });
    assert.ok(!result.ok && result.reason === "UNTRUSTED_ISSUER");
  });
});

interface HandshakeOutcome {
  serverAccepted: boolean;
  serverPeerSan: string | undefined;
  serverPeerRaw: Buffer | undefined;
  serverError: Error | undefined;
  clientAuthorized: boolean;
  clientError: Error | undefined;
}

/** One mTLS handshake on 127.0.0.1:0, settled once both ends have said how it went. */
async function handshake(
  server: { cert: string; key: string; ca: string },
  client: { cert: string; key: string; ca: string },
): Promise<HandshakeOutcome> {
  const outcome: HandshakeOutcome = {
    serverAccepted: false,
    serverPeerSan: undefined,
    serverPeerRaw: undefined,
    serverError: undefined,
    clientAuthorized: false,
    clientError: undefined,
  };
  const tlsServer = tls.createServer({ ...server, requestCert: true, rejectUnauthorized: true });
  let serverDone!: () => void;
  const serverSettled = new Promise<void>((resolve) => {
    serverDone = resolve;
  });
  tlsServer.on("secureConnection", (socket) => {
    outcome.serverAccepted = true;
    const peer = socket.getPeerCertificate();
    outcome.serverPeerSan = peer.subjectaltname;
    outcome.serverPeerRaw = peer.raw;
    socket.end("hello");
    serverDone();
  });
  tlsServer.on("tlsClientError", (error) => {
    outcome.serverError = error;
    serverDone();
  });
  await new Promise<void>((resolve) => tlsServer.listen(0, "127.0.0.1", resolve));
  const { port } = tlsServer.address() as AddressInfo;
  try {
    const clientSettled = new Promise<void>((resolve) => {
      const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ...client });
      socket.on("secureConnect", () => {
        outcome.clientAuthorized = socket.authorized;
      });
      socket.on("data", () => socket.end());
      socket.on("error", (error) => {
        outcome.clientError = error;
        resolve();
      });
      socket.on("close", () => resolve());
    });
    await Promise.all([serverSettled, clientSettled]);
  } finally {
    await new Promise<void>((resolve) => tlsServer.close(() => resolve()));
  }
  return outcome;
}

describe("mTLS with node:tls", { timeout: 10_000 }, async () => {
  // node:tls checks validity against the real time, so these certificates use the real clock.
  const { cas, leaf } = await pki(systemClock);
  const cpServer = await leaf("cp_server");
  const nodeClient = await leaf("node_client");
  const serverSide = { cert: cpServer.certPem, key: cpServer.keyPem ?? "", ca: cas.cp_node_client_ca.certPem };

  test("a node_client leaf authenticates to a cp_server leaf", async () => {
    const outcome = await handshake(serverSide, { cert: nodeClient.certPem, key: nodeClient.keyPem ?? "", ca: cas.cp_server_ca.certPem });
    assert.equal(outcome.serverError, undefined);
    assert.equal(outcome.serverAccepted, true);
    assert.equal(outcome.clientAuthorized, true);
    assert.match(outcome.serverPeerSan ?? "", /URI:urn:authnexus:node:n1/);
    // The DER node hands over verifies with the same code the CP uses.
    const check = await verifyCertificateChain({
      leaf: outcome.serverPeerRaw ?? Buffer.alloc(0),
      trustedCas: [cas.cp_node_client_ca.certPem],
      clock: systemClock,
      expectedProfile: "node_client",
    });
    assert.ok(check.ok);
    assert.equal(check.info.fingerprintSha256, nodeClient.fingerprintSha256);
  });

  test("a client certificate from another CA is refused by the server", async () => {
    const appClient = await leaf("app_client");
    const outcome = await handshake(serverSide, { cert: appClient.certPem, key: appClient.keyPem ?? "", ca: cas.cp_server_ca.certPem });
    assert.equal(outcome.serverAccepted, false);
    assert.ok(outcome.serverError, "server reports the refused client");
  });

  test("the client refuses a server certificate from a CA it does not trust", async () => {
    const outcome = await handshake(serverSide, { cert: nodeClient.certPem, key: nodeClient.keyPem ?? "", ca: cas.tcp_server_ca.certPem });
    assert.equal(outcome.serverAccepted, false);
    assert.equal(outcome.clientAuthorized, false);
    assert.ok(outcome.clientError, "client reports the untrusted server");
  });
});
