/**
 * The one place an error becomes an HTTP answer. Exposed AuthNexusErrors keep their code and
 * public message; everything else becomes the fixed INTERNAL body and is logged with its stack.
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { AuthNexusError } from "../../shared/errors/index.js";
import type { Logger } from "../../shared/log/index.js";

export interface ErrorBody {
  error: string;
  message: string;
  details?: unknown;
}

export function errorToResponse(c: Context, error: unknown, log: Logger): Response {
  const known = error instanceof AuthNexusError ? error : null;
  if (!known || !known.expose) {
    log.error("request failed", {
      request_id: c.get("requestId" as never),
      code: known?.code ?? "INTERNAL",
      error: error instanceof Error ? error.message : String(error),
      stack: error instanceof Error ? error.stack : undefined,
      detail: known?.detail,
    });
    return c.json({ error: "INTERNAL", message: "Internal error." } satisfies ErrorBody, 500);
  }
  const body: ErrorBody = { error: known.code, message: known.message };
  if (known.detail?.public !== undefined) body.details = known.detail.public;
  for (const [name, value] of Object.entries(known.headers ?? {})) c.header(name, value);
  return c.json(body, known.status as ContentfulStatusCode);
}
