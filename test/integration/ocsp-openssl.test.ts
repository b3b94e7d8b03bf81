/**
 * Channel 4 end to end: the hono OCSP app on plain HTTP (127.0.0.1, port 0) answering the real
 * `openssl ocsp` client. openssl exits 0 even for revoked certificates, so the assertions read
 * its output. openssl runs asynchronously: the server lives in this process.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  buildOcspErrorResponse,
  createOcspAnswerer,
  createOcspListener,
  OCSP_REQUEST_CONTENT_TYPE,
  OCSP_RESPONSE_CONTENT_TYPE,
} from "../../src/cp/ocsp/index.js";
import { readTlv } from "../../src/shared/pki/ocsp/der.js";
import type { OcspCertStatus } from "../../src/shared/pki/ocsp/index.js";
import { type Clock, systemClock } from "../../src/shared/time/index.js";
import { inventoryResolver, mintCa, mintLeaf, mintPki, type TestCert } from "../helpers/ocsp-fixture.js";

const REVOKED_AT = Date.now() - 3_600_000;

let dir: string;
let server: http.Server;
let url: string;
let ca: TestCert;
let leaves: TestCert[];
const statuses = new Map<string, OcspCertStatus>();
// Lets a test move the responder's clock; defaults to the real time openssl checks against.
let clockOffsetMs = 0;
const clock: Clock = { now: () => systemClock.now() + clockOffsetMs };
const errors: unknown[] = [];

function leaf(i: number): TestCert {
  const l = leaves[i];
  if (l === undefined) throw new Error(`no leaf ${i}`);
  return l;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "ocsp-int-"));
  ({ ca, leaves } = await mintPki(3));
  const stranger = await mintCa("Not Our CA");
  const strangerLeaf = await mintLeaf(stranger, "stranger.test");
  writeFileSync(join(dir, "ca.pem"), `${ca.certPem}\n`);
  writeFileSync(join(dir, "stranger-ca.pem"), `${stranger.certPem}\n`);
  writeFileSync(join(dir, "stranger.pem"), `${strangerLeaf.certPem}\n`);
  for (const [i, l] of leaves.entries()) writeFileSync(join(dir, `leaf${i}.pem`), `${l.certPem}\n`);
  statuses.set(leaf(0).serialHex, { kind: "good" });
  statuses.set(leaf(1).serialHex, { kind: "revoked", revokedAt: REVOKED_AT, reason: 1 });
  // leaf2 is not in the inventory: unknown

  const sync = inventoryResolver([{ ca, statuses }]);
  const answer = createOcspAnswerer({
    resolve: async (q) => sync(q),
    clock,
    onError: (error) => errors.push(error),
  });
  await new Promise<void>((resolve) => {
    server = http.createServer(createOcspListener({ answer })).listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  url = `http://127.0.0.1:${port}/ocsp/`;
});

after(async () => {
  if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface OpensslResult {
  code: number;
  out: string;
}

/** Runs `openssl ocsp ...` in the temp dir; stdout and stderr together (verify lines go to stderr). */
function ocsp(args: string[]): Promise<OpensslResult> {
  return new Promise((resolve) => {
    execFile("openssl", ["ocsp", "-timeout", "10", ...args], { cwd: dir }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

function assertVerified(result: OpensslResult): void {
  assert.equal(result.code, 0, result.out);
  assert.match(result.out, /Response verify OK/, result.out);
  assert.doesNotMatch(result.out, /WARNING|error/i, result.out);
}

describe("openssl ocsp against the OCSP app over HTTP", () => {
  test("default request (SHA-1 CertID, nonce): good, revoked, unknown", async () => {
    const good = await ocsp(["-issuer", "ca.pem", "-cert", "leaf0.pem", "-url", url, "-CAfile", "ca.pem"]);
    assertVerified(good);
    assert.match(good.out, /leaf0\.pem: good/);

    const revoked = await ocsp(["-issuer", "ca.pem", "-cert", "leaf1.pem", "-url", url, "-CAfile", "ca.pem"]);
    assertVerified(revoked);
    assert.match(revoked.out, /leaf1\.pem: revoked/);
    assert.match(revoked.out, /Reason: keyCompromise/);

    const unknown = await ocsp(["-issuer", "ca.pem", "-cert", "leaf2.pem", "-url", url, "-CAfile", "ca.pem"]);
    assertVerified(unknown);
    assert.match(unknown.out, /leaf2\.pem: unknown/);
  });

  test("-sha256 with all three certificates in one request", async () => {
    const result = await ocsp([
      "-sha256",
      "-issuer",
      "ca.pem",
      "-cert",
      "leaf0.pem",
      "-cert",
      "leaf1.pem",
      "-cert",
      "leaf2.pem",
      "-url",
      url,
      "-CAfile",
      "ca.pem",
    ]);
    assertVerified(result);
    assert.match(result.out, /leaf0\.pem: good/);
    assert.match(result.out, /leaf1\.pem: revoked/);
    assert.match(result.out, /leaf2\.pem: unknown/);
  });

  test("-no_nonce vs default nonce: echoed only when sent", async () => {
    const withNonce = await ocsp(["-issuer", "ca.pem", "-cert", "leaf0.pem", "-url", url, "-CAfile", "ca.pem", "-resp_text"]);
    assertVerified(withNonce);
    assert.match(withNonce.out, /OCSP Nonce/);
    const noNonce = await ocsp(["-no_nonce", "-issuer", "ca.pem", "-cert", "leaf0.pem", "-url", url, "-CAfile", "ca.pem", "-resp_text"]);
    assertVerified(noNonce);
    assert.doesNotMatch(noNonce.out, /OCSP Nonce/);
    assert.match(noNonce.out, /leaf0\.pem: good/);
  });

  test("strict verification (no -issuer fallback) needs only -CAfile: the CA certificate is embedded", async () => {
    const fetched = await ocsp([
      "-issuer",
      "ca.pem",
      "-cert",
      "leaf1.pem",
      "-url",
      url,
      "-CAfile",
      "ca.pem",
      "-reqout",
      "strict-req.der",
      "-respout",
      "strict-resp.der",
    ]);
    assertVerified(fetched);
    // Without -issuer, openssl cannot fall back to trusting the issuer file as the responder.
    const strict = await ocsp(["-reqin", "strict-req.der", "-respin", "strict-resp.der", "-CAfile", "ca.pem", "-resp_text"]);
    assertVerified(strict);
    assert.match(strict.out, /Cert Status: revoked/);
    const wrongAnchor = await ocsp(["-reqin", "strict-req.der", "-respin", "strict-resp.der", "-CAfile", "stranger-ca.pem"]);
    assert.match(wrongAnchor.out, /Response Verify Failure/);
  });

  test("a revocation is visible on the very next request (no caching)", async () => {
    const serial = leaf(0).serialHex;
    try {
      statuses.set(serial, { kind: "revoked", revokedAt: Date.now() - 1000, reason: 4 });
      const result = await ocsp(["-issuer", "ca.pem", "-cert", "leaf0.pem", "-url", url, "-CAfile", "ca.pem"]);
      assertVerified(result);
      assert.match(result.out, /leaf0\.pem: revoked/);
      assert.match(result.out, /Reason: superseded/);
    } finally {
      statuses.set(serial, { kind: "good" });
    }
  });

  test("a certificate from a CA we do not run -> unauthorized (6)", async () => {
    const result = await ocsp(["-issuer", "stranger-ca.pem", "-cert", "stranger.pem", "-url", url, "-CAfile", "stranger-ca.pem"]);
    assert.match(result.out, /Responder Error: unauthorized \(6\)/, result.out);
  });

  test("openssl rejects a response whose window has passed (the window is real)", async () => {
    clockOffsetMs = -31 * 60 * 1000 - 5 * 60 * 1000; // nextUpdate 6 minutes ago, past openssl's 5-minute slack
    try {
      const result = await ocsp(["-issuer", "ca.pem", "-cert", "leaf0.pem", "-url", url, "-CAfile", "ca.pem"]);
      assert.match(result.out, /Response verify OK/);
      assert.match(result.out, /Status times invalid|Status expired/, result.out);
    } finally {
      clockOffsetMs = 0;
    }
  });
});

describe("HTTP details with fetch", () => {
  test("GET form: url-encoded base64 of the DER request", async () => {
    await ocsp(["-issuer", "ca.pem", "-cert", "leaf1.pem", "-reqout", "get-req.der"]);
    const der = readFileSync(join(dir, "get-req.der"));
    const res = await fetch(`${url}${encodeURIComponent(der.toString("base64"))}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), OCSP_RESPONSE_CONTENT_TYPE);
    assert.equal(res.headers.get("cache-control"), "no-store");
    writeFileSync(join(dir, "get-resp.der"), Buffer.from(await res.arrayBuffer()));
    const result = await ocsp(["-reqin", "get-req.der", "-respin", "get-resp.der", "-CAfile", "ca.pem", "-resp_text"]);
    assertVerified(result);
    assert.match(result.out, /Cert Status: revoked/);
  });

  test("garbage POST -> HTTP 200 with OCSP malformedRequest", async () => {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": OCSP_REQUEST_CONTENT_TYPE },
      body: "definitely not DER",
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), OCSP_RESPONSE_CONTENT_TYPE);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), buildOcspErrorResponse("malformedRequest"));
    writeFileSync(join(dir, "garbage-resp.der"), buildOcspErrorResponse("malformedRequest"));
    const text = await ocsp(["-respin", "garbage-resp.der", "-resp_text", "-noverify"]);
    assert.match(text.out, /malformedrequest \(1\)|malformedRequest \(0?x?1\)/i, text.out);
  });

  test("oversized POST (20 KiB) -> HTTP 200 malformedRequest", async () => {
    const res = await fetch(url, { method: "POST", body: Buffer.alloc(20 * 1024, 0x30) });
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), buildOcspErrorResponse("malformedRequest"));
  });

  test("wrong method -> 405", async () => {
    const res = await fetch(url, { method: "PUT", body: "x" });
    assert.equal(res.status, 405);
    await res.arrayBuffer();
  });

  test("64 concurrent POSTs all succeed", async () => {
    await ocsp(["-issuer", "ca.pem", "-cert", "leaf0.pem", "-reqout", "conc-req.der"]);
    const der = readFileSync(join(dir, "conc-req.der"));
    const bodies = await Promise.all(
      Array.from({ length: 64 }, async () => {
        const res = await fetch(url, { method: "POST", headers: { "content-type": OCSP_REQUEST_CONTENT_TYPE }, body: der });
        return Buffer.from(await res.arrayBuffer());
      }),
    );
    for (const b of bodies) {
      const outer = readTlv(b, 0);
      const status = readTlv(b, outer.contentStart, outer.end);
      assert.deepEqual(b.subarray(status.start, status.end), Buffer.from([0x0a, 0x01, 0x00])); // successful
    }
    // only the deliberately bad requests above were reported
    assert.ok(
      errors.every((e) => e instanceof Error && e.name === "OcspRequestError"),
      String(errors),
    );
  });
});
