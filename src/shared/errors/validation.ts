/**
 * VALIDATION_FAILED errors built one way everywhere: a summary message naming every problem,
 * and the problems as public details (`[{field, problem}]`) a client can show next to its fields.
 */
import type { z } from "zod";
import { AuthNexusError } from "./authnexus-error.js";

export interface FieldProblem {
  /** Dotted path of the offending field, or null for the request as a whole. */
  field: string | null;
  problem: string;
  [extra: string]: unknown;
}

export function validationFailed(problems: FieldProblem[]): AuthNexusError {
  const summary = problems.map((p) => (p.field ? `${p.field}: ${p.problem}` : p.problem)).join("; ");
  return new AuthNexusError("VALIDATION_FAILED", { message: `Request failed validation: ${summary}`, publicDetail: problems });
}

export function fieldInvalid(field: string, problem: string, extra: Record<string, unknown> = {}): AuthNexusError {
  return validationFailed([{ field, problem, ...extra }]);
}

/** The problems zod found, each named by its path under `prefix` (e.g. "payload"). */
export function zodProblems(error: z.ZodError, prefix: string[] = []): FieldProblem[] {
  return error.issues.map((issue) => {
    const path = [...prefix, ...issue.path.map(String)];
    return { field: path.length > 0 ? path.join(".") : null, problem: describeIssue(issue) };
  });
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") return `unknown field(s): ${issue.keys.join(", ")}`;
  if (issue.code === "invalid_type") return `expected ${issue.expected}`;
  return issue.message;
}

/** The value parsed by `schema`, or VALIDATION_FAILED naming every problem. */
export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown, prefix: string[] = []): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw validationFailed(zodProblems(parsed.error, prefix));
}
