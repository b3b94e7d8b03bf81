import { DEFAULT_OCSP_VALIDITY_MS } from "../../shared/config/defaults.js";
import { isDatabaseUnavailable } from "../../shared/db/errors.js";
import type { Clock } from "../../shared/time/index.js";
import { buildOcspErrorResponse, buildOcspResponse, type ResolvedIssuer, validateValidityMs } from "./build-response.js";
import { type CertIdQuery, OcspRequestError, parseOcspRequest } from "./parse-request.js";

/** Like OcspResolver, but may look the certificate up asynchronously (inventory, database). */
export type OcspAsyncResolver = (query: CertIdQuery) => ResolvedIssuer | null | Promise<ResolvedIssuer | null>;

export interface OcspAnswererOptions {
  resolve: OcspAsyncResolver;
  clock: Clock;
  /** nextUpdate - thisUpdate in ms; default 30 min, at most 1800 s (checked here, at creation). */
  validityMs?: number;
  /**
   * Told about every request that was not answered successfully: parse errors (answered
   * malformedRequest) and unexpected errors from the resolver or the builder (internalError).
   * Must not throw; anything it throws is ignored.
   */
  onError?: (error: unknown, answeredWith: OcspFailureAnswer) => void;
}

export type OcspFailureAnswer = "malformedRequest" | "internalError" | "tryLater";

/** Turns a DER OCSPRequest into a DER OCSPResponse; never rejects. */
export type OcspAnswer = (der: Uint8Array) => Promise<Buffer>;

/**
 * Wires parse -> resolve -> build. Parse errors become malformedRequest (1); a database that
 * cannot be reached becomes tryLater (3); other errors thrown by the resolver or the builder
 * become internalError (2); unknown issuers and mixed issuers
 * become unauthorized (6) in buildOcspResponse. The resolver is called once per SHA-1/SHA-256
 * CertID, concurrently, before anything is signed.
 */
export function createOcspAnswerer(options: OcspAnswererOptions): OcspAnswer {
  const { resolve, clock, onError } = options;
  const validityMs = validateValidityMs(options.validityMs ?? DEFAULT_OCSP_VALIDITY_MS);

  const report = (error: unknown, answeredWith: OcspFailureAnswer): void => {
    try {
      onError?.(error, answeredWith);
    } catch {
      // A failing logger must not change the answer.
    }
  };

  return async (der: Uint8Array): Promise<Buffer> => {
    let request: ReturnType<typeof parseOcspRequest>;
    try {
      request = parseOcspRequest(der);
    } catch (error) {
      if (error instanceof OcspRequestError) {
        report(error, "malformedRequest");
        return buildOcspErrorResponse("malformedRequest");
      }
      report(error, "internalError");
      return buildOcspErrorResponse("internalError");
    }
    try {
      const supported = request.certIds.filter((q) => q.hashAlgorithm === "sha1" || q.hashAlgorithm === "sha256");
      const resolved = await Promise.all(supported.map((q) => resolve(q)));
      const byQuery = new Map<CertIdQuery, ResolvedIssuer | null>();
      for (const [i, q] of supported.entries()) byQuery.set(q, resolved[i] ?? null);
      return buildOcspResponse({
        request,
        resolve: (q) => byQuery.get(q) ?? null,
        clock,
        validityMs,
      });
    } catch (error) {
      // A database that cannot be reached is a passing state: the node keeps its cached
      // response and asks again (RFC 6960 tryLater), instead of logging a responder fault.
      const answer = isDatabaseUnavailable(error) ? "tryLater" : "internalError";
      report(error, answer);
      return buildOcspErrorResponse(answer);
    }
  };
}
