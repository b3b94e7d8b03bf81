/**
 * PKI issuance and parsing: the four roots, the four leaf profiles, and the input checks that
 * keep a malformed or mis-profiled certificate from ever being signed.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, createPrivateKey, createPublicKey, webcrypto } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { type ErrorCode, isAuthNexusError } from "../../src/shared/errors/index.js";
import {
  appUri,
  CA_PROFILES,
  type CaProfile,
  createRootCa,
  type IssuedCertificate,
  type IssueLeafOptions,
  isCaProfile,
  isLeafProfile,
  issueLeafCertificate,
  LEAF_PROFILE_NAMES,
  LEAF_PROFILES,
  type LeafProfile,
  nodeUri,
  parseAppUri,
  parseCertificate,
  parseNodeUri,
  splitPemBundle,
  x509,
} from "../../src/shared/pki/index.js";
import { ManualClock } from "../../src/shared/time/index.js";

const FROZEN_NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const DAY_MS = 86_400_000;
const SKEW_MS = 5 * 60_000;
const OCSP_URL = "http://127.0.0.1:9092/ocsp/";
const TLS_FEATURE_OID = "1.3.6.1.5.5.7.1.24";
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

function codeIs(code: ErrorCode, message?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(isAuthNexusError(error, code), `expected AuthNexusError ${code}, got ${String(error)}`);
    if (message) assert.match(error.message, message);
    return true;
  };
}

function spkiOf(certPem: string): Buffer {
  return createPublicKey(certPem).export({ type: "spki", format: "der" });
}

async function rootCas(clock: ManualClock): Promise<Record<CaProfile, IssuedCertificate>> {
  const entries = await Promise.all(
    CA_PROFILES.map(async (profile) => [profile, await createRootCa({ profile, commonName: `AuthNexus ${profile}`, clock })] as const),
  );
  return Object.fromEntries(entries) as Record<CaProfile, IssuedCertificate>;
}

/** Valid options for each profile; tests override one field at a time. */
function leafOptions(profile: LeafProfile, cas: Record<CaProfile, IssuedCertificate>, clock: ManualClock): IssueLeafOptions {
  const ca = cas[LEAF_PROFILES[profile].ca];
  const issuer = { certPem: ca.certPem, keyPem: ca.keyPem ?? "" };
  switch (profile) {
    case "cp_server":
      return { profile, issuer, clock, commonName: "cp.example.test", sans: { dns: ["cp.example.test", "localhost"], ip: ["127.0.0.1"] } };
    case "node_server":
      return {
        profile,
        issuer,
        clock,
        commonName: "node-7.example.test",
        sans: { dns: ["node-7.example.test"], ip: ["10.0.0.7"], uri: [nodeUri("node-7")] },
        ocspUrl: OCSP_URL,
      };
    case "node_client":
      return { profile, issuer, clock, commonName: "node-7", sans: { uri: [nodeUri("node-7")] } };
    case "app_client":
      return { profile, issuer, clock, commonName: "app billing", sans: { uri: [appUri("app_billing-01")] } };
  }
}

describe("profiles", () => {
  test("identity URIs round-trip and refuse anything but the exact form", () => {
    assert.equal(appUri("app_1"), "urn:authnexus:app:app_1");
    assert.equal(nodeUri("n-1"), "urn:authnexus:node:n-1");
    assert.equal(parseAppUri("urn:authnexus:app:app_1"), "app_1");
    assert.equal(parseNodeUri("urn:authnexus:node:n-1"), "n-1");
    assert.equal(parseAppUri("urn:authnexus:node:n-1"), null);
    assert.equal(parseNodeUri("urn:authnexus:app:app_1"), null);
    assert.equal(parseAppUri("URN:authnexus:app:app_1"), null);
    assert.equal(parseAppUri("urn:authnexus:app:"), null);
    assert.equal(parseAppUri(`urn:authnexus:app:${"a".repeat(65)}`), null);
    assert.equal(parseAppUri(`urn:authnexus:app:${"a".repeat(64)}`), "a".repeat(64));
    assert.equal(parseAppUri("urn:authnexus:app:a/b"), null);
    assert.throws(() => appUri("bad id"), TypeError);
    assert.throws(() => nodeUri(""), TypeError);
  });

  test("the profile table matches the documented PKI (docs/architecture.md)", () => {
    assert.deepEqual([...CA_PROFILES], ["cp_server_ca", "cp_node_client_ca", "tcp_server_ca", "app_client_ca"]);
    assert.deepEqual(
      LEAF_PROFILE_NAMES.filter((p) => LEAF_PROFILES[p].mustStaple),
      ["node_server"],
    );
    assert.equal(LEAF_PROFILES.node_server.ca, "tcp_server_ca");
    assert.equal(LEAF_PROFILES.app_client.requiresUriSan, "app");
    assert.equal(LEAF_PROFILES.node_client.requiresUriSan, "node");
    assert.ok(isCaProfile("app_client_ca") && !isCaProfile("app_client"));
    assert.ok(isLeafProfile("app_client") && !isLeafProfile("toString"));
  });
});

describe("createRootCa", () => {
  for (const profile of CA_PROFILES) {
    test(`${profile} is a self-signed P-256 CA with the CA extensions`, async () => {
      const clock = new ManualClock(FROZEN_NOW);
      const ca = await createRootCa({ profile, commonName: `Root ${profile}`, clock });
      const cert = new x509.X509Certificate(ca.certPem);

      assert.equal(await cert.isSelfSigned(), true);
      assert.equal(await cert.verify({ signatureOnly: true }), true);
      assert.equal(ca.subject, ca.issuer);
      assert.deepEqual(cert.subjectName.getField("OU"), [profile]);
      assert.deepEqual(cert.subjectName.getField("O"), ["AuthNexus"]);
      assert.deepEqual(cert.subjectName.getField("CN"), [`Root ${profile}`]);
      const signatureAlgorithm = cert.signatureAlgorithm as unknown as { name: string; hash?: { name: string } };
      assert.equal(signatureAlgorithm.name, "ECDSA");
      assert.equal(signatureAlgorithm.hash?.name, "SHA-256");
      assert.equal((cert.publicKey.algorithm as { namedCurve?: string }).namedCurve, "P-256");

      const basic = cert.getExtension(x509.BasicConstraintsExtension);
      assert.ok(basic?.critical && basic.ca);
      assert.equal(basic.pathLength, 0);
      const usage = cert.getExtension(x509.KeyUsagesExtension);
      assert.ok(usage?.critical);
      const f = x509.KeyUsageFlags;
      assert.equal(usage.usages, f.keyCertSign | f.cRLSign | f.digitalSignature);
      assert.ok(cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);

      assert.equal(ca.notBefore, FROZEN_NOW - SKEW_MS);
      assert.equal(ca.notAfter, FROZEN_NOW + 3650 * DAY_MS);
      const info = parseCertificate(ca.certPem);
      assert.equal(info.isCa, true);
      assert.equal(info.serialHex, ca.serialHex);

      assert.ok(ca.keyPem?.startsWith("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
      assert.deepEqual(createPublicKey(createPrivateKey(ca.keyPem ?? "")).export({ type: "spki", format: "der" }), spkiOf(ca.certPem));
    });
  }

  test("honours organisation and validityDays", async () => {
    const clock = new ManualClock(FROZEN_NOW);
    const ca = await createRootCa({ profile: "app_client_ca", commonName: "X", organisation: "Acme, Inc.", validityDays: 30, clock });
    assert.deepEqual(new x509.X509Certificate(ca.certPem).subjectName.getField("O"), ["Acme, Inc."]);
    assert.equal(ca.notAfter, FROZEN_NOW + 30 * DAY_MS);
  });

  test("rejects an empty common name, a non-positive validity and an unknown profile", async () => {
    const clock = new ManualClock(FROZEN_NOW);
    await assert.rejects(createRootCa({ profile: "tcp_server_ca", commonName: " ", clock }), codeIs("CERTIFICATE_INVALID"));
    await assert.rejects(
      createRootCa({ profile: "tcp_server_ca", commonName: "x", validityDays: 0, clock }),
      codeIs("CERTIFICATE_INVALID"),
    );
    await assert.rejects(createRootCa({ profile: "bogus" as CaProfile, commonName: "x", clock }), codeIs("CERTIFICATE_INVALID"));
  });
});

describe("issueLeafCertificate", async () => {
  const clock = new ManualClock(FROZEN_NOW);
  const cas = await rootCas(clock);

  for (const profile of LEAF_PROFILE_NAMES) {
    test(`${profile} carries the profile's EKU, SANs, must-staple and key identifiers`, async () => {
      const spec = LEAF_PROFILES[profile];
      const options = leafOptions(profile, cas, clock);
      const leaf = await issueLeafCertificate(options);
      const ca = cas[spec.ca];
      const cert = new x509.X509Certificate(leaf.certPem);
      const caCert = new x509.X509Certificate(ca.certPem);

      assert.equal(await cert.verify({ publicKey: caCert.publicKey, signatureOnly: true }), true);
      assert.equal(leaf.issuer, ca.subject);
      assert.equal(leaf.subject, `CN=${options.commonName}`);

      const basic = cert.getExtension(x509.BasicConstraintsExtension);
      assert.ok(basic?.critical);
      assert.equal(basic.ca, false);
      const usage = cert.getExtension(x509.KeyUsagesExtension);
      assert.ok(usage?.critical && (usage.usages & x509.KeyUsageFlags.digitalSignature) !== 0);
      assert.equal(usage.usages & x509.KeyUsageFlags.keyCertSign, 0);
      const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
      assert.deepEqual([...(eku?.usages ?? [])], [spec.extendedKeyUsage === "serverAuth" ? SERVER_AUTH : CLIENT_AUTH]);

      const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension);
      assert.equal(aki?.keyId, caCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
      assert.ok(cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);

      const tlsFeature = cert.getExtension(TLS_FEATURE_OID);
      if (spec.mustStaple) assert.deepEqual(tlsFeature && Buffer.from(tlsFeature.value), Buffer.from([0x30, 0x03, 0x02, 0x01, 0x05]));
      else assert.equal(tlsFeature, null);

      const aia = cert.getExtension(x509.AuthorityInfoAccessExtension);
      assert.deepEqual(
        aia?.ocsp.map((n) => n.value),
        options.ocspUrl ? [options.ocspUrl] : undefined,
      );

      const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
      const uris = san?.names.items.filter((n) => n.type === "url").map((n) => n.value) ?? [];
      assert.deepEqual(uris, options.sans?.uri ?? []);

      const info = parseCertificate(leaf.certPem);
      assert.deepEqual(info.extendedKeyUsages, [spec.extendedKeyUsage]);
      assert.equal(info.mustStaple, spec.mustStaple);
      assert.equal(info.isCa, false);
      assert.deepEqual(info.ocspUrls, options.ocspUrl ? [options.ocspUrl] : []);
      assert.deepEqual(info.sans, { dns: options.sans?.dns ?? [], ip: options.sans?.ip ?? [], uri: options.sans?.uri ?? [] });
      assert.deepEqual(leaf.sans, info.sans);
    });
  }

  test("serials are 16 positive random bytes and parse back to serialHex", async () => {
    const serials = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const leaf = await issueLeafCertificate(leafOptions("app_client", cas, clock));
      assert.match(leaf.serialHex, /^[4-7][0-9a-f]{31}$/, "top bit clear, second bit set, 16 bytes");
      assert.equal(parseCertificate(leaf.certDer).serialHex, leaf.serialHex);
      assert.equal(new x509.X509Certificate(leaf.certDer).serialNumber.toLowerCase(), leaf.serialHex);
      serials.add(leaf.serialHex);
    }
    assert.equal(serials.size, 8);
  });

  test("reports PEM, DER, fingerprint and validity consistently", async () => {
    const leaf = await issueLeafCertificate(leafOptions("cp_server", cas, clock));
    assert.deepEqual(Buffer.from(new x509.X509Certificate(leaf.certPem).rawData), leaf.certDer);
    assert.equal(leaf.fingerprintSha256, createHash("sha256").update(leaf.certDer).digest("hex"));
    assert.equal(leaf.notBefore, FROZEN_NOW - SKEW_MS);
    assert.equal(leaf.notAfter, FROZEN_NOW + 397 * DAY_MS);
    assert.ok(leaf.keyPem?.startsWith("-----BEGIN PRIVATE KEY-----"));
    assert.deepEqual(createPublicKey(leaf.keyPem ?? "").export({ type: "spki", format: "der" }), spkiOf(leaf.certPem));
  });

  test("never outlives its issuer", async () => {
    const shortCa = await createRootCa({ profile: "app_client_ca", commonName: "short", validityDays: 10, clock });
    const leaf = await issueLeafCertificate({
      ...leafOptions("app_client", cas, clock),
      issuer: { certPem: shortCa.certPem, keyPem: shortCa.keyPem ?? "" },
      validityDays: 365,
    });
    assert.equal(leaf.notAfter, shortCa.notAfter);
  });

  test("certifies a caller-supplied public key and returns no private key", async () => {
    const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
    const leaf = await issueLeafCertificate({ ...leafOptions("node_client", cas, clock), publicKey: keys.publicKey });
    assert.equal(leaf.keyPem, null);
    assert.deepEqual(spkiOf(leaf.certPem), Buffer.from(await webcrypto.subtle.exportKey("spki", keys.publicKey)));
  });

  test("canonicalises DNS and IP SANs", async () => {
    const leaf = await issueLeafCertificate({
      ...leafOptions("cp_server", cas, clock),
      sans: { dns: ["CP.Example.TEST", "*.nodes.example.test"], ip: ["2001:DB8::0:1", "::1", "127.0.0.1"] },
    });
    assert.deepEqual(leaf.sans, { dns: ["cp.example.test", "*.nodes.example.test"], ip: ["2001:db8::1", "::1", "127.0.0.1"], uri: [] });
  });

  test("openssl reads must-staple, OCSP and the identity URI on a node_server leaf", async () => {
    const leaf = await issueLeafCertificate(leafOptions("node_server", cas, clock));
    const text = execFileSync("openssl", ["x509", "-noout", "-text"], { input: leaf.certPem, encoding: "utf8" });
    assert.match(text, /TLS Feature:\s*\n\s*status_request/);
    assert.match(text, /OCSP - URI:http:\/\/127\.0\.0\.1:9092\/ocsp\//);
    assert.match(text, /URI:urn:authnexus:node:node-7/);
    assert.match(text, /DNS:node-7\.example\.test/);
    assert.match(text, /IP Address:10\.0\.0\.7/);
    assert.match(text, /TLS Web Server Authentication/);
    assert.match(text, /CA:FALSE/);
    assert.match(text, /ASN1 OID: prime256v1/);
    const serial = execFileSync("openssl", ["x509", "-noout", "-serial"], { input: leaf.certPem, encoding: "utf8" });
    assert.equal(serial.trim(), `serial=${leaf.serialHex.toUpperCase()}`);
  });

  test("openssl reads the app identity and clientAuth on an app_client leaf", async () => {
    const leaf = await issueLeafCertificate(leafOptions("app_client", cas, clock));
    const text = execFileSync("openssl", ["x509", "-noout", "-text"], { input: leaf.certPem, encoding: "utf8" });
    assert.match(text, /URI:urn:authnexus:app:app_billing-01/);
    assert.match(text, /TLS Web Client Authentication/);
    assert.doesNotMatch(text, /TLS Feature/);
  });

  test("openssl verify accepts every leaf under its own CA and refuses it under another", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pki-test-"));
    try {
      const attime = String(Math.floor(FROZEN_NOW / 1000));
      for (const profile of LEAF_PROFILE_NAMES) {
        const spec = LEAF_PROFILES[profile];
        const leaf = await issueLeafCertificate(leafOptions(profile, cas, clock));
        const other = cas[spec.ca === "app_client_ca" ? "cp_server_ca" : "app_client_ca"];
        writeFileSync(join(dir, "leaf.pem"), leaf.certPem);
        writeFileSync(join(dir, "ca.pem"), cas[spec.ca].certPem);
        writeFileSync(join(dir, "other.pem"), other.certPem);
        const purpose = spec.extendedKeyUsage === "serverAuth" ? "sslserver" : "sslclient";
        const out = execFileSync(
          "openssl",
          ["verify", "-attime", attime, "-purpose", purpose, "-CAfile", join(dir, "ca.pem"), join(dir, "leaf.pem")],
          {
            encoding: "utf8",
          },
        );
        assert.match(out, /leaf\.pem: OK/, profile);
        assert.throws(
          () =>
            execFileSync("openssl", ["verify", "-attime", attime, "-CAfile", join(dir, "other.pem"), join(dir, "leaf.pem")], {
              stdio: "pipe",
            }),
          profile,
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe("refuses invalid input with CERTIFICATE_INVALID", () => {
    const cases: [string, (base: IssueLeafOptions) => IssueLeafOptions][] = [
      ["empty commonName", (b) => ({ ...b, commonName: "" })],
      ["blank commonName", (b) => ({ ...b, commonName: "   " })],
      ["overlong commonName", (b) => ({ ...b, commonName: "x".repeat(65) })],
      ["DNS name with underscore", (b) => ({ ...b, sans: { dns: ["bad_name.example"] } })],
      ["DNS name with leading hyphen", (b) => ({ ...b, sans: { dns: ["-a.example"] } })],
      ["DNS name with empty label", (b) => ({ ...b, sans: { dns: ["a..example"] } })],
      ["DNS name with a space", (b) => ({ ...b, sans: { dns: ["exa mple.test"] } })],
      ["DNS label over 63 characters", (b) => ({ ...b, sans: { dns: [`${"a".repeat(64)}.test`] } })],
      ["IPv4 out of range", (b) => ({ ...b, sans: { ip: ["999.1.1.1"] } })],
      ["IPv4 too short", (b) => ({ ...b, sans: { ip: ["1.2.3"] } })],
      ["IP that is a name", (b) => ({ ...b, sans: { ip: ["localhost"] } })],
      ["URI that is not absolute", (b) => ({ ...b, sans: { uri: ["not a uri"] } })],
      ["zero validity", (b) => ({ ...b, validityDays: 0 })],
      ["negative validity", (b) => ({ ...b, validityDays: -1 })],
      ["NaN validity", (b) => ({ ...b, validityDays: Number.NaN })],
      ["non-http OCSP URL", (b) => ({ ...b, ocspUrl: "ftp://ocsp.example.test/" })],
    ];
    for (const [name, mutate] of cases) {
      test(name, async () => {
        await assert.rejects(issueLeafCertificate(mutate(leafOptions("cp_server", cas, clock))), codeIs("CERTIFICATE_INVALID"));
      });
    }

    const uriCases: [LeafProfile, string, string[] | undefined][] = [
      ["app_client", "no URI", undefined],
      ["app_client", "two app URIs", [appUri("a"), appUri("b")]],
      ["app_client", "an app URI plus another URI", [appUri("a"), "https://example.test/"]],
      ["app_client", "a node URI", [nodeUri("a")]],
      ["app_client", "an app id that is too long", [`urn:authnexus:app:${"a".repeat(65)}`]],
      ["node_client", "no URI", undefined],
      ["node_client", "an app URI", [appUri("a")]],
      ["node_client", "an empty node id", ["urn:authnexus:node:"]],
    ];
    for (const [profile, name, uri] of uriCases) {
      test(`${profile} with ${name}`, async () => {
        const options = leafOptions(profile, cas, clock);
        await assert.rejects(issueLeafCertificate({ ...options, sans: uri ? { uri } : {} }), codeIs("CERTIFICATE_INVALID"));
      });
    }

    test("an issuer that is not a CA", async () => {
      const leaf = await issueLeafCertificate(leafOptions("cp_server", cas, clock));
      const options = { ...leafOptions("cp_server", cas, clock), issuer: { certPem: leaf.certPem, keyPem: leaf.keyPem ?? "" } };
      await assert.rejects(issueLeafCertificate(options), codeIs("CERTIFICATE_INVALID", /not a CA/));
    });

    test("a CA of another profile", async () => {
      const wrong = cas.app_client_ca;
      const options = { ...leafOptions("node_server", cas, clock), issuer: { certPem: wrong.certPem, keyPem: wrong.keyPem ?? "" } };
      await assert.rejects(issueLeafCertificate(options), codeIs("CERTIFICATE_INVALID", /must be issued by tcp_server_ca/));
    });

    test("an issuer key that does not belong to the issuer certificate", async () => {
      const ca = cas.cp_server_ca;
      const options = { ...leafOptions("cp_server", cas, clock), issuer: { certPem: ca.certPem, keyPem: cas.app_client_ca.keyPem ?? "" } };
      await assert.rejects(issueLeafCertificate(options), codeIs("CERTIFICATE_INVALID", /does not match/));
    });

    test("an unreadable issuer certificate or key", async () => {
      const base = leafOptions("cp_server", cas, clock);
      await assert.rejects(issueLeafCertificate({ ...base, issuer: { ...base.issuer, certPem: "junk" } }), codeIs("CERTIFICATE_INVALID"));
      await assert.rejects(issueLeafCertificate({ ...base, issuer: { ...base.issuer, keyPem: "junk" } }), codeIs("CERTIFICATE_INVALID"));
    });

    test("an expired issuer", async () => {
      const late = new ManualClock(FROZEN_NOW + 3651 * DAY_MS);
      await assert.rejects(
        issueLeafCertificate({ ...leafOptions("cp_server", cas, clock), clock: late }),
        codeIs("CERTIFICATE_INVALID", /expired/),
      );
    });
  });
});

describe("parseCertificate", async () => {
  const clock = new ManualClock(FROZEN_NOW);
  const ca = await createRootCa({ profile: "cp_server_ca", commonName: "parse", clock });

  test("reads PEM text, a PEM Buffer and DER identically", () => {
    const der = new x509.X509Certificate(ca.certPem).rawData;
    const fromPem = parseCertificate(ca.certPem);
    assert.deepEqual(parseCertificate(Buffer.from(der)), fromPem);
    assert.deepEqual(parseCertificate(Buffer.from(ca.certPem)), fromPem);
    assert.equal(fromPem.publicKeySpkiSha256, createHash("sha256").update(spkiOf(ca.certPem)).digest("hex"));
  });

  test("throws CERTIFICATE_INVALID on garbage", () => {
    const der = ca.certDer;
    const garbage: (string | Buffer)[] = [
      "",
      "hello",
      "-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n",
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
      ca.certPem + ca.certPem,
      ca.keyPem ?? "",
      Buffer.alloc(0),
      Buffer.from("3003020105", "hex"),
      der.subarray(0, der.length - 10),
      Buffer.concat([der, Buffer.from([0])]),
    ];
    for (const input of garbage) assert.throws(() => parseCertificate(input), codeIs("CERTIFICATE_INVALID"));
  });

  test("splitPemBundle returns each certificate canonically and skips other blocks", async () => {
    const other = await createRootCa({ profile: "tcp_server_ca", commonName: "other", clock });
    const messy = `junk\r\n${ca.certPem.replace(/\n/g, "\r\n")}\n${ca.keyPem}\n  ${other.certPem}trailing`;
    assert.deepEqual(splitPemBundle(messy), [ca.certPem, other.certPem]);
    assert.deepEqual(splitPemBundle("nothing here"), []);
  });
});
