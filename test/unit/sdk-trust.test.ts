/**
 * The SDK's trust decisions about a node's staple and key, on responses made by the CP's own
 * OCSP answerer in frozen time: a good fresh staple passes; none (with must-staple), revoked,
 * unknown, signed by another CA, for another certificate, stale or garbage is refused with
 * NODE_STAPLE_REFUSED naming why; the clock-skew allowance is exactly the named default.
 */
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { before, describe, test } from "node:test";
import { createOcspAnswerer } from "../../src/cp/ocsp/index.js";
import { checkPins, checkStaple, type StapleInput, spkiPin } from "../../src/sdk/trust.js";
import { SDK_STAPLE_CLOCK_SKEW_MS, SDK_STAPLE_MAX_AGE_MS } from "../../src/shared/config/defaults.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { buildOcspRequest, type OcspCertStatus } from "../../src/shared/pki/ocsp/index.js";
import { ManualClock } from "../../src/shared/time/index.js";
import { mintNodePki, type NodePki } from "../helpers/node-agent.js";

let pki: NodePki;
let other: NodePki;
const T0 = Date.UTC(2026, 11, 2, 12, 0, 0);

before(async () => {
  const clock = new ManualClock(T0 - 86_400_000);
  pki = await mintNodePki("nod_trust", clock);
  other = await mintNodePki("nod_trust_other", clock);
});

/** A staple for `certDer` as the CP would answer at T0. */
async function staple(status: OcspCertStatus, options: { certDer?: Buffer } = {}): Promise<Buffer> {
  const signer = pki.cas.tcp_server_ca;
  const answer = createOcspAnswerer({
    resolve: () => ({ signer: { certDer: signer.certDer, privateKey: createPrivateKey(signer.keyPem ?? "") }, status }),
    clock: new ManualClock(T0),
  });
  return answer(buildOcspRequest(options.certDer ?? pki.server.certDer, pki.cas.tcp_server_ca.certDer).der);
}

function input(overrides: Partial<StapleInput>): StapleInput {
  return {
    staple: null,
    serverCertDer: pki.server.certDer,
    issuerDer: pki.cas.tcp_server_ca.certDer,
    ocspSignerDers: [pki.cas.tcp_server_ca.certDer],
    mustStaple: true,
    now: T0,
    ...overrides,
  };
}

function refusedBecause(pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(isAuthNexusError(error, "NODE_STAPLE_REFUSED"), String(error));
    assert.match(error.message, pattern);
    return true;
  };
}

describe("SDK trust policy: the stapled OCSP response", () => {
  test("a good, fresh staple signed by the node's issuer is accepted", async () => {
    const verdict = checkStaple(input({ staple: await staple({ kind: "good" }) }));
    assert.equal(verdict.kind, "verified");
    assert.equal(verdict.kind === "verified" && verdict.response.status.kind, "good");
  });

  test("no staple: refused under must-staple, tolerated without it", () => {
    assert.throws(() => checkStaple(input({ staple: null })), refusedBecause(/stapled no OCSP response/));
    assert.throws(() => checkStaple(input({ staple: Buffer.alloc(0) })), refusedBecause(/stapled no OCSP response/));
    assert.deepEqual(checkStaple(input({ staple: null, mustStaple: false })), { kind: "unstapled" });
  });

  test("revoked and unknown are refused, with or without must-staple", async () => {
    const revoked = await staple({ kind: "revoked", revokedAt: T0 - 60_000, reason: 1 });
    assert.throws(() => checkStaple(input({ staple: revoked })), refusedBecause(/revoked/));
    assert.throws(() => checkStaple(input({ staple: revoked, mustStaple: false })), refusedBecause(/revoked/));
    const unknown = await staple({ kind: "unknown" });
    assert.throws(() => checkStaple(input({ staple: unknown })), refusedBecause(/unknown/));
  });

  test("a staple whose signature does not verify (one signed byte changed) is refused", async () => {
    const forged = Buffer.from(await staple({ kind: "good" }));
    // producedAt, the first GeneralizedTime (tag 0x18, 15 bytes) inside the signed data: move it by a second.
    const at = forged.indexOf(Buffer.from([0x18, 0x0f]));
    assert.ok(at > 0);
    const digit = at + 2 + 13;
    forged[digit] = forged[digit] === 0x30 ? 0x31 : 0x30;
    assert.throws(() => checkStaple(input({ staple: forged })), refusedBecause(/signature/i));
  });

  test("a staple for another certificate (CertID mismatch) is refused", async () => {
    const otherServer = (await mintNodePki("nod_trust_third", new ManualClock(T0 - 86_400_000))).server;
    assert.notEqual(otherServer.serialHex, pki.server.serialHex);
    const foreign = await staple({ kind: "good" }, { certDer: otherServer.certDer });
    assert.throws(() => checkStaple(input({ staple: foreign })), refusedBecause(/CertID mismatch/));
  });

  test("the time window: accepted up to the skew past nextUpdate, refused beyond; thisUpdate in the future only within the skew", async () => {
    const good = await staple({ kind: "good" });
    const validity = SDK_STAPLE_MAX_AGE_MS; // the CP's responses are valid exactly this long
    assert.equal(checkStaple(input({ staple: good, now: T0 + validity + SDK_STAPLE_CLOCK_SKEW_MS - 1000 })).kind, "verified");
    assert.throws(
      () => checkStaple(input({ staple: good, now: T0 + validity + SDK_STAPLE_CLOCK_SKEW_MS + 1000 })),
      refusedBecause(/expired|older than/),
    );
    assert.equal(checkStaple(input({ staple: good, now: T0 - SDK_STAPLE_CLOCK_SKEW_MS + 1000 })).kind, "verified");
    assert.throws(() => checkStaple(input({ staple: good, now: T0 - SDK_STAPLE_CLOCK_SKEW_MS - 1000 })), refusedBecause(/in the future/));
  });

  test("an issuer that is not a configured OCSP signer is refused before any parsing", async () => {
    const good = await staple({ kind: "good" });
    assert.throws(
      () => checkStaple(input({ staple: good, ocspSignerDers: [other.cas.tcp_server_ca.certDer] })),
      refusedBecause(/not a configured OCSP signer/),
    );
  });

  test("garbage and an OCSP error status are refused, never thrown as anything else", () => {
    assert.throws(() => checkStaple(input({ staple: Buffer.from("not der at all") })), refusedBecause(/not a DER/));
    assert.throws(() => checkStaple(input({ staple: Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x03]) })), refusedBecause(/tryLater|status/));
  });
});

describe("SDK trust policy: SPKI pins", () => {
  test("no pins: any key; pins: only a chain with a matching key, the refusal naming the node's pin", () => {
    const spki = new X509Certificate(pki.server.certPem).publicKey.export({ type: "spki", format: "der" });
    const caSpki = new X509Certificate(pki.cas.tcp_server_ca.certPem).publicKey.export({ type: "spki", format: "der" });
    const pin = spkiPin(spki);
    assert.match(pin, /^[A-Za-z0-9+/]{43}=$/);
    checkPins([spki, caSpki], []);
    checkPins([spki, caSpki], ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", pin]);
    assert.throws(
      () => checkPins([spki, caSpki], ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]),
      (error) => isAuthNexusError(error, "NODE_CERT_REFUSED") && error.message.includes(pin),
    );
  });

  test("a pin of the issuing CA's key accepts every node certificate that CA issues (it survives rotations)", () => {
    const caSpki = new X509Certificate(pki.cas.tcp_server_ca.certPem).publicKey.export({ type: "spki", format: "der" });
    const nodeSpki = new X509Certificate(pki.server.certPem).publicKey.export({ type: "spki", format: "der" });
    const anotherNodeKey = new X509Certificate(pki.client.certPem).publicKey.export({ type: "spki", format: "der" });
    checkPins([nodeSpki, caSpki], [spkiPin(caSpki)]);
    checkPins([anotherNodeKey, caSpki], [spkiPin(caSpki)]);
  });
});
