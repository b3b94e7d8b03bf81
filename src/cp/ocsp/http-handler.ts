import type { IncomingMessage, ServerResponse } from "node:http";
import { DEFAULT_OCSP_MAX_REQUEST_BYTES } from "../../shared/config/defaults.js";
import { buildOcspErrorResponse } from "./build-response.js";

export const OCSP_REQUEST_CONTENT_TYPE = "application/ocsp-request";
export const OCSP_RESPONSE_CONTENT_TYPE = "application/ocsp-response";

export interface OcspAppOptions {
  /** DER OCSPRequest in, DER OCSPResponse out; expected never to throw (see createOcspAnswerer). */
  answer: (der: Uint8Array) => Promise<Buffer> | Buffer;
  /** Largest accepted request, POST body or decoded GET payload; default 16 KiB. */
  maxRequestBytes?: number;
}

type Listener = (req: IncomingMessage, res: ServerResponse) => void;

function sendOcsp(res: ServerResponse, der: Uint8Array, close = false): void {
  // One write: headers and body leave together, with an exact length (no chunked trailer).
  res.writeHead(200, {
    "Content-Type": OCSP_RESPONSE_CONTENT_TYPE,
    "Content-Length": der.byteLength,
    "Cache-Control": "no-store",
    ...(close ? { Connection: "close" } : {}),
  });
  res.end(der);
}

/** Reads at most `limit` bytes of the body; null when it is (or announces to be) larger. */
function readBodyWithin(req: IncomingMessage, limit: number): Promise<Uint8Array | null> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > limit) return Promise.resolve(null);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total <= limit) return void chunks.push(chunk);
      // Stop reading at once: the answer goes out with Connection: close and the socket ends.
      req.off("data", onData);
      req.pause();
      resolve(null);
    };
    req.on("data", onData);
    req.on("end", () => resolve(Buffer.concat(chunks, total)));
    req.on("error", () => resolve(null));
  });
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
 * Channel 4 (plain HTTP) OCSP endpoints, as a node:http request listener — no framework: this
 * is the hottest fixed-shape endpoint of the CP, and the Web Request/Response round trip a
 * framework adds cost more than the signature (see docs/benchmarks.md).
 * - POST /ocsp and /ocsp/ with the DER request as the body (application/ocsp-request; the
 *   content type is not enforced, the body is parsed either way);
 * - GET /ocsp/{url-encoded base64 request} (base64url is accepted too).
 * Every answer is HTTP 200 application/ocsp-response with Cache-Control: no-store; requests
 * that cannot be read (garbage, empty, over maxRequestBytes, bad base64) get an OCSP
 * malformedRequest body. Other methods on these paths get 405 with an Allow header; other
 * paths 404.
 */
export function createOcspListener(options: OcspAppOptions): Listener {
  const { answer } = options;
  const limit = options.maxRequestBytes ?? DEFAULT_OCSP_MAX_REQUEST_BYTES;
  if (!Number.isInteger(limit) || limit <= 0) {
    throw new RangeError("maxRequestBytes must be a positive integer");
  }

  const respond = async (res: ServerResponse, der: Uint8Array | null) => {
    if (der === null) return sendOcsp(res, buildOcspErrorResponse("malformedRequest"), true);
    let body: Buffer;
    try {
      body = await answer(der);
    } catch {
      body = buildOcspErrorResponse("internalError");
    }
    sendOcsp(res, body);
  };

  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const onOcspPath = path === "/ocsp" || path.startsWith("/ocsp/");
    if (!onOcspPath) return sendText(res, 404, "Not Found");
    if (req.method === "POST" && (path === "/ocsp" || path === "/ocsp/")) {
      void readBodyWithin(req, limit).then((der) => respond(res, der));
      return;
    }
    if (req.method === "GET" || req.method === "HEAD") {
      const encoded = path.startsWith("/ocsp/") ? path.slice("/ocsp/".length) : "";
      void respond(res, decodeGetPayload(encoded, limit));
      return;
    }
    req.resume();
    sendText(res, 405, "Method Not Allowed", { Allow: "GET, HEAD, POST" });
  };
}

function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    "Cache-Control": "no-store",
    ...headers,
  });
  res.end(text);
}
