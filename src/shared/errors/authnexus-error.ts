import type { ErrorCode } from "./catalogue.js";
import { ERROR_CATALOGUE } from "./catalogue.js";

export interface AuthNexusErrorOptions {
  /** Public text; defaults to the catalogue's message for the code. */
  message?: string;
  /** Structured detail the client receives as `details` (field problems, cursor positions). */
  publicDetail?: unknown;
  /** Internal detail for logs only; never sent to a client. */
  detail?: Record<string, unknown>;
  /** Underlying error; never serialised. */
  cause?: unknown;
  /** Extra HTTP response headers (for example Retry-After). */
  headers?: Record<string, string>;
}

/**
 * The one error type every layer throws on purpose. The code decides the HTTP status, the
 * binary-protocol status and whether the message may leave the process; anything else thrown
 * is treated as INTERNAL (see normalizeError).
 */
export class AuthNexusError extends Error {
  readonly code: ErrorCode;
  /** HTTP status on the admin and node APIs. */
  readonly status: number;
  /** Status code on the SDK's binary protocol. */
  readonly wire: number;
  readonly expose: boolean;
  readonly retryable: boolean;
  /** Seconds a client should wait before retrying (retryable codes only). */
  readonly retryAfterS: number | undefined;
  readonly publicDetail: unknown;
  readonly detail: Record<string, unknown> | undefined;
  readonly headers: Record<string, string> | undefined;

  constructor(code: ErrorCode, options: AuthNexusErrorOptions = {}) {
    const entry = ERROR_CATALOGUE[code];
    super(options.message ?? entry.message, { cause: options.cause });
    this.name = "AuthNexusError";
    this.code = code;
    this.status = entry.http;
    this.wire = entry.wire;
    this.expose = entry.expose;
    this.retryable = entry.retryable;
    this.retryAfterS = entry.retryAfterS;
    this.publicDetail = options.publicDetail;
    this.detail = options.detail;
    this.headers = options.headers;
  }
}

export function isAuthNexusError(value: unknown, code?: ErrorCode): value is AuthNexusError {
  return value instanceof AuthNexusError && (code === undefined || value.code === code);
}
