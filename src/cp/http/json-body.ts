/**
 * Reads and validates a JSON request body. Every failure is a 4xx with a message that names
 * the problem: wrong content type (415), not JSON (400), unknown or mistyped fields (400).
 * Size is capped before this runs by the body-limit middleware (413).
 */
import type { IncomingMessage } from "node:http";
import type { Context } from "hono";
import type { z } from "zod";
import { AuthNexusError } from "../../shared/errors/index.js";

export async function readJson<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const text = await bodyText(c);
  let value: unknown = {};
  if (text.trim() !== "") {
    const type = c.req.header("content-type") ?? "";
    if (!/^application\/json\s*(;|$)/i.test(type)) throw new AuthNexusError("UNSUPPORTED_MEDIA_TYPE");
    try {
      value = JSON.parse(text);
    } catch {
      throw new AuthNexusError("MALFORMED_JSON");
    }
  }
  return validate(schema, value);
}

export function validate<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => ({
    field: issue.path.length > 0 ? issue.path.join(".") : null,
    problem: describeIssue(issue),
  }));
  const summary = problems.map((p) => (p.field ? `${p.field}: ${p.problem}` : p.problem)).join("; ");
  throw new AuthNexusError("VALIDATION_FAILED", { message: `Request failed validation: ${summary}`, publicDetail: problems });
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") return `unknown field(s): ${issue.keys.join(", ")}`;
  if (issue.code === "invalid_type") return `expected ${issue.expected}`;
  return issue.message;
}

/**
 * The body as text. With a declared Content-Length (already checked against the limit by the
 * body-limit middleware) it is read straight from the Node request: building the Web Request
 * that `c.req.text()` needs was a quarter of a node checkin's cost. Without one (chunked), the
 * Web path keeps the body-limit middleware's streaming check in force.
 */
async function bodyText(c: Context): Promise<string> {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  const declared = c.req.header("content-length");
  if (!incoming || declared === undefined || !/^\d+$/.test(declared) || incoming.readableEnded || incoming.readableDidRead)
    return c.req.text();
  const chunks: Buffer[] = [];
  for await (const chunk of incoming) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
