/**
 * What went wrong with one call to the CP, sorted into the cases the loops treat differently:
 * the network or a timeout (retry with backoff, keep serving cached data), TLS (the same, but
 * logged under [TLS] because it usually means a certificate problem an operator must fix), an
 * HTTP 4xx (the CP refused this request: log it and do not hammer), a 5xx (retry), and a
 * response that does not match the contract. Internal to the node agent (it never reaches a
 * client); `code` is the CP's catalogue code when the CP answered with one.
 */

import { type ErrorCode, isErrorCode } from "../../shared/errors/index.js";

export type CpCallErrorKind = "network" | "timeout" | "tls" | "http" | "invalid_response" | "aborted";

export class CpCallError extends Error {
  override readonly name = "CpCallError";

  constructor(
    readonly kind: CpCallErrorKind,
    message: string,
    readonly details: {
      /** HTTP status for kind "http". */
      status?: number;
      /** The CP's catalogue code (the body's "error"), for kind "http". */
      code?: ErrorCode;
      /** The socket or TLS error code (ECONNREFUSED, ERR_SSL_…), for kinds network, timeout and tls. */
      socketCode?: string;
      /** The CP's public error details (e.g. DELTA_CURSOR_EXPIRED's since/oldest_available). */
      body?: unknown;
      cause?: unknown;
    } = {},
  ) {
    super(message, { cause: details.cause });
  }

  get status(): number | undefined {
    return this.details.status;
  }

  get code(): ErrorCode | undefined {
    return this.details.code;
  }

  get socketCode(): string | undefined {
    return this.details.socketCode;
  }

  /**
   * Worth retrying soon: the network, timeouts, TLS hiccups, 5xx, 408 and 429. A 4xx answer
   * means the CP refused this very request; repeating it at once would only repeat the refusal.
   */
  get retryable(): boolean {
    if (this.kind === "http") {
      const status = this.details.status ?? 0;
      return status >= 500 || status === 408 || status === 429;
    }
    return this.kind !== "invalid_response" && this.kind !== "aborted";
  }
}

const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|UNABLE_TO_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|HOSTNAME_MISMATCH|ERR_OSSL_)/;
const TIMEOUT_CODE = /^(UND_ERR_CONNECT_TIMEOUT|UND_ERR_HEADERS_TIMEOUT|UND_ERR_BODY_TIMEOUT|ETIMEDOUT)$/;

/** The innermost error code undici / node:tls attached (fetch wraps them in "fetch failed"). */
export function errorCodeOf(error: unknown): string | undefined {
  for (let current: unknown = error, depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && code !== "ABORT_ERR") return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function innermostMessage(error: unknown): string {
  let message = error instanceof Error ? error.message : String(error);
  for (let current = (error as { cause?: unknown })?.cause, depth = 0; current instanceof Error && depth < 5; depth++) {
    message = current.message;
    current = current.cause;
  }
  return message;
}

/** Turns whatever fetch threw into a CpCallError. `timedOut` / `aborted` come from our own signals. */
export function classifyFetchError(error: unknown, state: { timedOut: boolean; aborted: boolean }): CpCallError {
  if (error instanceof CpCallError) return error;
  if (state.aborted) return new CpCallError("aborted", "request aborted: the agent is stopping", { cause: error });
  const code = errorCodeOf(error);
  if (state.timedOut || (code !== undefined && TIMEOUT_CODE.test(code))) {
    return new CpCallError("timeout", `request timed out${code ? ` (${code})` : ""}`, {
      ...(code ? { socketCode: code } : {}),
      cause: error,
    });
  }
  if (code !== undefined && TLS_CODE.test(code)) return new CpCallError("tls", innermostMessage(error), { socketCode: code, cause: error });
  return new CpCallError("network", innermostMessage(error), { ...(code ? { socketCode: code } : {}), cause: error });
}

/** An HTTP error answer; the CP's body is `{"error","message","details"?}`. */
export function httpError(status: number, bodyText: string): CpCallError {
  let body: { error?: unknown; message?: unknown; details?: unknown } | undefined;
  try {
    body = JSON.parse(bodyText) as typeof body;
  } catch {
    body = undefined;
  }
  const code = isErrorCode(body?.error) ? body.error : undefined;
  const text = typeof body?.message === "string" ? body.message : bodyText.slice(0, 200);
  return new CpCallError("http", `HTTP ${status}${code ? ` ${code}` : ""}: ${text}`, { status, ...(code ? { code } : {}), body });
}
