import { type Context, Hono } from "hono";
import { buildOcspErrorResponse } from "./build-response.js";

export const OCSP_REQUEST_CONTENT_TYPE = "application/ocsp-request";
export const OCSP_RESPONSE_CONTENT_TYPE = "application/ocsp-response";
export const DEFAULT_OCSP_MAX_REQUEST_BYTES = 16 * 1024;

export interface OcspAppOptions {
  /** DER OCSPRequest in, DER OCSPResponse out; expected never to throw (see createOcspAnswerer). */
  answer: (der: Uint8Array) => Promise<Buffer> | Buffer;
  /** Largest accepted request, POST body or decoded GET payload; default 16 KiB. */
  maxRequestBytes?: number;
}

function ocspResponse(c: Context, der: Uint8Array, extraHeaders: Record<string, string> = {}) {
  return c.body(new Uint8Array(der), 200, {
    "Content-Type": OCSP_RESPONSE_CONTENT_TYPE,
    "Cache-Control": "no-store",
    ...extraHeaders,
  });
}

/** Reads at most `limit` bytes of the body; null when it is (or announces to be) larger. */
async function readBodyWithin(request: Request, limit: number): Promise<Uint8Array | null> {
  const declared = request.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > limit) return null;
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => undefined);
      return null;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, total);
}

const BASE64_CHARS = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** Decodes the GET form (RFC 6960 Appendix A.1): url-encoded base64 of the DER request. */
function decodeGetPayload(encoded: string, limit: number): Uint8Array | null {
  // Base64 is 4/3 of the DER; url-encoding at most triples every character.
  if (encoded.length > Math.ceil(limit / 3) * 4 * 3 + 12) return null;
  let text: string;
  try {
    text = decodeURIComponent(encoded);
  } catch {
    return null;
  }
  if (text.length === 0 || !BASE64_CHARS.test(text)) return null;
  const der = Buffer.from(text.replace(/-/g, "+").replace(/_/g, "/"), "base64");
  return der.length > limit ? null : der;
}

/**
 * Channel 4 (plain HTTP) OCSP endpoints:
 * - POST /ocsp and /ocsp/ with the DER request as the body (application/ocsp-request; the
 *   content type is not enforced, the body is parsed either way);
 * - GET /ocsp/{url-encoded base64 request} (base64url is accepted too).
 * Every answer is HTTP 200 application/ocsp-response with Cache-Control: no-store; requests
 * that cannot be read (garbage, empty, over maxRequestBytes, bad base64) get an OCSP
 * malformedRequest body. Other methods on these paths get 405 with an Allow header.
 */
export function createOcspApp(options: OcspAppOptions): Hono {
  const { answer } = options;
  const limit = options.maxRequestBytes ?? DEFAULT_OCSP_MAX_REQUEST_BYTES;
  if (!Number.isInteger(limit) || limit <= 0) {
    throw new RangeError("maxRequestBytes must be a positive integer");
  }

  const respond = async (c: Context, der: Uint8Array | null) => {
    if (der === null) {
      return ocspResponse(c, buildOcspErrorResponse("malformedRequest"), { Connection: "close" });
    }
    let body: Buffer;
    try {
      body = await answer(der);
    } catch {
      body = buildOcspErrorResponse("internalError");
    }
    return ocspResponse(c, body);
  };

  const app = new Hono();
  const post = async (c: Context) => respond(c, await readBodyWithin(c.req.raw, limit));
  const get = (c: Context) => {
    const path = new URL(c.req.url).pathname;
    const encoded = path.startsWith("/ocsp/") ? path.slice("/ocsp/".length) : "";
    return respond(c, decodeGetPayload(encoded, limit));
  };
  const notAllowed = (c: Context) =>
    c.text("Method Not Allowed", 405, { Allow: "GET, HEAD, POST", "Cache-Control": "no-store" });

  app.post("/ocsp", post);
  app.post("/ocsp/", post);
  app.get("/ocsp", get);
  app.get("/ocsp/*", get);
  app.all("/ocsp", notAllowed);
  app.all("/ocsp/*", notAllowed);
  return app;
}
