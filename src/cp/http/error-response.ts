/**
 * The one place an error becomes an HTTP answer (the binary protocol's is
 * src/shared/errors/to-protocol.ts). Exposed AuthNexusErrors keep their code, public message
 * and public details; a database that cannot be reached is 503 DB_UNAVAILABLE with
 * Retry-After; everything else becomes the fixed INTERNAL body and is logged with its stack.
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { normalizeError, publicError } from "../../shared/errors/index.js";
import type { Logger } from "../../shared/log/index.js";

export interface ErrorBody {
  error: string;
  message: string;
  details?: unknown;
}

export function errorToResponse(c: Context, thrown: unknown, log: Logger): Response {
  const error = normalizeError(thrown);
  const answer = publicError(error);
  if (answer.concealed || error.code === "DB_UNAVAILABLE") {
    const cause = error.cause ?? error;
    log[answer.concealed ? "error" : "warn"]("request failed", {
      request_id: c.get("requestId" as never),
      code: error.code,
      error: cause instanceof Error ? cause.message : String(cause),
      stack: answer.concealed && cause instanceof Error ? cause.stack : undefined,
      detail: error.detail,
    });
  }
  const body: ErrorBody = { error: answer.code, message: answer.message };
  if (answer.details !== undefined) body.details = answer.details;
  if (!answer.concealed) for (const [name, value] of Object.entries(error.headers ?? {})) c.header(name, value);
  if (answer.retryAfterS !== undefined && !error.headers?.["Retry-After"]) c.header("Retry-After", String(answer.retryAfterS));
  return c.json(body, answer.status as ContentfulStatusCode);
}
