/**
 * JSON.parse with a nesting cap checked before any value is built. V8's JSON.parse itself
 * copes with deep input, but everything after it does not: a body nested 5,000 deep made the
 * size check's JSON.stringify overflow the stack (a 500), and zod and the loggers recurse too.
 * The cap is counted in one pass over the text (outside strings), so a deep body costs no more
 * than reading it and nothing is allocated for it.
 */
import { AuthNexusError } from "../errors/index.js";

const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** The deepest nesting of objects and arrays in `text`, stopping (returning > limit) as soon as it exceeds `limit`. */
export function jsonNestingDepth(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) inString = true;
    else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
      if (depth > deepest) {
        deepest = depth;
        if (deepest > limit) return deepest;
      }
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) depth--;
  }
  return deepest;
}

/** Parses JSON text; JSON_TOO_DEEP past `maxDepth` levels, MALFORMED_JSON when it is not JSON. */
export function parseJson(text: string, maxDepth: number): unknown {
  if (jsonNestingDepth(text, maxDepth) > maxDepth) {
    throw new AuthNexusError("JSON_TOO_DEEP", { message: `JSON is nested more than ${maxDepth} levels deep.` });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new AuthNexusError("MALFORMED_JSON");
  }
}
