/**
 * Sorting CP call failures: what the loops retry soon (network, timeout, TLS, 5xx, 408, 429)
 * and what they must not hammer (4xx, a response outside the contract), with the CP's error
 * code and details kept for DELTA_CURSOR_EXPIRED.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CpCallError, classifyFetchError, httpError } from "../../src/node/agent/cp-call-error.js";

const wrapped = (code: string, message = "boom") => new TypeError("fetch failed", { cause: Object.assign(new Error(message), { code }) });
const idle = { timedOut: false, aborted: false };

describe("classifyFetchError", () => {
  test("refused connections and resets are network errors, retryable", () => {
    for (const code of ["ECONNREFUSED", "ECONNRESET", "UND_ERR_SOCKET", "ENOTFOUND"]) {
      const error = classifyFetchError(wrapped(code), idle);
      assert.equal(error.kind, "network", code);
      assert.equal(error.socketCode, code);
      assert.equal(error.retryable, true);
    }
  });

  test("certificate and handshake failures are TLS errors (logged under [TLS]), still retried", () => {
    for (const code of [
      "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
      "ERR_TLS_CERT_ALTNAME_INVALID",
      "DEPTH_ZERO_SELF_SIGNED_CERT",
      "CERT_HAS_EXPIRED",
      "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED",
    ]) {
      const error = classifyFetchError(wrapped(code, "handshake says no"), idle);
      assert.equal(error.kind, "tls", code);
      assert.equal(error.message, "handshake says no");
      assert.equal(error.retryable, true);
    }
  });

  test("our own deadline and undici's timeouts are timeouts; our own stop is 'aborted', not retried", () => {
    assert.equal(classifyFetchError(new DOMException("x", "TimeoutError"), { timedOut: true, aborted: false }).kind, "timeout");
    assert.equal(classifyFetchError(wrapped("UND_ERR_CONNECT_TIMEOUT"), idle).kind, "timeout");
    const aborted = classifyFetchError(new DOMException("x", "AbortError"), { timedOut: false, aborted: true });
    assert.equal(aborted.kind, "aborted");
    assert.equal(aborted.retryable, false);
  });
});

describe("httpError", () => {
  test("keeps the CP's code, message and details; 4xx is not retryable, 5xx/429 are", () => {
    const body = JSON.stringify({
      error: "DELTA_CURSOR_EXPIRED",
      message: "replay from 0",
      details: { since: 5, oldest_available: 40, head: 90 },
    });
    const gone = httpError(410, body);
    assert.equal(gone.kind, "http");
    assert.equal(gone.status, 410);
    assert.equal(gone.code, "DELTA_CURSOR_EXPIRED");
    assert.deepEqual((gone.details.body as { details: unknown }).details, { since: 5, oldest_available: 40, head: 90 });
    assert.equal(gone.retryable, false);
    assert.equal(httpError(403, '{"error":"NODE_IDENTITY_MISMATCH","message":"no"}').retryable, false);
    assert.equal(httpError(503, "").retryable, true);
    assert.equal(httpError(429, "").retryable, true);
    assert.match(httpError(502, "<html>bad gateway</html>").message, /HTTP 502: <html>bad gateway/);
  });

  test("a response outside the contract is not retried at once", () => {
    assert.equal(new CpCallError("invalid_response", "x").retryable, false);
  });
});
