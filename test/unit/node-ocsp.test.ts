/**
 * Channel 4 on the node: the shared OCSP client code checked against the CP's real responder code
 * (request built here, answered by createOcspAnswerer, verified here), and the stapling
 * manager's behaviour in frozen time: refresh at min(ocsp_refresh_ms, nextUpdate/2), keep the
 * last good response through fetch failures until its nextUpdate, keep and serve a revoked
 * response, never give up.
 *
 * Attacks described first: a response signed by another CA, one about another certificate, a
 * replayed one (wrong nonce), a stale one (past nextUpdate) — none may ever be stapled.
 */
import assert from "node:assert/strict";
import { createPrivateKey, type KeyObject } from "node:crypto";
import { before, describe, test } from "node:test";
import * as pkijs from "pkijs";
import { createOcspAnswerer, type OcspAsyncResolver } from "../../src/cp/ocsp/index.js";
import { Backoff } from "../../src/node/agent/backoff.js";
import { OcspStapler } from "../../src/node/agent/ocsp-stapler.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { buildOcspRequest, type OcspCertStatus, verifyOcspResponse } from "../../src/shared/pki/ocsp/index.js";
import { ManualClock, ManualScheduler, settle } from "../../src/shared/time/index.js";
import { mintNodePki, type NodePki, waitFor } from "../helpers/node-agent.js";

const MINUTE = 60_000;
let pki: NodePki;
let other: NodePki;

const der = (pem: string) => Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, ""), "base64");
const key = (pem: string | null): KeyObject => createPrivateKey(pem ?? "");

/** The CP's answerer for our tcp_server_ca, with a mutable status for the server certificate. */
function responder(clock: ManualClock, state: { status: OcspCertStatus }, signer?: NodePki) {
  const ca = (signer ?? pki).cas.tcp_server_ca;
  const resolve: OcspAsyncResolver = () => ({ signer: { certDer: ca.certDer, privateKey: key(ca.keyPem) }, status: state.status });
  return createOcspAnswerer({ resolve, clock });
}

before(async () => {
  const clock = new ManualClock(Date.now());
  pki = await mintNodePki("nod_ocsp", clock);
  other = await mintNodePki("nod_ocsp_other", clock);
});

describe("OCSP codec", () => {
  const serverDer = () => pki.server.certDer;
  const issuerDer = () => pki.cas.tcp_server_ca.certDer;

  async function exchange(status: OcspCertStatus, clock = new ManualClock(Date.now()), signer?: NodePki) {
    const built = buildOcspRequest(serverDer(), issuerDer());
    const response = await responder(clock, { status }, signer)(built.der);
    return { built, response, clock };
  }

  test("good: verified, window taken from the response", async () => {
    const { built, response, clock } = await exchange({ kind: "good" });
    const verified = verifyOcspResponse(response, {
      issuerDer: issuerDer(),
      certId: built.certId,
      nonce: built.nonce,
      now: clock.now(),
      clockSkewMs: 0,
    });
    assert.deepEqual(verified.status, { kind: "good" });
    assert.equal(verified.nextUpdate - verified.thisUpdate, 30 * MINUTE);
  });

  test("revoked and unknown are decoded", async () => {
    const revokedAt = Date.now() - 10 * MINUTE;
    const revoked = await exchange({ kind: "revoked", revokedAt, reason: 1 });
    const r = verifyOcspResponse(revoked.response, {
      issuerDer: issuerDer(),
      certId: revoked.built.certId,
      nonce: revoked.built.nonce,
      now: revoked.clock.now(),
      clockSkewMs: 0,
    });
    assert.deepEqual(r.status, { kind: "revoked", revokedAt: Math.floor(revokedAt / 1000) * 1000, reason: 1 });
    const unknown = await exchange({ kind: "unknown" });
    const u = verifyOcspResponse(unknown.response, {
      issuerDer: issuerDer(),
      certId: unknown.built.certId,
      nonce: unknown.built.nonce,
      now: unknown.clock.now(),
      clockSkewMs: 0,
    });
    assert.deepEqual(u.status, { kind: "unknown" });
  });

  test("a valid response from another CA (about its own certificate) is refused", async () => {
    const foreign = buildOcspRequest(other.server.certDer, other.cas.tcp_server_ca.certDer);
    const clock = new ManualClock(Date.now());
    const response = await responder(clock, { status: { kind: "good" } }, other)(foreign.der);
    assert.throws(
      () =>
        verifyOcspResponse(response, {
          issuerDer: issuerDer(),
          certId: foreign.certId,
          nonce: foreign.nonce,
          now: clock.now(),
          clockSkewMs: 0,
        }),
      (error: unknown) =>
        isAuthNexusError(error, "OCSP_RESPONSE_INVALID") && /responder other than the certificate's issuer/.test(error.message),
    );
  });

  test("a tampered response (status byte flipped after signing) is refused", async () => {
    const { built, response, clock } = await exchange({ kind: "revoked", revokedAt: Date.now(), reason: 1 });
    const tampered = Buffer.from(response);
    // certStatus revoked is [1] constructed (0xa1) right after the CertID; make it [0] good (0x80 0x00).
    const at = tampered.indexOf(Buffer.from([0xa1, 0x16]));
    assert.ok(at > 0, "revoked status found");
    tampered[at] = 0xa0;
    assert.throws(
      () =>
        verifyOcspResponse(tampered, {
          issuerDer: issuerDer(),
          certId: built.certId,
          nonce: built.nonce,
          now: clock.now(),
          clockSkewMs: 0,
        }),
      (error: unknown) => isAuthNexusError(error, "OCSP_RESPONSE_INVALID"),
    );
  });

  test("a response about another certificate (CertID mismatch) is refused", async () => {
    const { response, clock } = await exchange({ kind: "good" });
    const otherLeaf = buildOcspRequest(other.server.certDer, issuerDer());
    assert.throws(
      () =>
        verifyOcspResponse(response, { issuerDer: issuerDer(), certId: otherLeaf.certId, nonce: null, now: clock.now(), clockSkewMs: 0 }),
      /CertID mismatch/,
    );
  });

  test("a replayed response (another request's nonce) is refused", async () => {
    const { built, response, clock } = await exchange({ kind: "good" });
    const fresh = buildOcspRequest(serverDer(), issuerDer());
    assert.notDeepEqual(fresh.nonce, built.nonce);
    assert.throws(
      () =>
        verifyOcspResponse(response, {
          issuerDer: issuerDer(),
          certId: built.certId,
          nonce: fresh.nonce,
          now: clock.now(),
          clockSkewMs: 0,
        }),
      /nonce/,
    );
  });

  test("outside its window: expired, or thisUpdate beyond the allowed skew", async () => {
    const { built, response, clock } = await exchange({ kind: "good" });
    const base = { issuerDer: issuerDer(), certId: built.certId, nonce: built.nonce, clockSkewMs: 5 * MINUTE };
    assert.throws(() => verifyOcspResponse(response, { ...base, now: clock.now() + 31 * MINUTE }), /expired/);
    assert.throws(() => verifyOcspResponse(response, { ...base, now: clock.now() - 6 * MINUTE }), /in the future/);
    verifyOcspResponse(response, { ...base, now: clock.now() - 4 * MINUTE });
    // The SDK's freshness bound for staples: a response older than maxAgeMs is refused even inside its window.
    assert.throws(
      () => verifyOcspResponse(response, { ...base, now: clock.now() + 10 * MINUTE, maxAgeMs: 5 * MINUTE }),
      /older than 300 s/,
    );
  });

  test("error statuses and garbage are refused with a reason", async () => {
    const malformed = await createOcspAnswerer({ resolve: () => null, clock: new ManualClock() })(Buffer.from("nope"));
    const certId = buildOcspRequest(serverDer(), issuerDer()).certId;
    assert.throws(
      () => verifyOcspResponse(malformed, { issuerDer: issuerDer(), certId, nonce: null, now: Date.now(), clockSkewMs: 0 }),
      /answered malformedRequest/,
    );
    assert.throws(
      () => verifyOcspResponse(Buffer.from("garbage"), { issuerDer: issuerDer(), certId, nonce: null, now: Date.now(), clockSkewMs: 0 }),
      (error: unknown) => isAuthNexusError(error, "OCSP_RESPONSE_INVALID") && /not a DER OCSPResponse/.test(error.message),
    );
  });

  test("differential: on 3,000 mutated responses it never throws anything but OCSP_RESPONSE_INVALID, and accepts only what pkijs also verifies", async () => {
    const { built, response, clock } = await exchange({ kind: "revoked", revokedAt: Date.now() - MINUTE, reason: 1 });
    const options = { issuerDer: issuerDer(), certId: built.certId, nonce: built.nonce, now: clock.now(), clockSkewMs: 0 };
    const original = verifyOcspResponse(response, options);
    const issuer = pkijs.Certificate.fromBER(new Uint8Array(issuerDer()));
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const mutated = Buffer.from(response);
      for (let flips = 1 + random(3); flips > 0; flips--) mutated[random(mutated.length)] = random(256);
      let ours: ReturnType<typeof verifyOcspResponse> | null = null;
      try {
        ours = verifyOcspResponse(mutated, options);
      } catch (error) {
        assert.ok(isAuthNexusError(error, "OCSP_RESPONSE_INVALID"), `mutation ${i} threw ${String(error)}`);
      }
      if (ours === null) continue;
      accepted += 1;
      // An accepted mutation changed nothing that is trusted (it lies in the unsigned certs field)...
      assert.deepEqual(ours, original, `mutation ${i} accepted with a different meaning`);
      // ...and where pkijs can still read the bytes, it verifies the signature too.
      let basic: pkijs.BasicOCSPResponse;
      try {
        basic = pkijs.BasicOCSPResponse.fromBER(
          pkijs.OCSPResponse.fromBER(new Uint8Array(mutated)).responseBytes?.response.valueBlock.valueHexView ?? new Uint8Array(),
        );
      } catch {
        continue;
      }
      basic.certs = [issuer];
      assert.equal(await basic.verify({ trustedCerts: [issuer] }), true, `mutation ${i} accepted but pkijs disagrees`);
    }
    assert.ok(accepted < 3000, "mutations are refused");
  });
});

describe("OcspStapler", () => {
  function setup(refreshMs = 15 * MINUTE) {
    // Whole seconds: OCSP times have no fractions, so nextUpdate/2 lands exactly on the minute.
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const scheduler = new ManualScheduler(clock);
    const state: { status: OcspCertStatus } = { status: { kind: "good" } };
    const answer = responder(clock, state);
    const calls = { count: 0, fail: false };
    const memory = createMemoryLogger("TLS");
    const stapler = new OcspStapler({
      url: "http://ocsp.test/ocsp/",
      certDer: pki.server.certDer,
      issuerDer: der(pki.cas.tcp_server_ca.certPem),
      scheduler,
      backoff: new Backoff(
        () => ({ baseMs: 1000, maxMs: 10_000 }),
        () => 0.5,
      ),
      log: memory.logger,
      refreshMs: () => refreshMs,
      requestTimeoutMs: () => 1000,
      transport: async (_url, request) => {
        calls.count += 1;
        if (calls.fail) throw new Error("connect ECONNREFUSED");
        return answer(request);
      },
    });
    return { clock, scheduler, stapler, state, calls, events: memory.events };
  }

  test("first response, then a refresh at min(ocsp_refresh_ms, nextUpdate/2)", async () => {
    const { scheduler, stapler, calls, clock } = setup(60 * MINUTE);
    stapler.start();
    await stapler.firstResponse;
    const first = stapler.status();
    assert.equal(first.status, "good");
    assert.equal(first.fetchedAt, clock.now());
    assert.ok(stapler.currentStaple());
    await scheduler.advance(15 * MINUTE - 1);
    assert.equal(calls.count, 1, "30-minute validity: the refresh waits half of it, not 60 minutes");
    await scheduler.advance(1);
    assert.equal(calls.count, 2);
    // Verification runs on WebCrypto's thread pool: wait for it rather than for a fixed time.
    await waitFor("the refreshed response", () => stapler.status().fetchedAt === clock.now());
    await stapler.stop();
  });

  test("a configured refresh shorter than nextUpdate/2 wins", async () => {
    const { scheduler, stapler, calls } = setup(5 * MINUTE);
    stapler.start();
    await stapler.firstResponse;
    await scheduler.advance(5 * MINUTE);
    assert.equal(calls.count, 2);
    await stapler.stop();
  });

  test("fetch failures keep the last good response until its nextUpdate, retry with backoff, and recover", async () => {
    const { scheduler, stapler, calls, clock, events } = setup();
    stapler.start();
    await stapler.firstResponse;
    const staple = stapler.currentStaple();
    const nextUpdate = stapler.status().nextUpdate ?? 0;
    calls.fail = true;
    await scheduler.advance(15 * MINUTE);
    assert.equal(calls.count, 2);
    assert.equal(stapler.currentStaple(), staple, "cached response still stapled");
    assert.equal(stapler.status().status, "good");
    assert.match(stapler.status().lastError ?? "", /ECONNREFUSED/);
    await scheduler.advance(10_000);
    assert.ok(calls.count >= 3, "retried with backoff, not after another 15 minutes");
    const failed = events().filter((e) => e.msg === "ocsp.fetch_failed");
    assert.ok(failed.length >= 2);
    assert.equal(failed[0]?.cached_until, nextUpdate);
    await scheduler.advance(nextUpdate - clock.now());
    assert.equal(stapler.currentStaple(), null, "an expired response is never stapled");
    assert.equal(stapler.status().status, "none");
    calls.fail = false;
    await scheduler.advance(10_000);
    await waitFor("recovery", () => stapler.status().status === "good");
    assert.ok(stapler.currentStaple());
    assert.equal(stapler.status().lastError, null);
    await stapler.stop();
  });

  test("a revoked answer is kept and served, logged as ocsp.revoked, and the stapler keeps going", async () => {
    const { scheduler, stapler, state, calls, events } = setup();
    stapler.start();
    await stapler.firstResponse;
    state.status = { kind: "revoked", revokedAt: Date.now(), reason: 0 };
    await scheduler.advance(15 * MINUTE);
    await waitFor("the revoked response", () => stapler.status().status === "revoked");
    assert.ok(stapler.currentStaple(), "the revoked response is stapled (SDKs refuse it; the node stays up)");
    assert.equal(events().filter((e) => e.msg === "ocsp.revoked" && e.level === "warn").length, 1);
    state.status = { kind: "good" };
    await scheduler.advance(15 * MINUTE);
    assert.equal(calls.count, 3);
    await waitFor("re-enabled node recovers by itself", () => stapler.status().status === "good");
    await stapler.stop();
  });

  test("stop() leaves no timer behind", async () => {
    const { scheduler, stapler } = setup();
    stapler.start();
    await stapler.firstResponse;
    await stapler.stop();
    await settle();
    assert.equal(scheduler.pending, 0);
  });
});
