/**
 * The protocol's value model: what cloud variables, cloud-function parameters and results, and
 * push data carry. A value is nil, a boolean, a finite number, a string, an array of values, or
 * a map from string keys to values — what Lua tables and JSON both express. Encoded as a tag
 * byte and its content (docs/protocol.md, "Values"); nesting and counts are bounded on both
 * encode and decode, so no value can make either side recurse or allocate without limit.
 */
import { malformed, type Reader, type Writer } from "./wire.js";

export type Value = null | boolean | number | string | Value[] | { [key: string]: Value };

export const VALUE_TAG = { nil: 0, false: 1, true: 2, number: 3, string: 4, array: 5, map: 6 } as const;

export interface ValueLimits {
  /** Deepest nesting of arrays and maps (a scalar has depth 0). */
  maxDepth: number;
  /** Most elements in one array or entries in one map. */
  maxItems: number;
  /** Longest string, in UTF-8 bytes. */
  maxStringBytes: number;
}

/** The defaults; a frame's size bounds the total in any case. */
export const DEFAULT_VALUE_LIMITS: ValueLimits = { maxDepth: 16, maxItems: 4096, maxStringBytes: 64 * 1024 };
/** Map keys are short strings. */
const MAX_KEY_BYTES = 256;

export function writeValue(w: Writer, value: Value, limits: ValueLimits = DEFAULT_VALUE_LIMITS, depth = 0): void {
  if (value === null) return void w.u8(VALUE_TAG.nil);
  switch (typeof value) {
    case "boolean":
      return void w.u8(value ? VALUE_TAG.true : VALUE_TAG.false);
    case "number":
      if (!Number.isFinite(value)) throw new RangeError("a value's number must be finite");
      return void w.u8(VALUE_TAG.number).f64(value);
    case "string": {
      const bytes = Buffer.from(value, "utf8");
      if (bytes.length > limits.maxStringBytes) throw new RangeError(`a string of ${bytes.length} bytes is over ${limits.maxStringBytes}`);
      return void w.u8(VALUE_TAG.string).u32(bytes.length).raw(bytes);
    }
    case "object":
      break;
    default:
      throw new RangeError(`a ${typeof value} is not a protocol value`);
  }
  if (depth >= limits.maxDepth) throw new RangeError(`values nest at most ${limits.maxDepth} deep`);
  if (!Array.isArray(value) && !isPlainObject(value)) {
    throw new RangeError(`a ${(value as object).constructor?.name ?? "object"} is not a protocol value (use an array or a plain object)`);
  }
  if (Array.isArray(value)) {
    if (value.length > limits.maxItems) throw new RangeError(`an array of ${value.length} items is over ${limits.maxItems}`);
    w.u8(VALUE_TAG.array).u32(value.length);
    for (const item of value) writeValue(w, item, limits, depth + 1);
    return;
  }
  const entries = Object.entries(value);
  if (entries.length > limits.maxItems) throw new RangeError(`a map of ${entries.length} entries is over ${limits.maxItems}`);
  w.u8(VALUE_TAG.map).u32(entries.length);
  for (const [key, item] of entries) {
    w.str(key, MAX_KEY_BYTES);
    writeValue(w, item, limits, depth + 1);
  }
}

export function readValue(r: Reader, limits: ValueLimits = DEFAULT_VALUE_LIMITS, depth = 0): Value {
  const tag = r.u8("value tag");
  switch (tag) {
    case VALUE_TAG.nil:
      return null;
    case VALUE_TAG.false:
      return false;
    case VALUE_TAG.true:
      return true;
    case VALUE_TAG.number: {
      const n = r.f64("number");
      if (!Number.isFinite(n)) throw malformed("a number is not finite");
      return n;
    }
    case VALUE_TAG.string:
      return r.utf8(r.lengthU32("string", limits.maxStringBytes), "string");
    case VALUE_TAG.array:
    case VALUE_TAG.map:
      break;
    default:
      throw malformed(`unknown value tag ${tag}`);
  }
  if (depth >= limits.maxDepth) throw malformed(`values nest more than ${limits.maxDepth} deep`);
  const what = tag === VALUE_TAG.array ? "array" : "map";
  const count = r.lengthU32(what, limits.maxItems);
  // Each item takes at least one byte: a count beyond what is left is refused before looping.
  if (count > r.remaining) throw malformed(`${what} of ${count} items in ${r.remaining} bytes`);
  if (tag === VALUE_TAG.array) {
    const items: Value[] = [];
    for (let i = 0; i < count; i++) items.push(readValue(r, limits, depth + 1));
    return items;
  }
  // No prototype: a key named __proto__ is an ordinary key, never the object's prototype.
  const map: { [key: string]: Value } = Object.create(null) as { [key: string]: Value };
  for (let i = 0; i < count; i++) {
    const key = r.str("map key", MAX_KEY_BYTES);
    if (Object.hasOwn(map, key)) throw malformed(`map key "${key.slice(0, 32)}" appears twice`);
    map[key] = readValue(r, limits, depth + 1);
  }
  return map;
}

function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}
