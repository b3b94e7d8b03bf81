import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, webcrypto, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  BasicOCSPResponse as AsnBasicOCSPResponse,
  CertID,
  id_pkix_ocsp_nonce,
  OCSPRequest,
  Request,
  TBSRequest,
} from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier, Extension, GeneralName } from "@peculiar/asn1-x509";
import * as asn1js from "asn1js";
import * as pkijs from "pkijs";
import {
  buildOcspErrorResponse,
  buildOcspResponse,
  type CertIdQuery,
  createOcspAnswerer,
  OcspRequestError,
  type ParsedOcspRequest,
  parseOcspRequest,
} from "../../src/cp/ocsp/index.js";
import { DEFAULT_OCSP_VALIDITY_MS } from "../../src/shared/config/defaults.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { encodeTlv, TAG } from "../../src/shared/pki/ocsp/der.js";
import { computeIssuerHashes, type OcspCertStatus, responderKeyHash } from "../../src/shared/pki/ocsp/index.js";
import { ManualClock } from "../../src/shared/time/index.js";
import { inventoryResolver, mintCa, mintLeaf, mintPki, type TestCert } from "../helpers/ocsp-fixture.js";

type EngineCrypto = ConstructorParameters<typeof pkijs.CryptoEngine>[0]["crypto"];
pkijs.setEngine("node", new pkijs.CryptoEngine({ name: "node", crypto: webcrypto as unknown as EngineCrypto }));

const OID_SHA1 = "1.3.14.3.2.26";
const OID_SHA256 = "2.16.840.1.101.3.4.2.1";
const OID_SHA384 = "2.16.840.1.101.3.4.2.2";

// 2026-01-01T12:00:00.789Z: the milliseconds must be dropped from every GeneralizedTime.
const FROZEN_MS = Date.UTC(2026, 0, 1, 12, 0, 0, 789);
const FROZEN_SECONDS_MS = Date.UTC(2026, 0, 1, 12, 0, 0, 0);
const REVOKED_AT = Date.UTC(2025, 11, 24, 8, 30, 15, 250);

let dir: string;
let ca: TestCert;
let leaves: TestCert[];
let otherCa: TestCert;
let otherLeaf: TestCert;
let statuses: Map<string, OcspCertStatus>;

function leaf(i: number): TestCert {
  const l = leaves[i];
  if (l === undefined) throw new Error(`no leaf ${i}`);
  return l;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "ocsp-unit-"));
  ({ ca, leaves } = await mintPki(3));
  otherCa = await mintCa("AuthNexus Other CA");
  otherLeaf = await mintLeaf(otherCa, "other.test.authnexus");
  statuses = new Map<string, OcspCertStatus>([
    [leaf(0).serialHex, { kind: "good" }],
    [leaf(1).serialHex, { kind: "revoked", revokedAt: REVOKED_AT, reason: 1 }],
    // leaf(2) is not in the inventory: unknown.
  ]);
  writeFileSync(join(dir, "ca.pem"), `${ca.certPem}\n`);
  writeFileSync(join(dir, "other-ca.pem"), `${otherCa.certPem}\n`);
  for (const [i, l] of leaves.entries()) writeFileSync(join(dir, `leaf${i}.pem`), `${l.certPem}\n`);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `openssl ocsp -reqout`: the request exactly as openssl builds it. */
function opensslRequest(name: string, args: string[]): Buffer {
  const out = join(dir, `${name}.der`);
  execFileSync("openssl", ["ocsp", ...args, "-reqout", out], { cwd: dir, stdio: "pipe" });
  return readFileSync(out);
}

function resolver() {
  return inventoryResolver([
    { ca, statuses },
    { ca: otherCa, statuses: new Map([[otherLeaf.serialHex, { kind: "good" } as const]]) },
  ]);
}

function certIdFor(issuer: TestCert, serialHex: string, alg: "sha1" | "sha256" = "sha1"): CertID {
  const pair = computeIssuerHashes(issuer.certDer)[alg];
  return new CertID({
    hashAlgorithm: new AlgorithmIdentifier({ algorithm: alg === "sha1" ? OID_SHA1 : OID_SHA256, parameters: null }),
    issuerNameHash: new OctetString(pair.nameHash),
    issuerKeyHash: new OctetString(pair.keyHash),
    serialNumber: new Uint8Array(Buffer.from(serialHex, "hex")).buffer,
  });
}

/** Nonce extension value as openssl and RFC 8954 send it: DER OCTET STRING of the nonce. */
function nonceValue(bytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x04, bytes.length]), bytes]);
}

function makeRequest(certIds: CertID[], options: { nonce?: Buffer; extensions?: Extension[] } = {}): Buffer {
  const extensions = [...(options.extensions ?? [])];
  if (options.nonce) {
    extensions.push(new Extension({ extnID: id_pkix_ocsp_nonce, extnValue: new OctetString(options.nonce) }));
  }
  const tbs = new TBSRequest({ requestList: certIds.map((reqCert) => new Request({ reqCert })) });
  if (extensions.length > 0) tbs.requestExtensions = extensions;
  return Buffer.from(AsnConvert.serialize(new OCSPRequest({ tbsRequest: tbs })));
}

interface Decoded {
  status: number;
  basic?: pkijs.BasicOCSPResponse;
  tbsDer?: Buffer;
  signature?: Buffer;
}

function decode(der: Buffer): Decoded {
  const response = pkijs.OCSPResponse.fromBER(der);
  const status = response.responseStatus.valueBlock.valueDec;
  if (!response.responseBytes) return { status };
  assert.equal(response.responseBytes.responseType, "1.3.6.1.5.5.7.48.1.1");
  const inner = response.responseBytes.response.valueBlock.valueHexView;
  const basic = pkijs.BasicOCSPResponse.fromBER(inner);
  const asn = AsnConvert.parse(inner, AsnBasicOCSPResponse);
  assert.ok(asn.tbsResponseDataRaw);
  return {
    status,
    basic,
    tbsDer: Buffer.from(asn.tbsResponseDataRaw),
    signature: Buffer.from(asn.signature),
  };
}

function pkijsCert(cert: TestCert): pkijs.Certificate {
  return pkijs.Certificate.fromBER(cert.certDer);
}

/** 0 good, 1 revoked, 2 unknown: the CHOICE tag of a SingleResponse's certStatus. */
function statusTag(single: pkijs.SingleResponse): number {
  return (single.certStatus as asn1js.BaseBlock).idBlock.tagNumber;
}

function nonceOf(basic: pkijs.BasicOCSPResponse): Buffer | null {
  const ext = basic.tbsResponseData.responseExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
  return ext ? Buffer.from(ext.extnValue.valueBlock.valueHexView) : null;
}

function build(request: ParsedOcspRequest, clock = new ManualClock(FROZEN_MS), validityMs?: number): Buffer {
  return buildOcspResponse({ request, resolve: resolver(), clock, ...(validityMs === undefined ? {} : { validityMs }) });
}

function expectMalformed(der: Uint8Array): void {
  assert.throws(
    () => parseOcspRequest(der),
    (error: unknown) => error instanceof OcspRequestError && isAuthNexusError(error, "VALIDATION_FAILED"),
  );
}

describe("issuer hashes", () => {
  test("match what openssl puts in its CertID, for SHA-1 and SHA-256", () => {
    const hashes = computeIssuerHashes(ca.certDer);
    const sha1 = parseOcspRequest(opensslRequest("h1", ["-issuer", "ca.pem", "-cert", "leaf0.pem"]));
    const sha256 = parseOcspRequest(opensslRequest("h256", ["-sha256", "-issuer", "ca.pem", "-cert", "leaf0.pem"]));
    assert.deepEqual(sha1.certIds[0]?.issuerNameHash, hashes.sha1.nameHash);
    assert.deepEqual(sha1.certIds[0]?.issuerKeyHash, hashes.sha1.keyHash);
    assert.deepEqual(sha256.certIds[0]?.issuerNameHash, hashes.sha256.nameHash);
    assert.deepEqual(sha256.certIds[0]?.issuerKeyHash, hashes.sha256.keyHash);
  });

  test("key hash covers the public key bits only (equals the CA's SubjectKeyIdentifier here)", () => {
    // @peculiar/x509 derives the SKI as SHA-1 of the subjectPublicKey bits (RFC 5280 method 1).
    const ski = pkijsCert(ca).extensions?.find((e) => e.extnID === "2.5.29.14");
    assert.ok(ski);
    const skiValue = (asn1js.fromBER(ski.extnValue.valueBlock.valueHexView).result as asn1js.OctetString).valueBlock.valueHexView;
    assert.deepEqual(computeIssuerHashes(ca.certDer).sha1.keyHash, Buffer.from(skiValue));
    assert.deepEqual(responderKeyHash(ca.certDer), Buffer.from(skiValue));
    assert.notDeepEqual(
      computeIssuerHashes(ca.certDer).sha1.keyHash,
      createHash("sha1")
        .update(new Uint8Array(pkijsCert(ca).subjectPublicKeyInfo.toSchema().toBER()))
        .digest(),
    );
  });

  test("rejects input that is not a certificate", () => {
    assert.throws(() => computeIssuerHashes(Buffer.from("30030201", "hex")), TypeError);
    assert.throws(() => computeIssuerHashes(Buffer.alloc(0)), TypeError);
  });
});

describe("parseOcspRequest", () => {
  test("openssl default request: SHA-1 CertID, canonical serial, nonce", () => {
    const parsed = parseOcspRequest(opensslRequest("p1", ["-issuer", "ca.pem", "-cert", "leaf0.pem"]));
    assert.equal(parsed.certIds.length, 1);
    const q = parsed.certIds[0];
    assert.ok(q);
    assert.equal(q.hashAlgorithm, "sha1");
    assert.equal(q.serialHex, leaf(0).serialHex);
    assert.equal(q.issuerNameHash.length, 20);
    assert.ok(parsed.nonce);
    // openssl: extnValue = OCTET STRING (16 random bytes).
    assert.equal(parsed.nonce.length, 18);
    assert.equal(parsed.nonce[0], 0x04);
    assert.equal(parsed.nonce[1], 16);
  });

  test("openssl -sha256 request with several certificates and -no_nonce", () => {
    const parsed = parseOcspRequest(
      opensslRequest("p256", [
        "-sha256",
        "-issuer",
        "ca.pem",
        "-cert",
        "leaf0.pem",
        "-cert",
        "leaf1.pem",
        "-cert",
        "leaf2.pem",
        "-no_nonce",
      ]),
    );
    assert.equal(parsed.nonce, null);
    assert.deepEqual(
      parsed.certIds.map((q) => [q.hashAlgorithm, q.serialHex, q.issuerKeyHash.length]),
      leaves.map((l) => ["sha256", l.serialHex, 32]),
    );
  });

  test("serial hex is the positive value: leading 00 octets stripped, at least one octet", () => {
    const serialOf = (hex: string) => parseOcspRequest(makeRequest([certIdFor(ca, hex)])).certIds[0]?.serialHex;
    assert.equal(serialOf("0080ff"), "80ff");
    assert.equal(serialOf("000001"), "01");
    assert.equal(serialOf("00"), "00");
    assert.equal(serialOf("7FAB"), "7fab");
    expectMalformed(makeRequest([certIdFor(ca, "80")]));
  });

  test("unknown hash algorithms are reported by OID; known ones must have the right length", () => {
    const id = certIdFor(ca, "01");
    id.hashAlgorithm = new AlgorithmIdentifier({ algorithm: OID_SHA384, parameters: null });
    assert.equal(parseOcspRequest(makeRequest([id])).certIds[0]?.hashAlgorithm, OID_SHA384);
    const short = certIdFor(ca, "01", "sha256");
    short.issuerNameHash = new OctetString(Buffer.alloc(20));
    expectMalformed(makeRequest([short]));
  });

  test("garbage, empty, truncated and trailing data are malformed", () => {
    const good = opensslRequest("g", ["-issuer", "ca.pem", "-cert", "leaf0.pem"]);
    expectMalformed(Buffer.alloc(0));
    expectMalformed(Buffer.from("hello, world"));
    expectMalformed(Buffer.from([0x30, 0x80, 0x00, 0x00]));
    expectMalformed(good.subarray(0, good.length - 3));
    expectMalformed(Buffer.concat([good, Buffer.from([0x00])]));
    expectMalformed(Buffer.from("3000", "hex"));
    expectMalformed(Buffer.from("30053003300100", "hex"));
    for (let i = 0; i < 200; i++) {
      const noise = Buffer.from(webcrypto.getRandomValues(new Uint8Array(1 + (i % 64))));
      noise[0] = 0x30;
      expectMalformed(noise);
    }
  });

  test("empty requestList, duplicate nonces and unknown critical extensions are malformed", () => {
    expectMalformed(makeRequest([]));
    const nonce = nonceValue(Buffer.alloc(16, 7));
    expectMalformed(
      makeRequest([certIdFor(ca, "01")], {
        nonce,
        extensions: [new Extension({ extnID: id_pkix_ocsp_nonce, extnValue: new OctetString(nonce) })],
      }),
    );
    const critical = new Extension({ extnID: "1.2.3.4", critical: true, extnValue: new OctetString(Buffer.from([5, 0])) });
    expectMalformed(makeRequest([certIdFor(ca, "01")], { extensions: [critical] }));
    const ignorable = new Extension({ extnID: "1.2.3.4", critical: false, extnValue: new OctetString(Buffer.from([5, 0])) });
    assert.equal(parseOcspRequest(makeRequest([certIdFor(ca, "01")], { extensions: [ignorable] })).certIds.length, 1);
  });
});

describe("parseOcspRequest: the optional parts of RFC 6960 4.1", () => {
  const tbsWith = (edit: (tbs: TBSRequest) => void) => {
    const tbs = new TBSRequest({ requestList: [new Request({ reqCert: certIdFor(ca, "01") })] });
    edit(tbs);
    return tbs;
  };
  const requestOf = (tbs: TBSRequest, signed = false) => {
    const der = Buffer.from(AsnConvert.serialize(new OCSPRequest({ tbsRequest: tbs })));
    if (!signed) return der;
    // optionalSignature [0] EXPLICIT Signature: any well-formed SEQUENCE is accepted and ignored.
    const signature = Buffer.from("a00d300b300906072a8648ce3d0401", "hex");
    const inner = Buffer.concat([der.subarray(2), signature]);
    return Buffer.concat([Buffer.from([0x30, inner.length]), inner]);
  };

  test("an explicit version 0, a requestorName, a request signature and a non-critical single extension are accepted", () => {
    const withVersion = Buffer.from(AsnConvert.serialize(new OCSPRequest({ tbsRequest: tbsWith(() => undefined) })));
    // Re-encode tbsRequest with version [0] EXPLICIT INTEGER 0 written out (DER would omit it).
    const tbsStart = 2;
    const tbsLen = withVersion[tbsStart + 1] as number;
    const tbsBody = withVersion.subarray(tbsStart + 2, tbsStart + 2 + tbsLen);
    const versioned = Buffer.concat([Buffer.from([0xa0, 0x03, 0x02, 0x01, 0x00]), tbsBody]);
    const explicitV1 = Buffer.concat([Buffer.from([0x30, versioned.length + 2, 0x30, versioned.length]), versioned]);
    assert.equal(parseOcspRequest(explicitV1).certIds[0]?.serialHex, "01");
    const explicitV2 = Buffer.from(explicitV1);
    explicitV2[8] = 0x01;
    expectMalformed(explicitV2);

    const named = requestOf(tbsWith((tbs) => (tbs.requestorName = new GeneralName({ dNSName: "client.test" }))));
    assert.equal(parseOcspRequest(named).certIds.length, 1);
    assert.equal(
      parseOcspRequest(
        requestOf(
          tbsWith(() => undefined),
          true,
        ),
      ).certIds.length,
      1,
    );
    // Written by hand: @peculiar/asn1-ocsp encodes singleRequestExtensions without RFC 6960's [0] EXPLICIT tag.
    const withSingleExtension = (critical: boolean) => {
      const extension = encodeTlv(
        TAG.SEQUENCE,
        Buffer.from("06032a0304", "hex"),
        ...(critical ? [Buffer.from("0101ff", "hex")] : []),
        encodeTlv(TAG.OCTET_STRING, Buffer.from([5, 0])),
      );
      const single = encodeTlv(
        TAG.SEQUENCE,
        Buffer.from(AsnConvert.serialize(certIdFor(ca, "01"))),
        encodeTlv(TAG.CONTEXT_0, encodeTlv(TAG.SEQUENCE, extension)),
      );
      return encodeTlv(TAG.SEQUENCE, encodeTlv(TAG.SEQUENCE, encodeTlv(TAG.SEQUENCE, single)));
    };
    assert.equal(parseOcspRequest(withSingleExtension(false)).certIds[0]?.serialHex, "01");
    expectMalformed(withSingleExtension(true));
  });

  test("a malformed OBJECT IDENTIFIER or an unexpected field is malformed", () => {
    const good = makeRequest([certIdFor(ca, "01")]);
    const sha1Oid = Buffer.from("06052b0e03021a", "hex");
    const at = good.indexOf(sha1Oid);
    assert.ok(at > 0);
    const leading80 = Buffer.from(good);
    leading80[at + 2] = 0x80;
    expectMalformed(leading80);
    const truncatedArc = Buffer.from(good);
    truncatedArc[at + 6] = 0x9a;
    expectMalformed(truncatedArc);
    // An extra INTEGER after requestList inside tbsRequest.
    const tbsBody = good.subarray(4);
    const extra = Buffer.concat([tbsBody, Buffer.from([0x02, 0x01, 0x00])]);
    expectMalformed(Buffer.concat([Buffer.from([0x30, extra.length + 2, 0x30, extra.length]), extra]));
  });

  test("agrees with a schema-driven decoder on every mutation both accept", () => {
    const base = makeRequest([certIdFor(ca, leaf(0).serialHex), certIdFor(ca, "7f01", "sha256")], {
      nonce: nonceValue(Buffer.alloc(16, 9)),
    });
    let compared = 0;
    for (let i = 0; i < 3000; i++) {
      const mutated = Buffer.from(base);
      const flips = 1 + (i % 3);
      for (let f = 0; f < flips; f++) {
        const at = (i * 7919 + f * 104_729) % mutated.length;
        mutated[at] = (mutated[at] as number) ^ (1 << ((i + f) % 8));
      }
      let ours: ParsedOcspRequest | null = null;
      try {
        ours = parseOcspRequest(mutated);
      } catch (error) {
        assert.ok(error instanceof OcspRequestError, `only OcspRequestError escapes, got ${String(error)}`);
      }
      if (ours === null) continue;
      let theirs: OCSPRequest;
      try {
        theirs = AsnConvert.parse(mutated, OCSPRequest);
      } catch {
        // Stricter about parts the responder ignores (AlgorithmIdentifier parameters, the
        // contents of extension values); what it reads is compared below when both decode.
        continue;
      }
      compared += 1;
      assert.equal(ours.certIds.length, theirs.tbsRequest.requestList.length);
      for (const [k, single] of theirs.tbsRequest.requestList.entries()) {
        const q: CertIdQuery | undefined = ours.certIds[k];
        assert.ok(q);
        assert.deepEqual(q.issuerNameHash, Buffer.from(single.reqCert.issuerNameHash.buffer));
        assert.deepEqual(q.issuerKeyHash, Buffer.from(single.reqCert.issuerKeyHash.buffer));
        assert.deepEqual(q.raw, Buffer.from(AsnConvert.serialize(single.reqCert)));
      }
    }
    assert.ok(compared > 50, `enough accepted mutations to compare (${compared})`);
  });
});

describe("buildOcspResponse", () => {
  test("good / revoked (with reason) / unknown, verified and decoded by pkijs", async () => {
    const der = opensslRequest("b1", ["-issuer", "ca.pem", "-cert", "leaf0.pem", "-cert", "leaf1.pem", "-cert", "leaf2.pem"]);
    const request = parseOcspRequest(der);
    const { status, basic } = decode(build(request));
    assert.equal(status, 0);
    assert.ok(basic);

    const issuer = pkijsCert(ca);
    assert.equal(await basic.verify({ trustedCerts: [issuer] }), true);

    const [s0, s1, s2] = basic.tbsResponseData.responses;
    assert.ok(s0 && s1 && s2);
    assert.deepEqual([statusTag(s0), statusTag(s1), statusTag(s2)], [0, 1, 2]);
    for (const [i, single] of [s0, s1, s2].entries()) {
      const st = await basic.getCertificateStatus(pkijsCert(leaf(i)), issuer);
      assert.deepEqual(st, { isForCertificate: true, status: i });
      assert.equal(single.thisUpdate.getTime(), FROZEN_SECONDS_MS);
      assert.equal(single.nextUpdate?.getTime(), FROZEN_SECONDS_MS + DEFAULT_OCSP_VALIDITY_MS);
    }
    assert.equal(basic.tbsResponseData.producedAt.getTime(), FROZEN_SECONDS_MS);

    // revoked: revocationTime (whole seconds) and reason keyCompromise (1).
    const revoked = s1.certStatus as asn1js.Constructed;
    const [time, reason] = revoked.valueBlock.value as [asn1js.GeneralizedTime, asn1js.Constructed];
    assert.equal(time.toDate().getTime(), Math.floor(REVOKED_AT / 1000) * 1000);
    assert.equal(reason.idBlock.tagNumber, 0);
    assert.equal((reason.valueBlock.value[0] as asn1js.Enumerated).valueBlock.valueDec, 1);

    // nonce echoed byte for byte
    assert.deepEqual(nonceOf(basic), request.nonce);
  });

  test("CertIDs are echoed byte for byte, responderID is byKey, the CA certificate is embedded", () => {
    const der = opensslRequest("b2", ["-sha256", "-issuer", "ca.pem", "-cert", "leaf1.pem"]);
    const response = build(parseOcspRequest(der));
    const requestCertId = pkijs.OCSPRequest.fromBER(der).tbsRequest.requestList[0]?.reqCert.toSchema().toBER();
    assert.ok(requestCertId);
    const { basic } = decode(response);
    assert.ok(basic);
    const responseCertId = basic.tbsResponseData.responses[0]?.certID.toSchema().toBER();
    assert.ok(responseCertId);
    assert.deepEqual(Buffer.from(responseCertId), Buffer.from(requestCertId));
    assert.ok(response.includes(Buffer.from(requestCertId)));

    const responderId = basic.tbsResponseData.responderID as pkijs.RelativeDistinguishedNames | asn1js.OctetString;
    assert.ok(responderId instanceof asn1js.OctetString);
    assert.deepEqual(Buffer.from(responderId.valueBlock.valueHexView), responderKeyHash(ca.certDer));

    assert.equal(basic.certs?.length, 1);
    assert.deepEqual(Buffer.from(basic.certs?.[0]?.toSchema().toBER() ?? new ArrayBuffer(0)), ca.certDer);
    assert.equal(basic.signatureAlgorithm.algorithmId, "1.2.840.10045.4.3.2");
  });

  test("no nonce in the request, no nonce in the response", () => {
    const request = parseOcspRequest(makeRequest([certIdFor(ca, leaf(0).serialHex)]));
    const { basic } = decode(build(request));
    assert.ok(basic);
    assert.equal(basic.tbsResponseData.responseExtensions, undefined);
  });

  test("a verifier trusting another CA, or a tampered response, does not verify", async () => {
    const request = parseOcspRequest(makeRequest([certIdFor(ca, leaf(0).serialHex)], { nonce: nonceValue(Buffer.alloc(16, 1)) }));
    const response = build(request);
    const { basic } = decode(response);
    assert.ok(basic);
    await assert.rejects(async () => {
      const ok = await basic.verify({ trustedCerts: [pkijsCert(otherCa)] });
      if (!ok) throw new Error("not verified");
    });
    const tampered = Buffer.from(response);
    const at = tampered.indexOf(Buffer.from(leaf(0).serialHex, "hex"));
    assert.ok(at > 0);
    tampered[at + 2] = (tampered[at + 2] as number) ^ 0x01;
    const bad = decode(tampered).basic;
    assert.ok(bad);
    assert.equal(await bad.verify({ trustedCerts: [pkijsCert(ca)] }).catch(() => false), false);
  });

  test("deterministic at a frozen clock apart from the signature bytes", async () => {
    const request = parseOcspRequest(
      makeRequest([certIdFor(ca, leaf(0).serialHex), certIdFor(ca, leaf(1).serialHex, "sha256")], {
        nonce: nonceValue(Buffer.alloc(32, 0xab)),
      }),
    );
    const clock = new ManualClock(FROZEN_MS);
    const a = decode(build(request, clock));
    clock.advance(200); // same second: same GeneralizedTime
    const b = decode(build(request, clock));
    assert.ok(a.tbsDer && b.tbsDer && a.signature && b.signature && a.basic && b.basic);
    assert.deepEqual(a.tbsDer, b.tbsDer);
    assert.notDeepEqual(a.signature, b.signature); // ECDSA signatures are randomised
    assert.equal(await a.basic.verify({ trustedCerts: [pkijsCert(ca)] }), true);
    assert.equal(await b.basic.verify({ trustedCerts: [pkijsCert(ca)] }), true);
    clock.advance(1000);
    const c = decode(build(request, clock));
    assert.notDeepEqual(c.tbsDer, a.tbsDer);
  });

  test("validity window: default 30 min, configurable, never over 1800 s", () => {
    const request = parseOcspRequest(makeRequest([certIdFor(ca, leaf(0).serialHex)]));
    const single = decode(build(request, new ManualClock(FROZEN_MS), 10 * 60 * 1000)).basic?.tbsResponseData.responses[0];
    assert.equal((single?.nextUpdate?.getTime() ?? 0) - (single?.thisUpdate.getTime() ?? 0), 600_000);
    assert.throws(() => build(request, new ManualClock(FROZEN_MS), 1_800_001), RangeError);
    assert.throws(() => build(request, new ManualClock(FROZEN_MS), 0), RangeError);
    assert.throws(() => createOcspAnswerer({ resolve: resolver(), clock: new ManualClock(), validityMs: 3_600_000 }), RangeError);
  });

  test("unknown issuer -> unauthorized (6)", () => {
    const stranger = certIdFor(otherCa, "01");
    stranger.issuerKeyHash = new OctetString(Buffer.alloc(20, 9));
    const response = build(parseOcspRequest(makeRequest([certIdFor(ca, leaf(0).serialHex), stranger])));
    assert.equal(decode(response).status, 6);
    assert.deepEqual(response, buildOcspErrorResponse("unauthorized"));
  });

  test("CertIDs of different issuers in one request -> unauthorized (6)", () => {
    const request = parseOcspRequest(makeRequest([certIdFor(ca, leaf(0).serialHex), certIdFor(otherCa, otherLeaf.serialHex)]));
    assert.equal(decode(build(request)).status, 6);
    // each on its own is fine
    assert.equal(decode(build(parseOcspRequest(makeRequest([certIdFor(otherCa, otherLeaf.serialHex)])))).status, 0);
  });

  test("unsupported CertID hash -> unauthorized (6) without asking the resolver", () => {
    const id = certIdFor(ca, leaf(0).serialHex);
    id.hashAlgorithm = new AlgorithmIdentifier({ algorithm: OID_SHA384, parameters: null });
    const resolve = resolver();
    const response = buildOcspResponse({ request: parseOcspRequest(makeRequest([id])), resolve, clock: new ManualClock() });
    assert.equal(decode(response).status, 6);
    assert.equal(resolve.calls, 0);
  });

  test("a resolver returning the wrong CA, a mismatched key or a bad reason is an error", () => {
    const request = parseOcspRequest(makeRequest([certIdFor(ca, leaf(0).serialHex)]));
    const clock = new ManualClock();
    assert.throws(
      () =>
        buildOcspResponse({
          request,
          clock,
          resolve: () => ({ signer: { certDer: otherCa.certDer, privateKey: otherCa.privateKey }, status: { kind: "good" } }),
        }),
      /did not issue/,
    );
    assert.throws(
      () =>
        buildOcspResponse({
          request,
          clock,
          resolve: () => ({ signer: { certDer: ca.certDer, privateKey: otherCa.privateKey }, status: { kind: "good" } }),
        }),
      /does not match/,
    );
    assert.throws(
      () =>
        buildOcspResponse({
          request,
          clock,
          resolve: () => ({
            signer: { certDer: ca.certDer, privateKey: ca.privateKey },
            status: { kind: "revoked", revokedAt: 0, reason: 7 },
          }),
        }),
      RangeError,
    );
  });

  test("error responses carry only the status", () => {
    const cases = [
      ["malformedRequest", 1],
      ["internalError", 2],
      ["tryLater", 3],
      ["unauthorized", 6],
    ] as const;
    for (const [name, code] of cases) {
      const der = buildOcspErrorResponse(name);
      assert.deepEqual(der, Buffer.from([0x30, 0x03, 0x0a, 0x01, code]));
      const decoded = pkijs.OCSPResponse.fromBER(der);
      assert.equal(decoded.responseStatus.valueBlock.valueDec, code);
      assert.equal(decoded.responseBytes, undefined);
    }
  });
});

describe("createOcspAnswerer", () => {
  test("parses, resolves (async) and builds", async () => {
    const sync = resolver();
    const answer = createOcspAnswerer({ resolve: async (q) => sync(q), clock: new ManualClock(FROZEN_MS) });
    const der = opensslRequest("a1", ["-issuer", "ca.pem", "-cert", "leaf1.pem"]);
    const { status, basic } = decode(await answer(der));
    assert.equal(status, 0);
    assert.ok(basic);
    assert.equal(await basic.verify({ trustedCerts: [pkijsCert(ca)] }), true);
    assert.equal(statusTag(basic.tbsResponseData.responses[0] as pkijs.SingleResponse), 1);
  });

  test("garbage -> malformedRequest (1); resolver failure -> internalError (2); both reported", async () => {
    const seen: string[] = [];
    const answer = createOcspAnswerer({
      resolve: () => {
        throw new Error("inventory down");
      },
      clock: new ManualClock(),
      onError: (error, answeredWith) => {
        seen.push(`${answeredWith}:${error instanceof Error ? error.name : "?"}`);
        throw new Error("a failing logger changes nothing");
      },
    });
    assert.deepEqual(await answer(Buffer.from("not der")), buildOcspErrorResponse("malformedRequest"));
    assert.deepEqual(await answer(makeRequest([certIdFor(ca, "01")])), buildOcspErrorResponse("internalError"));
    assert.deepEqual(seen, ["malformedRequest:OcspRequestError", "internalError:Error"]);
  });

  test("unknown and mixed issuers -> unauthorized (6)", async () => {
    const answer = createOcspAnswerer({ resolve: resolver(), clock: new ManualClock() });
    const unknown = certIdFor(ca, "01");
    unknown.issuerNameHash = new OctetString(Buffer.alloc(20));
    assert.equal(decode(await answer(makeRequest([unknown]))).status, 6);
    assert.equal(decode(await answer(makeRequest([certIdFor(otherCa, otherLeaf.serialHex), certIdFor(ca, leaf(0).serialHex)]))).status, 6);
  });
});

test("fixture: minted leaves chain to their CA and serials are canonical", async () => {
  const { ca, leaves } = await mintPki(2);
  const caCert = new X509Certificate(ca.certDer);
  assert.ok(caCert.ca);
  assert.ok(caCert.checkPrivateKey(ca.privateKey));
  for (const leaf of leaves) {
    const node = new X509Certificate(leaf.certDer);
    assert.ok(node.verify(caCert.publicKey));
    assert.equal(node.serialNumber.toLowerCase(), leaf.serialHex);
    assert.match(leaf.serialHex, /^(0[1-9a-f]|[1-7][0-9a-f])([0-9a-f]{2})*$/);
  }
});
