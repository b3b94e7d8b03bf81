import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  buildOcspErrorResponse,
  createOcspApp,
  DEFAULT_OCSP_MAX_REQUEST_BYTES,
  OCSP_REQUEST_CONTENT_TYPE,
  OCSP_RESPONSE_CONTENT_TYPE,
} from "../../src/cp/ocsp/index.js";

const MALFORMED = buildOcspErrorResponse("malformedRequest");
const INTERNAL = buildOcspErrorResponse("internalError");
// Stands in for a real response: the marker lets the tests see what reached `answer`.
const ANSWERED = Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x00]);

function recordingApp(maxRequestBytes?: number) {
  const seen: Buffer[] = [];
  const app = createOcspApp({
    answer: (der) => {
      seen.push(Buffer.from(der));
      return ANSWERED;
    },
    ...(maxRequestBytes === undefined ? {} : { maxRequestBytes }),
  });
  return { app, seen };
}

async function body(res: Response): Promise<Buffer> {
  return Buffer.from(await res.arrayBuffer());
}

function assertOcspHeaders(res: Response): void {
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), OCSP_RESPONSE_CONTENT_TYPE);
  assert.equal(res.headers.get("cache-control"), "no-store");
}

const SAMPLE = Buffer.from("3051304f304d304b3049300906052b0e03021a05000414aabbccddeeff00112233445566778899aabbccdd0414" + "ff".repeat(20) + "02100123456789abcdef0123456789abcdef", "hex");

describe("createOcspApp", () => {
  test("POST /ocsp/ and /ocsp hand the body to answer and return its DER", async () => {
    const { app, seen } = recordingApp();
    for (const path of ["/ocsp/", "/ocsp"]) {
      const res = await app.request(path, {
        method: "POST",
        headers: { "content-type": OCSP_REQUEST_CONTENT_TYPE },
        body: SAMPLE,
      });
      assertOcspHeaders(res);
      assert.deepEqual(await body(res), ANSWERED);
    }
    assert.deepEqual(seen, [SAMPLE, SAMPLE]);
  });

  test("GET /ocsp/{url-encoded base64} (RFC 6960 A.1), plain and base64url", async () => {
    const { app, seen } = recordingApp();
    // Make sure the payload exercises '+', '/' and '=' in standard base64.
    const der = Buffer.concat([SAMPLE, Buffer.from([0xfb, 0xff, 0xbf])]);
    const b64 = der.toString("base64");
    assert.match(b64, /[+/]/);
    const forms = [encodeURIComponent(b64), b64, der.toString("base64url")];
    for (const form of forms) {
      const res = await app.request(`/ocsp/${form}`);
      assertOcspHeaders(res);
      assert.deepEqual(await body(res), ANSWERED);
    }
    assert.deepEqual(seen, [der, der, der]);
  });

  test("garbage and empty requests reach answer or are answered malformedRequest; never 4xx", async () => {
    const { app, seen } = recordingApp();
    const cases: [string, RequestInit][] = [
      ["/ocsp/", { method: "POST", body: "" }],
      ["/ocsp/", { method: "GET" }],
      ["/ocsp", { method: "GET" }],
      ["/ocsp/%E0%A4%A", { method: "GET" }],
      ["/ocsp/not*base64!", { method: "GET" }],
    ];
    for (const [path, init] of cases) {
      const res = await app.request(path, init);
      assertOcspHeaders(res);
      const bytes = await body(res);
      assert.ok(bytes.equals(MALFORMED) || bytes.equals(ANSWERED), `${path}: ${bytes.toString("hex")}`);
    }
    // An empty POST body is the answerer's to reject (it parses to nothing).
    assert.deepEqual(seen, [Buffer.alloc(0)]);
  });

  test("an oversized POST is malformedRequest and never reaches answer (declared or streamed)", async () => {
    const { app, seen } = recordingApp(1024);
    const declared = await app.request("/ocsp/", {
      method: "POST",
      headers: { "content-length": "5000" },
      body: Buffer.alloc(5000),
    });
    assertOcspHeaders(declared);
    assert.deepEqual(await body(declared), MALFORMED);

    let pulled = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        if (pulled > 1000) throw new Error("read far beyond the limit");
        controller.enqueue(new Uint8Array(512));
      },
    });
    const streamed = await app.request("/ocsp/", { method: "POST", body: stream, duplex: "half" } as RequestInit);
    assertOcspHeaders(streamed);
    assert.deepEqual(await body(streamed), MALFORMED);
    assert.ok(pulled <= 4, `pulled ${pulled} chunks`);

    const exactly = await app.request("/ocsp/", { method: "POST", body: Buffer.alloc(1024, 1) });
    assert.deepEqual(await body(exactly), ANSWERED);
    assert.equal(seen.length, 1);
  });

  test("an oversized GET payload is malformedRequest", async () => {
    const { app, seen } = recordingApp(1024);
    const res = await app.request(`/ocsp/${encodeURIComponent(Buffer.alloc(1025, 1).toString("base64"))}`);
    assertOcspHeaders(res);
    assert.deepEqual(await body(res), MALFORMED);
    assert.equal(seen.length, 0);
    assert.equal(DEFAULT_OCSP_MAX_REQUEST_BYTES, 16 * 1024);
  });

  test("other methods -> 405 with Allow; other paths -> 404", async () => {
    const { app } = recordingApp();
    for (const [method, path] of [
      ["PUT", "/ocsp/"],
      ["DELETE", "/ocsp"],
      ["PATCH", "/ocsp/abc"],
      ["POST", "/ocsp/abc"],
    ] as const) {
      const res = await app.request(path, { method, body: method === "DELETE" ? null : "x" });
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.match(res.headers.get("allow") ?? "", /POST/);
    }
    assert.equal((await app.request("/elsewhere")).status, 404);
  });

  test("an answer that throws becomes internalError", async () => {
    const app = createOcspApp({
      answer: () => {
        throw new Error("boom");
      },
    });
    const res = await app.request("/ocsp/", { method: "POST", body: SAMPLE });
    assertOcspHeaders(res);
    assert.deepEqual(await body(res), INTERNAL);
  });

  test("rejects a nonsensical maxRequestBytes", () => {
    assert.throws(() => createOcspApp({ answer: () => ANSWERED, maxRequestBytes: 0 }), RangeError);
  });
});
