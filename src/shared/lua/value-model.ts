/**
 * The values that cross between JavaScript and a cloud function's Lua, in both directions
 * (`params` in, the return value out), and nothing else:
 *
 * | JavaScript                  | Lua                                                        |
 * |-----------------------------|------------------------------------------------------------|
 * | `null`                      | `nil`                                                      |
 * | boolean                     | boolean                                                    |
 * | finite number               | integer when whole and within ±(2^53 − 1), float otherwise |
 * | string (well-formed)        | string holding valid UTF-8                                 |
 * | array                       | sequence: keys exactly 1..n, n ≥ 1                         |
 * | plain object                | table whose keys are all strings                           |
 *
 * Rules at the edges, the same both ways:
 * - A map entry whose value is `null` is the same as no entry (Lua tables cannot hold nil).
 *   An array cannot hold `null`: a Lua sequence ends at its first nil.
 * - An empty table comes back as an empty map `{}`; an empty array sent in arrives as `{}` too.
 * - A Lua integer beyond ±(2^53 − 1), NaN and ±inf have no exact JavaScript number: refused.
 * - A table mixing 1..n keys and string keys, with gaps in 1..n, or with any other key (a
 *   float, a boolean, a table) is refused, as is a function, a userdata, a coroutine or a
 *   table that contains itself. Metatables are ignored: only a table's raw contents cross.
 * - Limits: containers nested at most MAX_VALUE_DEPTH deep, at most MAX_VALUE_NODES values in
 *   all (each container, item and map value counts one), each string (and map key) at most
 *   MAX_VALUE_STRING_BYTES UTF-8 bytes, and all strings and keys together at most
 *   MAX_VALUE_TOTAL_BYTES.
 *
 * Both directions travel as JSON text, written and read by code we control on each side (the
 * Lua half is VALUE_MODEL_LUA below), so no Lua table, function or userdata is ever handed to
 * JavaScript and a hostile return value is refused by a walk that cannot loop or run the
 * script's metamethods. Bad params are VALIDATION_FAILED; a bad return value is
 * FUNCTION_RESULT_INVALID, each naming the first offending path (`params.items[0]` counts
 * from 0 like the caller's arrays, `result.items[1]` from 1 like the script's tables).
 */
import { AuthNexusError, validationFailed } from "../errors/index.js";

export type LuaValue = null | boolean | number | string | LuaValue[] | { [key: string]: LuaValue };

/** Containers (tables, arrays, maps) nested inside each other, at most. */
export const MAX_VALUE_DEPTH = 16;
/** Values in one crossing, containers and scalars alike. */
export const MAX_VALUE_NODES = 10_000;
/** UTF-8 bytes of one string or map key. */
export const MAX_VALUE_STRING_BYTES = 64 * 1024;
/** UTF-8 bytes of all strings and map keys of one crossing together. */
export const MAX_VALUE_TOTAL_BYTES = 256 * 1024;

export interface ValueProblem {
  /** Where, from the root name: `params.items[3].name`. */
  path: string;
  problem: string;
}

interface Budget {
  nodes: number;
  bytes: number;
}

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LONE_SURROGATE = /\p{Surrogate}/u;

function childPath(path: string, key: string | number): string {
  if (typeof key === "number") return `${path}[${key}]`;
  return PLAIN_KEY.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function stringProblem(text: string, budget: Budget): string | null {
  if (LONE_SURROGATE.test(text)) return "is not well-formed Unicode (a lone surrogate)";
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > MAX_VALUE_STRING_BYTES) return `is longer than ${MAX_VALUE_STRING_BYTES} bytes`;
  budget.bytes += bytes;
  if (budget.bytes > MAX_VALUE_TOTAL_BYTES) return `takes the strings past ${MAX_VALUE_TOTAL_BYTES} bytes in all`;
  return null;
}

function walk(value: unknown, path: string, depth: number, budget: Budget): ValueProblem | null {
  budget.nodes++;
  if (budget.nodes > MAX_VALUE_NODES) return { path, problem: `takes the value past ${MAX_VALUE_NODES} items in all` };
  if (value === null || typeof value === "boolean") return null;
  if (typeof value === "number") return Number.isFinite(value) ? null : { path, problem: "is not a finite number" };
  if (typeof value === "string") {
    const problem = stringProblem(value, budget);
    return problem ? { path, problem } : null;
  }
  if (typeof value !== "object") return { path, problem: `is a ${typeof value}, which Lua values cannot hold` };
  if (depth >= MAX_VALUE_DEPTH) return { path, problem: `is nested more than ${MAX_VALUE_DEPTH} deep` };
  if (Array.isArray(value)) return walkArray(value, path, depth, budget);
  if (!isPlainObject(value)) return { path, problem: "is an object that is neither a plain map nor an array" };
  return walkMap(value, path, depth, budget);
}

function walkArray(items: unknown[], path: string, depth: number, budget: Budget): ValueProblem | null {
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    const itemPath = childPath(path, i);
    if (item === null || item === undefined) return { path: itemPath, problem: "is null: a Lua sequence cannot hold nil" };
    const problem = walk(item, itemPath, depth + 1, budget);
    if (problem) return problem;
  }
  return null;
}

function walkMap(map: Record<string, unknown>, path: string, depth: number, budget: Budget): ValueProblem | null {
  for (const key of Object.keys(map)) {
    const item = map[key];
    if (item === null || item === undefined) continue;
    const itemPath = childPath(path, key);
    const keyProblem = stringProblem(key, budget);
    if (keyProblem) return { path: itemPath, problem: `has a key that ${keyProblem}` };
    const problem = walk(item, itemPath, depth + 1, budget);
    if (problem) return problem;
  }
  return null;
}

/** The first way `value` falls outside the value model, or null when it fits. */
export function findValueProblem(value: unknown, root = "value"): ValueProblem | null {
  return walk(value, root, 0, { nodes: 0, bytes: 0 });
}

/** Map entries whose value is null or undefined are dropped on the way to Lua (they mean "absent"). */
function dropAbsentEntries(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  const entries = Object.entries(value as Record<string, unknown>);
  if (!entries.some(([, item]) => item === null || item === undefined)) return value;
  return Object.fromEntries(entries.filter(([, item]) => item !== null && item !== undefined));
}

/** `value` as the JSON text the Lua side decodes; VALIDATION_FAILED naming `root`'s offending path. */
export function encodeValueForLua(value: unknown, root = "params"): string {
  const problem = findValueProblem(value ?? null, root);
  if (problem) throw validationFailed([{ field: problem.path, problem: problem.problem }]);
  return JSON.stringify(value ?? null, dropAbsentEntries);
}

/**
 * A return value as the Lua side wrote it, checked again here so the model's guarantees do not
 * rest on the Lua half alone; FUNCTION_RESULT_INVALID when it does not fit.
 */
export function checkResultValue(value: unknown): LuaValue {
  const problem = findValueProblem(value, "result");
  if (problem) throw resultInvalid(problem);
  return value as LuaValue;
}

export function resultInvalid(problem: ValueProblem): AuthNexusError {
  return new AuthNexusError("FUNCTION_RESULT_INVALID", {
    message: `The cloud function's return value cannot be sent: ${problem.path} ${problem.problem}.`,
    publicDetail: problem,
  });
}

/**
 * The Lua half: a chunk run once in each sandbox, before any script, that returns
 * `{ encode, decode, json_string }`. It captures the library functions it uses as locals while
 * they are still the originals, walks tables with `next`/`rawget` only (no metamethod of the
 * script's runs), and gives up at the first problem with `nil, {path, problem}`.
 * `decode` reads only what `encodeValueForLua` writes (JSON.stringify output, no whitespace).
 */
export const VALUE_MODEL_LUA = String.raw`
local type, next, rawget, error, pcall, tonumber = type, next, rawget, error, pcall, tonumber
local math_type, huge = math.type, math.huge
local format, gsub, byte, find, sub, char = string.format, string.gsub, string.byte, string.find, string.sub, string.char
local concat = table.concat
local utf8_len, utf8_char = utf8.len, utf8.char

local MAX_DEPTH, MAX_NODES = ${MAX_VALUE_DEPTH}, ${MAX_VALUE_NODES}
local MAX_STRING_BYTES, MAX_TOTAL_BYTES = ${MAX_VALUE_STRING_BYTES}, ${MAX_VALUE_TOTAL_BYTES}
local MAX_SAFE_INTEGER = ${Number.MAX_SAFE_INTEGER}

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
for code = 0, 31 do
  local c = char(code)
  if not ESCAPES[c] then ESCAPES[c] = format("\\u%04x", code) end
end
ESCAPES["\127"] = "\\u007f"
local UNESCAPES = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

local function json_string(s)
  return '"' .. gsub(s, '[%c"\\]', ESCAPES) .. '"'
end

local PLAIN_KEY = "^[A-Za-z_][A-Za-z0-9_]*$"
local function path_text(path)
  local parts = { "result" }
  for i = 1, #path do
    local key = path[i]
    if type(key) == "number" then parts[#parts + 1] = "[" .. key .. "]"
    elseif find(key, PLAIN_KEY) then parts[#parts + 1] = "." .. key
    else parts[#parts + 1] = "[" .. json_string(key) .. "]" end
  end
  return concat(parts)
end

-- One walk over a return value, writing JSON into out. A problem is raised as a table the
-- walk's own pcall recognises; anything else raised inside (only a memory error can be) goes on.
local function encode(value)
  local out, n = {}, 0
  local nodes, bytes = 0, 0
  local path, depth_of_path = {}, 0
  local on_path = {}
  local PROBLEM = {}

  local function fail(problem)
    error({ [PROBLEM] = true, path = path_text(path), problem = problem }, 0)
  end
  local function count_node()
    nodes = nodes + 1
    if nodes > MAX_NODES then fail("takes the value past " .. MAX_NODES .. " items in all") end
  end
  local function check_string(s, what)
    if #s > MAX_STRING_BYTES then fail(what .. " longer than " .. MAX_STRING_BYTES .. " bytes") end
    if not utf8_len(s) then fail(what .. " not valid UTF-8") end
    bytes = bytes + #s
    if bytes > MAX_TOTAL_BYTES then fail("takes the strings past " .. MAX_TOTAL_BYTES .. " bytes in all") end
  end
  local function emit(piece)
    n = n + 1
    out[n] = piece
  end

  local emit_value

  -- Sorts a table into "array" (keys exactly 1..count) or "map" (string keys only).
  local function shape_of(t)
    local count, strings, max_index = 0, 0, 0
    for k in next, t do
      count = count + 1
      if nodes + count > MAX_NODES then fail("takes the value past " .. MAX_NODES .. " items in all") end
      if type(k) == "string" then
        strings = strings + 1
      elseif math_type(k) == "integer" and k >= 1 then
        if k > max_index then max_index = k end
      else
        fail("has a key that is neither a string nor an index 1..n")
      end
    end
    if count == 0 or strings == count then return "map", count end
    if strings > 0 then fail("mixes array items (keys 1..n) and string keys") end
    if max_index ~= count then fail("is an array with gaps (keys must be exactly 1..n)") end
    return "array", count
  end

  local function emit_table(t)
    if on_path[t] then fail("contains itself") end
    if depth_of_path >= MAX_DEPTH then fail("is nested more than " .. MAX_DEPTH .. " deep") end
    local shape, count = shape_of(t)
    on_path[t] = true
    depth_of_path = depth_of_path + 1
    if shape == "array" then
      emit("[")
      for i = 1, count do
        if i > 1 then emit(",") end
        path[depth_of_path] = i
        emit_value(rawget(t, i))
      end
      emit("]")
    else
      emit("{")
      local first = true
      for k, v in next, t do
        path[depth_of_path] = k
        check_string(k, "has a key")
        if not first then emit(",") end
        first = false
        emit(json_string(k))
        emit(":")
        emit_value(v)
      end
      emit("}")
    end
    path[depth_of_path] = nil
    depth_of_path = depth_of_path - 1
    on_path[t] = nil
  end

  function emit_value(v)
    count_node()
    local t = type(v)
    if t == "nil" then
      emit("null")
    elseif t == "boolean" then
      emit(v and "true" or "false")
    elseif t == "number" then
      if math_type(v) == "integer" then
        if v > MAX_SAFE_INTEGER or v < -MAX_SAFE_INTEGER then fail("is an integer beyond 2^53 - 1") end
        emit(format("%d", v))
      else
        if v ~= v or v == huge or v == -huge then fail("is not a finite number") end
        emit(format("%.17g", v))
      end
    elseif t == "string" then
      check_string(v, "is")
      emit(json_string(v))
    elseif t == "table" then
      emit_table(v)
    else
      fail("is a " .. t .. ", which cannot leave Lua")
    end
  end

  local ok, raised = pcall(emit_value, value)
  if ok then return concat(out) end
  if type(raised) == "table" and rawget(raised, PROBLEM) then return nil, raised end
  error(raised, 0)
end

local function decode(s)
  local pos = 1
  local read_value

  local function read_string()
    local parts, np, i = {}, 0, pos + 1
    while true do
      local j = find(s, '["\\]', i)
      if j > i then np = np + 1; parts[np] = sub(s, i, j - 1) end
      if byte(s, j) == 34 then
        pos = j + 1
        return concat(parts)
      end
      local e = sub(s, j + 1, j + 1)
      np = np + 1
      if e == "u" then
        parts[np] = utf8_char(tonumber(sub(s, j + 2, j + 5), 16))
        i = j + 6
      else
        parts[np] = UNESCAPES[e]
        i = j + 2
      end
    end
  end

  function read_value()
    local c = byte(s, pos)
    if c == 34 then return read_string() end
    if c == 123 then
      local t = {}
      pos = pos + 1
      if byte(s, pos) == 125 then pos = pos + 1; return t end
      while true do
        local k = read_string()
        pos = pos + 1
        t[k] = read_value()
        local d = byte(s, pos)
        pos = pos + 1
        if d == 125 then return t end
      end
    end
    if c == 91 then
      local t, count = {}, 0
      pos = pos + 1
      if byte(s, pos) == 93 then pos = pos + 1; return t end
      while true do
        count = count + 1
        t[count] = read_value()
        local d = byte(s, pos)
        pos = pos + 1
        if d == 93 then return t end
      end
    end
    if c == 116 then pos = pos + 4; return true end
    if c == 102 then pos = pos + 5; return false end
    if c == 110 then pos = pos + 4; return nil end
    local stop = find(s, "[,%]}]", pos) or #s + 1
    local number = tonumber(sub(s, pos, stop - 1))
    pos = stop
    -- Whole numbers past 2^53 - 1 are doubles in JavaScript: they stay floats here, so that
    -- returning them works (integers that large cannot leave).
    if math_type(number) == "integer" and (number > MAX_SAFE_INTEGER or number < -MAX_SAFE_INTEGER) then
      return number + 0.0
    end
    return number
  end

  return read_value()
end

return { encode = encode, decode = decode, json_string = json_string }
`;
