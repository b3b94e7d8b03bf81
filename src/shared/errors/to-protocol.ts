/**
 * The binary protocol's error mapping, beside the HTTP one (src/cp/http/error-response.ts):
 * what an SDK connection is told when a request fails, and how an SDK turns a status it
 * received back into a typed AuthNexusError.
 */
import { AuthNexusError } from "./authnexus-error.js";
import { errorCodeForWire } from "./catalogue.js";
import { normalizeError, publicError } from "./normalize.js";

export interface ProtocolError {
  /** The catalogue's wire status. */
  wire: number;
  message: string;
  retryable: boolean;
  /** True when the real reason was concealed (INTERNAL): the caller logs `error` with its stack. */
  concealed: boolean;
  /** The normalised error, for the caller's log line. */
  error: AuthNexusError;
}

export function errorToProtocol(thrown: unknown): ProtocolError {
  const error = normalizeError(thrown);
  const answer = publicError(error);
  return { wire: answer.wire, message: answer.message, retryable: answer.retryable, concealed: answer.concealed, error };
}

/** An error received on the wire, as the SDK throws it; a status unknown to this build becomes INTERNAL with the server's text. */
export function errorFromProtocol(wire: number, message: string): AuthNexusError {
  const code = errorCodeForWire(wire);
  return new AuthNexusError(code ?? "INTERNAL", { message, detail: { wire } });
}
