import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, describe, test } from "node:test";
import {
  buildOcspErrorResponse,
  createOcspListener,
  OCSP_REQUEST_CONTENT_TYPE,
  OCSP_RESPONSE_CONTENT_TYPE,
  type OcspAppOptions,
} from "../../src/cp/ocsp/index.js";
import { DEFAULT_OCSP_MAX_REQUEST_BYTES } from "../../src/shared/config/defaults.js";

const MALFORMED = buildOcspErrorResponse("malformedRequest");
const INTERNAL = buildOcspErrorResponse("internalError");
// Stands in for a real response: the marker lets the tests see what reached `answer`.
const ANSWERED = Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x00]);

const servers: http.Server[] = [];
after(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/** The listener behind a real HTTP server on port 0; `request(path, init)` is fetch against it. */
function serveOcsp(options: OcspAppOptions) {
  const server = http.createServer(createOcspListener(options)).listen(0, "127.0.0.1");
  servers.push(server);
  const listening = new Promise<void>((resolve) => server.once("listening", resolve));
  const port = () => (server.address() as AddressInfo).port;
  return {
    async request(path: string, init: RequestInit = {}): Promise<Response> {
      await listening;
      return fetch(`http://127.0.0.1:${port()}${path}`, init);
    },
    /** POSTs `chunkBytes` chunks without a length until the answer arrives (or `maxChunks`). */
    async streamUntilAnswered(path: string, chunkBytes: number, maxChunks: number) {
      await listening;
      return new Promise<{ status: number; connection: string | undefined; body: Buffer; chunksSent: number }>((resolve, reject) => {
        let chunksSent = 0;
        let answered = false;
        const req = http.request({ host: "127.0.0.1", port: port(), path, method: "POST" }, (res) => {
          answered = true;
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: Buffer.concat(chunks), chunksSent }),
          );
        });
        req.on("error", (error) => (answered ? undefined : reject(error)));
        const pump = () => {
          while (!answered && chunksSent < maxChunks) {
            chunksSent++;
            if (!req.write(Buffer.alloc(chunkBytes))) return void req.once("drain", pump);
          }
          if (!answered) req.end();
        };
        pump();
      });
    },
  };
}

function recordingApp(maxRequestBytes?: number) {
  const seen: Buffer[] = [];
  const app = serveOcsp({
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

const SAMPLE = Buffer.from(
  "3051304f304d304b3049300906052b0e03021a05000414aabbccddeeff00112233445566778899aabbccdd0414" +
    "ff".repeat(20) +
    "02100123456789abcdef0123456789abcdef",
  "hex",
);

describe("createOcspListener", () => {
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

    // No declared length: the server must stop reading once past the limit and answer anyway.
    const streamed = await app.streamUntilAnswered("/ocsp/", 512, 100_000);
    assert.equal(streamed.status, 200);
    assert.equal(streamed.connection, "close");
    assert.deepEqual(streamed.body, MALFORMED);
    assert.ok(streamed.chunksSent < 100_000, `sent ${streamed.chunksSent} chunks before the answer`);

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
    const app = serveOcsp({
      answer: () => {
        throw new Error("boom");
      },
    });
    const res = await app.request("/ocsp/", { method: "POST", body: SAMPLE });
    assertOcspHeaders(res);
    assert.deepEqual(await body(res), INTERNAL);
  });

  test("rejects a nonsensical maxRequestBytes", () => {
    assert.throws(() => createOcspListener({ answer: () => ANSWERED, maxRequestBytes: 0 }), RangeError);
  });
});
