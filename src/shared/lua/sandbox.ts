/**
 * The Lua 5.4 sandbox cloud functions run in (wasmoon: Lua compiled to WebAssembly).
 *
 * What a script can reach is decided here, once per engine, before any script runs:
 * - only the base, table, string, math, utf8 and coroutine libraries are opened; io, os,
 *   debug, package/require are never opened, and print, warn, dofile, loadfile are not given;
 * - `string.dump` is removed and the string metatable is locked (`getmetatable("")` is false),
 *   so nothing can change the methods every string shares or dump bytecode;
 * - `load` compiles source text only (mode "t"), into the calling script's environment unless
 *   it passes one; `collectgarbage` answers "count" and nothing else; `setmetatable` refuses
 *   a `__gc` metamethod (a finalizer could run during another caller's call, unchecked);
 * - every call runs in a fresh environment table with its own copies of the library tables,
 *   so whatever a script does to `_G`, `string` or `math` is gone when it returns and cannot
 *   leak to the next caller; `math.random` is reseeded from the OS for each call.
 *
 * The Lua side of a call (see `PRELUDE_LUA`) offers the script these globals:
 *   params                      the call's parameters (value model, see ./value-model.ts)
 *   user_id, app_id, username   strings naming the caller
 *   device_id                   string, or nil when the session has none
 *   server_time                 integer, Unix time in milliseconds
 *   app_vars.get(name)          an application variable (string, number or boolean), or nil
 *   app_vars.all()              a copy of every application variable, as a table
 *   user_vars.get(key)          one of the caller's variables (string), or nil
 *   user_vars.set(key, value)   sets one (value a string) or deletes it (value nil)
 *   user_vars.all()             a copy of the caller's variables, as a table
 * The script's first return value is the call's result. `user_vars.set` changes a copy; the
 * changes come back as `userVariableWrites` (only keys whose value differs at the end) for the
 * caller to store, and are dropped when the call fails.
 *
 * Limits: a memory cap per call (the engine's allocator refuses past it: a script can catch
 * that, but not get around it) and a time limit checked every few thousand Lua instructions.
 * Once the limit has passed every instruction fails, and the error skips the script's own
 * `xpcall` handlers (Lua runs them with hooks off), so catching it does not help. The time
 * check cannot stop a long C call (a pathological pattern in `string.find`): the hard limit is
 * the worker the sandbox runs in, terminated by the pool (src/node/functions/pool.ts).
 */
import { getRandomValues } from "node:crypto";
import { type LuaEngine, LuaFactory, type LuaGlobal } from "wasmoon";
import { AuthNexusError, type FieldProblem, fieldInvalid, validationFailed } from "../errors/index.js";
import { COMPILE_MEMORY_LIMIT_BYTES, LUA_CHUNK_NAME, parseLuaError } from "./syntax.js";
import {
  checkResultValue,
  encodeValueForLua,
  findValueProblem,
  type LuaValue,
  MAX_VALUE_STRING_BYTES,
  MAX_VALUE_TOTAL_BYTES,
  resultInvalid,
  VALUE_MODEL_LUA,
} from "./value-model.js";

/** Memory one call may allocate beyond what the engine held when it started (bytes). */
export const DEFAULT_FUNCTION_MEMORY_LIMIT_BYTES = 8 * 1024 * 1024;
/** Compiled scripts kept per sandbox, least recently used dropped first. */
export const DEFAULT_COMPILED_CACHE_SIZE = 256;
/** Distinct user variables one call may set. */
export const MAX_USER_VARIABLE_WRITES = 256;
/** Lua instructions between two looks at the clock: ~50 µs of Lua, under 1% of its time. */
const INSTRUCTIONS_PER_TIME_CHECK = 10_000;
/** Longest error message a script's failure reports (bytes); the rest is cut. */
const MAX_ERROR_MESSAGE_BYTES = 2048;

const LUA_OK = 0;
const LUA_ERRMEM = 4;
const LUA_TSTRING = 4;
const LUA_MASKCOUNT = 8;
const LUA_REGISTRYINDEX = -1_001_000;
const MEMORY_ERROR_MESSAGE = "not enough memory";
const TIME_LIMIT_MESSAGE = "the time limit has passed";

export interface LuaCallContext {
  user_id: string;
  app_id: string;
  username: string;
  device_id: string | null;
  /** Unix time in milliseconds. */
  server_time: number;
}

export type AppVariables = Record<string, string | number | boolean>;
export type UserVariables = Record<string, string>;

export interface LuaCallInput {
  sha256: string;
  script: string;
  timeoutMs: number;
  params: unknown;
  context: LuaCallContext;
  appVariables: AppVariables;
  userVariables: UserVariables;
  memoryLimitBytes?: number;
}

/** A call checked and turned into the text the Lua side reads (what a pool posts to a worker). */
export interface EncodedLuaCall {
  sha256: string;
  script: string;
  timeoutMs: number;
  memoryLimitBytes: number;
  paramsJson: string;
  contextJson: string;
  appVariablesJson: string;
  userVariablesJson: string;
}

export interface UserVariableWrite {
  key: string;
  /** The new value, or null when the script deleted the variable. */
  value: string | null;
}

export interface LuaCallResult {
  value: LuaValue;
  userVariableWrites: UserVariableWrite[];
}

export interface LuaSandboxOptions {
  compiledCacheSize?: number;
}

function scalarProblems(values: Record<string, unknown>, root: string, allowed: ReadonlyArray<string>): FieldProblem[] {
  return Object.entries(values)
    .filter(([, value]) => !allowed.includes(typeof value))
    .map(([key]) => ({ field: `${root}.${key}`, problem: `must be a ${allowed.join(" or ")}` }));
}

function encodeRecord(values: Record<string, unknown>, root: string, allowed: ReadonlyArray<string>): string {
  const problems = scalarProblems(values, root, allowed);
  if (problems.length > 0) throw validationFailed(problems);
  return encodeValueForLua(values, root);
}

function contextProblem(context: LuaCallContext): FieldProblem | null {
  const { user_id, app_id, username, device_id, server_time } = context;
  for (const [name, text] of Object.entries({ user_id, app_id, username })) {
    if (typeof text !== "string") return { field: `context.${name}`, problem: "must be a string" };
  }
  if (device_id !== null && typeof device_id !== "string") return { field: "context.device_id", problem: "must be a string or null" };
  if (!Number.isSafeInteger(server_time)) return { field: "context.server_time", problem: "must be an integer (ms)" };
  const problem = findValueProblem(context, "context");
  return problem ? { field: problem.path, problem: problem.problem } : null;
}

function encodeContext(context: LuaCallContext): string {
  const { user_id, app_id, username, device_id, server_time } = context;
  const clean = { user_id, app_id, username, device_id, server_time };
  const problem = contextProblem(clean);
  if (problem) throw validationFailed([problem]);
  return JSON.stringify(clean);
}

/** Checks a call and encodes it; VALIDATION_FAILED names the first bad field. */
export function encodeLuaCall(input: LuaCallInput): EncodedLuaCall {
  if (!Number.isSafeInteger(input.timeoutMs) || input.timeoutMs <= 0) throw fieldInvalid("timeoutMs", "must be a positive integer");
  return {
    sha256: input.sha256,
    script: input.script,
    timeoutMs: input.timeoutMs,
    memoryLimitBytes: input.memoryLimitBytes ?? DEFAULT_FUNCTION_MEMORY_LIMIT_BYTES,
    paramsJson: encodeValueForLua(input.params, "params"),
    contextJson: encodeContext(input.context),
    appVariablesJson: encodeRecord(input.appVariables, "appVariables", ["string", "number", "boolean"]),
    userVariablesJson: encodeRecord(input.userVariables, "userVariables", ["string"]),
  };
}

/**
 * Runs once per engine, after the value model and before any script. Receives the debug
 * library's `setupvalue` (kept in this chunk's locals and nowhere else: it is how each call's
 * environment is given to a cached chunk) and the value model; returns the four entry points
 * the sandbox calls. Everything a script must not reach is removed or shadowed here.
 */
const PRELUDE_LUA = String.raw`
local setupvalue, values = ...
local G = _G
local type, next, error, xpcall, select, tostring, load, collectgarbage, rawget, setmetatable =
      type, next, error, xpcall, select, tostring, load, collectgarbage, rawget, setmetatable
local string, table, math, utf8, coroutine = string, table, math, utf8, coroutine
local string_sub, string_gsub, utf8_len = string.sub, string.gsub, utf8.len
local table_sort, table_concat = table.sort, table.concat
local math_randomseed = math.randomseed
local json_string, decode, encode = values.json_string, values.decode, values.encode

local CHUNK_NAME = "=${LUA_CHUNK_NAME}"
local MAX_MESSAGE_BYTES = ${MAX_ERROR_MESSAGE_BYTES}
local MAX_STRING_BYTES, MAX_TOTAL_BYTES = ${MAX_VALUE_STRING_BYTES}, ${MAX_VALUE_TOTAL_BYTES}
local MAX_USER_VARIABLE_WRITES = ${MAX_USER_VARIABLE_WRITES}
local TIME_LIMIT_MESSAGE = "${TIME_LIMIT_MESSAGE}"

-- Every string's methods come from this one table: a script must neither dump bytecode through
-- it nor reach it. With __metatable set, getmetatable("") answers false and setmetatable on
-- strings was never possible, so the table cannot be changed from a script.
string.dump = nil
getmetatable("").__metatable = false

local BASE_NAMES = { "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
  "rawlen", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "xpcall", "_VERSION" }
local BASE = {}
for i = 1, #BASE_NAMES do BASE[BASE_NAMES[i]] = G[BASE_NAMES[i]] end
local LIBRARIES = { string = string, table = table, math = math, utf8 = utf8, coroutine = coroutine }

-- The engine's own globals table is emptied: no chunk is ever given it, and if one were, it
-- would find nothing there.
for name in next, G do G[name] = nil end

local function copy(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

-- Text that can leave as JSON: at most MAX_MESSAGE_BYTES, no cut character, valid UTF-8.
local function clean_text(text)
  if #text > MAX_MESSAGE_BYTES then
    text = string_gsub(string_sub(text, 1, MAX_MESSAGE_BYTES), "[\192-\255][\128-\191]*$", "")
  end
  if not utf8_len(text) then text = string_gsub(text, "[\128-\255]", "?") end
  return text
end

-- A script's error value as text; its metamethods are not run (an error object may be hostile).
local function error_text(e)
  local kind = type(e)
  if kind == "string" then return e end
  if kind == "number" then return tostring(e) end
  return "(error object is a " .. kind .. " value)"
end

local function failure(kind, message, path)
  local at = path and ',"path":' .. json_string(clean_text(path)) or ""
  return '{"error":"' .. kind .. '","message":' .. json_string(clean_text(message)) .. at .. '}'
end

local function app_variables(json)
  local vars
  local function all_vars()
    if not vars then vars = decode(json) end
    return vars
  end
  return {
    get = function(name)
      if type(name) ~= "string" then error("app_vars.get: the name must be a string", 2) end
      return all_vars()[name]
    end,
    all = function() return copy(all_vars()) end,
  }
end

local function user_variables(json)
  local store, initial
  local touched, touched_count = {}, 0
  local function the_store()
    if not store then
      initial = decode(json)
      store = copy(initial)
    end
    return store
  end
  local function check_text(value, what)
    if #value > MAX_STRING_BYTES then error("user_vars.set: the " .. what .. " is longer than " .. MAX_STRING_BYTES .. " bytes", 3) end
    if not utf8_len(value) then error("user_vars.set: the " .. what .. " is not valid UTF-8", 3) end
  end
  local api = {
    get = function(key)
      if type(key) ~= "string" then error("user_vars.get: the key must be a string", 2) end
      return the_store()[key]
    end,
    set = function(key, value)
      if type(key) ~= "string" then error("user_vars.set: the key must be a string", 2) end
      if value ~= nil and type(value) ~= "string" then error("user_vars.set: the value must be a string, or nil to delete", 2) end
      check_text(key, "key")
      if value then check_text(value, "value") end
      if not touched[key] then
        if touched_count >= MAX_USER_VARIABLE_WRITES then
          error("user_vars.set: at most " .. MAX_USER_VARIABLE_WRITES .. " variables may be set in one call", 2)
        end
        touched[key], touched_count = true, touched_count + 1
      end
      the_store()[key] = value
    end,
    all = function() return copy(the_store()) end,
  }
  -- The changes as [[key, value-or-null], ...] sorted by key, or nil and a problem when too large.
  local function writes_json()
    if not store then return "[]" end
    local keys = {}
    for key in next, touched do
      if store[key] ~= initial[key] then keys[#keys + 1] = key end
    end
    table_sort(keys)
    local parts, bytes = {}, 0
    for i = 1, #keys do
      local value = store[keys[i]]
      bytes = bytes + #keys[i] + (value and #value or 0)
      parts[i] = "[" .. json_string(keys[i]) .. "," .. (value and json_string(value) or "null") .. "]"
    end
    if bytes > MAX_TOTAL_BYTES then return nil, "the user variables set take more than " .. MAX_TOTAL_BYTES .. " bytes" end
    return "[" .. table_concat(parts, ",") .. "]"
  end
  return api, writes_json
end

-- An error raised by the time check runs message handlers with hooks off (Lua is still inside
-- the hook then), so a handler that loops could not be stopped: the script's own handler is
-- skipped for that one error.
local function guarded_xpcall(f, handler, ...)
  if type(handler) ~= "function" then error("bad argument #2 to 'xpcall' (function expected)", 2) end
  return xpcall(f, function(e)
    if e == TIME_LIMIT_MESSAGE then return e end
    return handler(e)
  end, ...)
end

-- Finalizers run whenever the collector gets to them, with hooks off: possibly during another
-- caller's call, and beyond the time check. Metatables with __gc are refused.
local function guarded_setmetatable(t, metatable)
  if type(metatable) == "table" and rawget(metatable, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not available", 2)
  end
  return setmetatable(t, metatable)
end

local function sandbox_env(params_json, context_json, app_json, user_json)
  local env = copy(BASE)
  for name, library in next, LIBRARIES do env[name] = copy(library) end
  env._G = env
  env.xpcall = guarded_xpcall
  env.setmetatable = guarded_setmetatable
  env.load = function(chunk, chunkname, mode, ...)
    if type(chunk) ~= "string" then error("load: only source text can be loaded", 2) end
    if mode ~= nil and mode ~= "t" then error('load: only text chunks can be loaded (mode "t")', 2) end
    if select("#", ...) > 0 then return load(chunk, chunkname, "t", (...)) end
    return load(chunk, chunkname, "t", env)
  end
  env.collectgarbage = function(option)
    if option == "count" then return collectgarbage("count") end
    error('collectgarbage: only "count" is available', 2)
  end
  local context = decode(context_json)
  env.params = decode(params_json)
  env.user_id, env.app_id, env.username = context.user_id, context.app_id, context.username
  env.device_id, env.server_time = context.device_id, context.server_time
  env.app_vars = app_variables(app_json)
  local user_vars, writes_json = user_variables(user_json)
  env.user_vars = user_vars
  return env, writes_json
end

local compiled = {}

local function compile(sha, script)
  local chunk, problem = load(script, CHUNK_NAME, "t", nil)
  if not chunk then return problem end
  compiled[sha] = chunk
  return nil
end

local function forget(sha)
  compiled[sha] = nil
end

local function run(sha, params_json, context_json, app_json, user_json, seed_high, seed_low)
  local chunk = compiled[sha]
  math_randomseed(seed_high, seed_low)
  local env, writes_json = sandbox_env(params_json, context_json, app_json, user_json)
  setupvalue(chunk, 1, env)
  local raised = false
  local ok, result = xpcall(chunk, function(e)
    raised = true
    return error_text(e)
  end)
  setupvalue(chunk, 1, nil)
  if not ok then
    -- The message handler is not called for memory errors: that is how they are told apart.
    if not raised and result == "${MEMORY_ERROR_MESSAGE}" then return failure("memory", result) end
    return failure("runtime", error_text(result))
  end
  local value_json, problem = encode(result)
  if not value_json then return failure("result", problem.problem, problem.path) end
  local writes, writes_problem = writes_json()
  if not writes then return failure("result", writes_problem, "user_vars") end
  return '{"value":' .. value_json .. ',"writes":' .. writes .. '}'
end

local function collect()
  collectgarbage("collect")
end

return { compile = compile, forget = forget, run = run, collect = collect }
`;

/** The wasm exports used directly, where wasmoon's wrappers would copy or truncate strings. */
interface RawLuaExports {
  _lua_pushlstring(L: number, s: number, len: number): number;
  _lua_tolstring(L: number, index: number, lengthOut: number): number;
  HEAPU8: Uint8Array;
}

type EntryPoint = "compile" | "forget" | "run" | "collect";
type RunOutcome =
  | { value: unknown; writes: Array<[string, string | null]> }
  | { error: "runtime" | "memory" | "result"; message: string; path?: string };

const UTF8 = new TextDecoder("utf-8");

export class LuaSandbox {
  private readonly global: LuaGlobal;
  private readonly raw: RawLuaExports;
  private readonly entryPoints = new Map<EntryPoint, number>();
  /** sha256 of every compiled script, least recently used first. */
  private readonly compiled = new Map<string, true>();
  private readonly compiledCacheSize: number;
  private readonly lengthOut: number;
  private readonly hookPointer: number;
  private deadline = Number.POSITIVE_INFINITY;
  private timedOut = false;
  private broken = false;

  /** A sandbox on its own LuaFactory (its own wasm instance): one per worker thread. */
  static async create(options: LuaSandboxOptions = {}): Promise<LuaSandbox> {
    const engine = await new LuaFactory().createEngine({
      openStandardLibs: false,
      injectObjects: false,
      enableProxy: false,
      traceAllocations: true,
    });
    return new LuaSandbox(engine, options);
  }

  private constructor(engine: LuaEngine, options: LuaSandboxOptions) {
    this.global = engine.global;
    this.raw = this.global.lua.module as unknown as RawLuaExports;
    this.compiledCacheSize = options.compiledCacheSize ?? DEFAULT_COMPILED_CACHE_SIZE;
    this.lengthOut = this.global.lua.module._malloc(4);
    this.hookPointer = this.global.lua.module.addFunction((state: number) => this.onInstructions(state), "vii");
    this.openLibraries();
    this.runPrelude();
  }

  private openLibraries(): void {
    const { lua, address } = this.global;
    lua.luaopen_base(address);
    lua.lua_settop(address, 0);
    const libraries: Array<[string, (L: number) => number]> = [
      ["table", lua.luaopen_table],
      ["string", lua.luaopen_string],
      ["math", lua.luaopen_math],
      ["utf8", lua.luaopen_utf8],
      ["coroutine", lua.luaopen_coroutine],
    ];
    for (const [name, open] of libraries) {
      open(address);
      lua.lua_setglobal(address, name);
    }
  }

  /** Runs the value model and the prelude, keeping the prelude's entry points in the registry. */
  private runPrelude(): void {
    const { lua, address } = this.global;
    this.loadTrusted(PRELUDE_LUA, "prelude");
    lua.luaopen_debug(address);
    lua.lua_getfield(address, -1, "setupvalue");
    lua.lua_remove(address, -2);
    this.loadTrusted(VALUE_MODEL_LUA, "values");
    this.expectOk(lua.lua_pcallk(address, 0, 1, 0, 0, null), "values");
    this.expectOk(lua.lua_pcallk(address, 2, 1, 0, 0, null), "prelude");
    for (const name of ["compile", "forget", "run", "collect"] as const) {
      lua.lua_getfield(address, -1, name);
      this.entryPoints.set(name, lua.luaL_ref(address, LUA_REGISTRYINDEX));
    }
    lua.lua_settop(address, 0);
  }

  private loadTrusted(source: string, name: string): void {
    const { lua, address } = this.global;
    const module = lua.module;
    const length = module.lengthBytesUTF8(source);
    const buffer = module._malloc(length + 1);
    try {
      module.stringToUTF8(source, buffer, length + 1);
      this.expectOk(lua.luaL_loadbufferx(address, buffer, length, `=${name}`, "t"), name);
    } finally {
      module._free(buffer);
    }
  }

  private expectOk(status: number, what: string): void {
    if (status !== LUA_OK) throw new Error(`the sandbox's ${what} chunk failed: ${this.readString(-1)}`);
  }

  /** Pushes `text` with its exact bytes (wasmoon's own push stops at a NUL and copies the string back). */
  private pushString(text: string): void {
    const module = this.global.lua.module;
    const length = module.lengthBytesUTF8(text);
    const buffer = module._malloc(length + 1);
    try {
      module.stringToUTF8(text, buffer, length + 1);
      this.raw._lua_pushlstring(this.global.address, buffer, length);
    } finally {
      module._free(buffer);
    }
  }

  /** The string at `index`, all of its bytes (invalid UTF-8 becomes U+FFFD). */
  private readString(index: number): string {
    const module = this.global.lua.module;
    const pointer = this.raw._lua_tolstring(this.global.address, index, this.lengthOut);
    if (pointer === 0) return "";
    const length = module.getValue(this.lengthOut, "i32");
    return UTF8.decode(this.raw.HEAPU8.subarray(pointer, pointer + length));
  }

  private onInstructions(state: number): void {
    if (performance.now() < this.deadline) return;
    this.timedOut = true;
    const { lua } = this.global;
    // From now on every instruction fails, so a script that catches the error cannot go on.
    lua.lua_sethook(state, this.hookPointer, LUA_MASKCOUNT, 1);
    lua.lua_pushstring(state, TIME_LIMIT_MESSAGE);
    lua.lua_error(state);
  }

  /**
   * Calls an entry point with string and integer arguments. The arguments are pushed with no
   * memory cap (a refused allocation outside a protected call would abort the engine); the cap,
   * `memoryLimitBytes` beyond what is held then, applies from the call on.
   */
  private invoke(name: EntryPoint, args: ReadonlyArray<string | number>, memoryLimitBytes: number | undefined): number {
    const { lua, address } = this.global;
    lua.lua_settop(address, 0);
    this.global.setMemoryMax(undefined);
    lua.lua_rawgeti(address, LUA_REGISTRYINDEX, BigInt(this.entryPoints.get(name) ?? 0));
    for (const arg of args) {
      if (typeof arg === "string") this.pushString(arg);
      else lua.lua_pushinteger(address, BigInt(arg));
    }
    if (memoryLimitBytes !== undefined) this.global.setMemoryMax(this.global.getMemoryUsed() + memoryLimitBytes);
    try {
      return lua.lua_pcallk(address, args.length, 1, 0, 0, null);
    } catch (error) {
      // Only a wasm trap or a JS stack overflow gets here: the engine's state is unknown now.
      this.broken = true;
      throw error;
    } finally {
      this.global.setMemoryMax(undefined);
    }
  }

  /** False once the engine failed in a way Lua could not handle; the owner must replace it. */
  get usable(): boolean {
    return !this.broken && !this.global.isClosed();
  }

  /** Bytes the engine holds now. */
  memoryUsed(): number {
    return this.global.getMemoryUsed();
  }

  /** Compiles `script` under `sha256` unless it is cached; FUNCTION_SYNTAX_ERROR when it is not valid Lua. */
  compile(sha256: string, script: string): void {
    if (this.compiled.delete(sha256)) {
      this.compiled.set(sha256, true);
      return;
    }
    const status = this.invoke("compile", [sha256, script], COMPILE_MEMORY_LIMIT_BYTES);
    const problem = status !== LUA_OK || this.global.lua.lua_type(this.global.address, -1) === LUA_TSTRING ? this.readString(-1) : null;
    this.global.lua.lua_settop(this.global.address, 0);
    if (problem !== null) {
      const { line, message } = parseLuaError(problem);
      throw new AuthNexusError("FUNCTION_SYNTAX_ERROR", {
        message: line === null ? `The script does not compile: ${message}` : `The script does not compile: line ${line}: ${message}`,
        publicDetail: { line, message },
      });
    }
    this.compiled.set(sha256, true);
    this.evictBeyondCapacity();
  }

  private evictBeyondCapacity(): void {
    while (this.compiled.size > this.compiledCacheSize) {
      const oldest = this.compiled.keys().next().value as string;
      this.compiled.delete(oldest);
      this.invoke("forget", [oldest], COMPILE_MEMORY_LIMIT_BYTES);
    }
  }

  /** How many compiled scripts are cached, for tests and stats. */
  get compiledCount(): number {
    return this.compiled.size;
  }

  /** Checks, encodes and runs a call in this thread (see LuaSandbox.run). */
  call(input: LuaCallInput): LuaCallResult {
    return this.run(encodeLuaCall(input));
  }

  /**
   * Runs an encoded call: compiles the script if needed, then runs it under the call's memory
   * cap and time limit. Throws FUNCTION_SYNTAX_ERROR, FUNCTION_ERROR, FUNCTION_TIMEOUT,
   * FUNCTION_MEMORY_EXCEEDED or FUNCTION_RESULT_INVALID; anything else means the engine failed.
   */
  run(call: EncodedLuaCall): LuaCallResult {
    if (!this.usable) throw new Error("the Lua sandbox is closed or broken");
    this.compile(call.sha256, call.script);
    const [seedHigh, seedLow] = getRandomValues(new Uint32Array(2));
    const args = [
      call.sha256,
      call.paramsJson,
      call.contextJson,
      call.appVariablesJson,
      call.userVariablesJson,
      seedHigh ?? 0,
      seedLow ?? 0,
    ];
    this.timedOut = false;
    this.deadline = performance.now() + call.timeoutMs;
    this.global.lua.lua_sethook(this.global.address, this.hookPointer, LUA_MASKCOUNT, INSTRUCTIONS_PER_TIME_CHECK);
    let status: number;
    try {
      status = this.invoke("run", args, call.memoryLimitBytes);
    } finally {
      this.global.lua.lua_sethook(this.global.address, null, 0, 0);
      this.deadline = Number.POSITIVE_INFINITY;
    }
    const output = this.readString(-1);
    this.global.lua.lua_settop(this.global.address, 0);
    return this.outcome(status, output, call);
  }

  private outcome(status: number, output: string, call: EncodedLuaCall): LuaCallResult {
    if (this.timedOut) {
      this.collect();
      throw new AuthNexusError("FUNCTION_TIMEOUT", { message: `The cloud function ran past its time limit of ${call.timeoutMs} ms.` });
    }
    if (status === LUA_ERRMEM || (status !== LUA_OK && output === MEMORY_ERROR_MESSAGE)) return this.memoryExceeded(call);
    if (status !== LUA_OK) {
      this.broken = true;
      throw new Error(`the sandbox's run failed: ${output}`);
    }
    const parsed = JSON.parse(output) as RunOutcome;
    if ("error" in parsed) {
      if (parsed.error === "memory") return this.memoryExceeded(call);
      if (parsed.error === "result") throw resultInvalid({ path: parsed.path ?? "result", problem: parsed.message });
      throw new AuthNexusError("FUNCTION_ERROR", { message: parsed.message });
    }
    return {
      value: checkResultValue(parsed.value),
      userVariableWrites: parsed.writes.map(([key, value]) => ({ key, value })),
    };
  }

  private memoryExceeded(call: EncodedLuaCall): never {
    this.collect();
    throw new AuthNexusError("FUNCTION_MEMORY_EXCEEDED", {
      message: `The cloud function used more than its ${call.memoryLimitBytes} bytes of memory.`,
    });
  }

  /** A full collection after a call that failed, so its garbage does not count against the next. */
  private collect(): void {
    if (this.invoke("collect", [], undefined) !== LUA_OK) this.broken = true;
    this.global.lua.lua_settop(this.global.address, 0);
  }

  close(): void {
    if (this.global.isClosed()) return;
    this.global.close();
    this.global.lua.module.removeFunction(this.hookPointer);
    this.global.lua.module._free(this.lengthOut);
  }
}
