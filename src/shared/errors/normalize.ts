/**
 * Turns whatever was thrown into the AuthNexusError a client is answered with: our own errors
 * as they are, a database that cannot be reached as DB_UNAVAILABLE (retryable), anything else
 * as INTERNAL. Both transports (HTTP in src/cp/http, the binary protocol in ./to-protocol.ts)
 * answer through here, so the same failure gets the same code everywhere.
 */
import { isDatabaseUnavailable } from "../db/errors.js";
import { AuthNexusError } from "./authnexus-error.js";

export function normalizeError(error: unknown): AuthNexusError {
  if (error instanceof AuthNexusError) return error;
  if (isDatabaseUnavailable(error)) {
    return new AuthNexusError("DB_UNAVAILABLE", {
      detail: { error: error instanceof Error ? error.message : String(error) },
      cause: error,
    });
  }
  return new AuthNexusError("INTERNAL", { detail: { error: error instanceof Error ? error.message : String(error) }, cause: error });
}

/** What the client is told, and whether the failure must be logged as ours (unexposed codes). */
export interface PublicError {
  code: string;
  message: string;
  details?: unknown;
  /** HTTP status. */
  status: number;
  /** Binary-protocol status. */
  wire: number;
  retryable: boolean;
  /** Seconds before a retry makes sense (retryable codes only). */
  retryAfterS: number | undefined;
  /** True when the real reason stays inside the process (answered INTERNAL): log it with its stack. */
  concealed: boolean;
}

export function publicError(error: AuthNexusError): PublicError {
  if (!error.expose) {
    const internal = new AuthNexusError("INTERNAL");
    return {
      code: "INTERNAL",
      message: internal.message,
      status: internal.status,
      wire: internal.wire,
      retryable: false,
      retryAfterS: undefined,
      concealed: true,
    };
  }
  return {
    code: error.code,
    message: error.message,
    ...(error.publicDetail !== undefined ? { details: error.publicDetail } : {}),
    status: error.status,
    wire: error.wire,
    retryable: error.retryable,
    retryAfterS: error.retryAfterS,
    concealed: false,
  };
}
