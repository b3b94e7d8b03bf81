/**
 * The Lua sandbox cloud functions run in, in this thread (the worker pool around it has its own
 * test in test/integration/function-pool.test.ts). The attacker is a vendor's script, or
 * whoever can change one: it tries to read files, run commands, load bytecode, change what
 * every string shares, outgrow its memory, run forever, or leave something behind for the next
 * caller (another user, another application). Every attempt must end in a typed error, on
 * time, with the sandbox still usable. Also: the value model both ways with its limits, the
 * script's API (context, application and user variables), the compile cache and the syntax
 * checker.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { MAX_CLOUD_FUNCTION_SCRIPT_BYTES } from "../../src/shared/config/defaults.js";
import { type AuthNexusError, type ErrorCode, isAuthNexusError } from "../../src/shared/errors/index.js";
import { sha256Hex } from "../../src/shared/ids.js";
import {
  encodeLuaCall,
  type LuaCallInput,
  type LuaCallResult,
  LuaSandbox,
  MAX_USER_VARIABLE_WRITES,
} from "../../src/shared/lua/sandbox.js";
import { checkLuaSyntax, parseLuaError } from "../../src/shared/lua/syntax.js";
import {
  checkResultValue,
  encodeValueForLua,
  findValueProblem,
  MAX_VALUE_DEPTH,
  MAX_VALUE_NODES,
  MAX_VALUE_STRING_BYTES,
  MAX_VALUE_TOTAL_BYTES,
} from "../../src/shared/lua/value-model.js";

const CONTEXT = { user_id: "usr_1", app_id: "app_1", username: "alice", device_id: "dev_1", server_time: Date.UTC(2026, 0, 1, 12) };
/** Time limit of the calls below that are meant to run out of time (ms). */
const SHORT_TIMEOUT_MS = 150;
/** How late past its limit a timed-out call may end, on a loaded machine (ms). */
const LATENESS_ALLOWED_MS = 500;

let sandbox: LuaSandbox;
before(async () => {
  sandbox = await LuaSandbox.create();
});
after(() => sandbox.close());

function run(script: string, options: Partial<LuaCallInput> = {}): LuaCallResult {
  return sandbox.call({
    sha256: sha256Hex(script),
    script,
    timeoutMs: 1000,
    params: null,
    context: CONTEXT,
    appVariables: {},
    userVariables: {},
    ...options,
  });
}

function value(script: string, options: Partial<LuaCallInput> = {}): unknown {
  return run(script, options).value;
}

/** The typed error `script` ends with, and how long it took (ms). */
function failure(script: string, options: Partial<LuaCallInput> = {}): { error: AuthNexusError; ms: number } {
  const started = performance.now();
  try {
    run(script, options);
  } catch (error) {
    assert.ok(isAuthNexusError(error), `expected a typed error, got ${String(error)}`);
    return { error, ms: performance.now() - started };
  }
  assert.fail(`the script succeeded: ${script}`);
}

function assertRefused(script: string, code: ErrorCode, message?: RegExp, options: Partial<LuaCallInput> = {}): AuthNexusError {
  const { error, ms } = failure(script, options);
  assert.equal(error.code, code, `${script} → ${error.code}: ${error.message}`);
  if (message) assert.match(error.message, message);
  const limit = (options.timeoutMs ?? 1000) + LATENESS_ALLOWED_MS;
  assert.ok(ms < limit, `${script} took ${ms.toFixed(0)} ms`);
  assert.equal(value("return 'still here'"), "still here", "the sandbox stays usable");
  return error;
}

describe("what a script can reach", () => {
  it("has the safe base functions and the five libraries", () => {
    const present = value(`
      local names = {}
      for _, name in ipairs({ "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
        "rawlen", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "xpcall", "load", "collectgarbage" }) do
        names[#names + 1] = type(_G[name])
      end
      for _, lib in ipairs({ "string", "table", "math", "utf8", "coroutine" }) do names[#names + 1] = type(_G[lib]) end
      return names`);
    assert.deepEqual(present, [...Array(19).fill("function"), ...Array(5).fill("table")]);
    assert.equal(value("return _VERSION"), "Lua 5.4");
    assert.equal(value("return utf8.char(72, 228, 8364)"), "Hä€");
  });

  it("has no io, os, debug, package, require, dofile, loadfile, print, warn or string.dump", () => {
    const absent = value(`return { io == nil, os == nil, debug == nil, package == nil, require == nil, dofile == nil,
      loadfile == nil, print == nil, warn == nil, string.dump == nil, ("").dump == nil }`);
    assert.deepEqual(absent, Array(11).fill(true));
  });

  it("gives the call's context as globals", () => {
    const context = value(`return { user_id = user_id, app_id = app_id, username = username, device_id = device_id,
      server_time = server_time, time_type = math.type(server_time) }`);
    assert.deepEqual(context, { ...CONTEXT, time_type: "integer" });
    assert.equal(value("return device_id == nil", { context: { ...CONTEXT, device_id: null } }), true);
  });
});

describe("escape attempts", () => {
  // Each row: the attack, the script, the code it must end with.
  const attempts: Array<[string, string, ErrorCode, RegExp?]> = [
    ["read a file", "return io.open('/etc/passwd'):read('a')", "FUNCTION_ERROR", /global 'io'/],
    ["end the process", "os.exit(1)", "FUNCTION_ERROR", /global 'os'/],
    ["run a command", "return os.execute('id')", "FUNCTION_ERROR", /global 'os'/],
    ["load a native module", "return require('os')", "FUNCTION_ERROR", /global 'require'/],
    ["inspect the stack", "return debug.getinfo(1)", "FUNCTION_ERROR", /global 'debug'/],
    ["reach the registry", "return debug.getregistry()", "FUNCTION_ERROR", /global 'debug'/],
    ["run a file", "return dofile('/etc/passwd')", "FUNCTION_ERROR", /global 'dofile'/],
    ["compile a file", "return loadfile('/etc/passwd')", "FUNCTION_ERROR", /global 'loadfile'/],
    ["dump bytecode to load it", "return load(string.dump(function() return 1 end))()", "FUNCTION_ERROR", /field 'dump'/],
    ["dump through a string's methods", "local dump = ('').dump return dump(function() end)", "FUNCTION_ERROR", /local 'dump'/],
    ["load a binary chunk", "return assert(load('\\27Lua\\84\\0\\25\\147\\13\\10\\26\\10'))", "FUNCTION_ERROR", /binary chunk/],
    ["ask load for binary mode", "return load('return 1', 'x', 'b')", "FUNCTION_ERROR", /only text chunks/],
    ["ask load for either mode", "return load('\\27Lua', 'x', 'bt')", "FUNCTION_ERROR", /only text chunks/],
    ["load through a reader function", "return load(function() return nil end)", "FUNCTION_ERROR", /only source text/],
    ["give strings a new metatable", "setmetatable('', { __index = function() return 'pwned' end })", "FUNCTION_ERROR", /table expected/],
    [
      "rewrite the string methods",
      "getmetatable('').__index = { upper = function() return 'pwned' end }",
      "FUNCTION_ERROR",
      /boolean value/,
    ],
    ["write into the string metatable raw", "rawset(getmetatable(''), '__index', {})", "FUNCTION_ERROR", /table expected/],
    ["leave a finalizer to run in a later call", "setmetatable({}, { __gc = function() while true do end end })", "FUNCTION_ERROR", /__gc/],
    ["stop the collector", "collectgarbage('stop')", "FUNCTION_ERROR", /only "count"/],
    ["force full collections", "for i = 1, 1000 do collectgarbage() end", "FUNCTION_ERROR", /only "count"/],
    ["retune the collector", "collectgarbage('generational')", "FUNCTION_ERROR", /only "count"/],
    ["one huge string", "return #string.rep('x', 1e9)", "FUNCTION_MEMORY_EXCEEDED"],
    ["many strings", "local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 64) .. i end", "FUNCTION_MEMORY_EXCEEDED"],
    ["a huge table", "local t = {} for i = 1, 1e9 do t[i] = i end", "FUNCTION_MEMORY_EXCEEDED"],
    ["deep Lua recursion", "local function f() return 1 + f() end return f()", "FUNCTION_MEMORY_EXCEEDED"],
    [
      "deep C recursion through __index",
      "local t = setmetatable({}, { __index = function(t, k) return t[k] end }) return t.x",
      "FUNCTION_ERROR",
      /stack overflow/,
    ],
    ["deep C recursion through gsub", "local function f() return ('a'):gsub('.', f) end return f()", "FUNCTION_ERROR", /stack overflow/],
    ["nested coroutines", "local function f() return coroutine.wrap(f)() end return f()", "FUNCTION_ERROR", /stack overflow/],
    ["a parser bomb", "return assert(load('return ' .. string.rep('(', 1e5)))", "FUNCTION_ERROR", /overflow|too many/],
    ["yield out of the call", "coroutine.yield(1)", "FUNCTION_ERROR", /outside a coroutine/],
    [
      "a hostile error object",
      "error(setmetatable({}, { __tostring = function() while true do end end }))",
      "FUNCTION_ERROR",
      /error object is a table/,
    ],
  ];
  for (const [attack, script, code, message] of attempts) {
    it(`refuses: ${attack}`, () => {
      assertRefused(script, code, message);
    });
  }

  it("a memory error the script catches still leaves the cap in force", () => {
    const caught = value("local ok, err = pcall(string.rep, 'x', 1e9) return { ok = ok, err = err }");
    assert.deepEqual(caught, { ok: false, err: "not enough memory" });
  });

  it("the string metatable reads as false and string methods keep working", () => {
    assert.equal(value("return getmetatable('')"), false);
    assert.equal(value("return ('abc'):upper() .. string.format('%d', 7)"), "ABC7");
  });

  const runaways: Array<[string, string]> = [
    ["an endless loop", "while true do end"],
    ["an endless loop that catches the time-limit error", "while true do pcall(function() while true do end end) end"],
    ["an endless loop inside a coroutine", "coroutine.wrap(function() while true do end end)()"],
    ["an endless loop in a message handler", "xpcall(error, function() while true do end end)"],
    ["an endless loop in a loaded chunk", "load('while true do end')()"],
    [
      "an endless loop in a __close handler",
      "local guard <close> = setmetatable({}, { __close = function() while true do end end }) while true do end",
    ],
  ];
  for (const [attack, script] of runaways) {
    it(`stops ${attack} at its time limit`, () => {
      const { error, ms } = failure(script, { timeoutMs: SHORT_TIMEOUT_MS });
      assert.equal(error.code, "FUNCTION_TIMEOUT");
      assert.ok(ms >= SHORT_TIMEOUT_MS - 1 && ms < SHORT_TIMEOUT_MS + LATENESS_ALLOWED_MS, `took ${ms.toFixed(0)} ms`);
      assert.equal(value("return 1"), 1);
    });
  }
});

describe("nothing survives a call", () => {
  it("globals, library tables and the globals' metatable start clean every time", () => {
    run(`x = 1; _G.y = 2; rawset(_G, "z", 3)
      string.upper = nil; rawset(string, "lower", nil); math.pi = 3; table.insert = error
      setmetatable(_G, { __index = function() return "leaked" end })`);
    const clean = value(`return { x == nil, y == nil, z == nil, string.upper ~= nil, string.lower ~= nil, math.pi > 3.14,
      table.insert ~= error, getmetatable(_G) == nil, some_undefined_name == nil }`);
    assert.deepEqual(clean, Array(9).fill(true));
  });

  it("the same cached script starts from clean globals on every call", () => {
    const script = "counter = (counter or 0) + 1 return counter";
    assert.deepEqual([value(script), value(script), value(script)], [1, 1, 1]);
  });

  it("a chunk built by load shares the call's environment and nothing else", () => {
    assert.equal(value("load('shared = 5')() return shared"), 5);
    assert.equal(value("return shared"), null);
    assert.equal(value("local env = {} load('inside = 1', 'x', 't', env)() return env.inside + (inside or 0)"), 1);
  });

  it("a seed set by one call does not decide the next call's random numbers", () => {
    run("math.randomseed(42)");
    const next = value("return { math.random(1, 1e9), math.random(1, 1e9), math.random(1, 1e9) }");
    const seeded = value("math.randomseed(42) return { math.random(1, 1e9), math.random(1, 1e9), math.random(1, 1e9) }");
    assert.notDeepEqual(next, seeded);
  });
});

describe("value model, JavaScript side", () => {
  it("accepts every kind of value it documents", () => {
    for (const ok of [null, true, 0, -1.5, 2 ** 53, "", "héllo \u{1f600}", [], {}, [1, "a", [true]], { a: { b: [1, { c: null }] } }]) {
      assert.equal(findValueProblem(ok), null, JSON.stringify(ok));
    }
  });

  it("names the first problem and where it is", () => {
    const deep = JSON.parse(`${"[".repeat(MAX_VALUE_DEPTH + 1)}${"]".repeat(MAX_VALUE_DEPTH + 1)}`);
    const cases: Array<[unknown, string, RegExp]> = [
      [Number.NaN, "value", /finite/],
      [{ a: [1, Number.POSITIVE_INFINITY] }, "value.a[1]", /finite/],
      [{ f: () => 1 }, "value.f", /function/],
      [[1, null], "value[1]", /null/],
      [[1, undefined], "value[1]", /null/],
      [{ when: new Date(0) }, "value.when", /plain map/],
      [new Map(), "value", /plain map/],
      [{ n: 10n }, "value.n", /bigint/],
      [{ "odd key": "\ud800" }, 'value["odd key"]', /lone surrogate/],
      [deep, `value${"[0]".repeat(MAX_VALUE_DEPTH)}`, /nested more than/],
      [Array(MAX_VALUE_NODES).fill(0), `value[${MAX_VALUE_NODES - 1}]`, /items in all/],
      ["x".repeat(MAX_VALUE_STRING_BYTES + 1), "value", /longer than/],
      [{ ["k".repeat(MAX_VALUE_STRING_BYTES + 1)]: 1 }, `value.${"k".repeat(MAX_VALUE_STRING_BYTES + 1)}`, /key that is longer/],
      [Array(5).fill("y".repeat(MAX_VALUE_TOTAL_BYTES / 4)), "value[4]", /bytes in all/],
    ];
    for (const [input, path, problem] of cases) {
      const found = findValueProblem(input);
      assert.ok(found, `no problem found in ${path}`);
      assert.equal(found.path, path);
      assert.match(found.problem, problem);
    }
  });

  it("takes values right at the limits", () => {
    const deepest = JSON.parse(`${"[".repeat(MAX_VALUE_DEPTH)}${"]".repeat(MAX_VALUE_DEPTH)}`);
    assert.equal(findValueProblem(deepest), null);
    assert.equal(findValueProblem(Array(MAX_VALUE_NODES - 1).fill(0)), null);
    assert.equal(findValueProblem("é".repeat(MAX_VALUE_STRING_BYTES / 2)), null);
  });

  it("bad params are VALIDATION_FAILED naming the field; null map entries are dropped on the way in", () => {
    assert.throws(
      () => encodeValueForLua({ items: [1, null] }),
      (error) => isAuthNexusError(error, "VALIDATION_FAILED") && /params\.items\[1\]/.test(error.message),
    );
    assert.equal(encodeValueForLua({ a: null, b: [{ c: undefined, d: 1 }] }), '{"b":[{"d":1}]}');
    assert.throws(
      () =>
        encodeLuaCall({
          sha256: "x",
          script: "",
          timeoutMs: 100,
          params: null,
          context: CONTEXT,
          appVariables: { a: {} as never },
          userVariables: {},
        }),
      (error) => isAuthNexusError(error, "VALIDATION_FAILED") && /appVariables\.a/.test(error.message),
    );
    assert.throws(
      () =>
        encodeLuaCall({
          sha256: "x",
          script: "",
          timeoutMs: 100,
          params: null,
          context: CONTEXT,
          appVariables: {},
          userVariables: { n: 1 as never },
        }),
      (error) => isAuthNexusError(error, "VALIDATION_FAILED") && /userVariables\.n/.test(error.message),
    );
  });

  it("a result the Lua side let through is still checked here", () => {
    assert.throws(
      () => checkResultValue({ a: [null] }),
      (error) => isAuthNexusError(error, "FUNCTION_RESULT_INVALID") && (error.publicDetail as { path: string }).path === "result.a[0]",
    );
  });
});

describe("value model through Lua", () => {
  it("params arrive with Lua's types and come back unchanged", () => {
    const params = {
      i: 42,
      f: 2.5,
      neg: -7,
      big: 2 ** 53,
      s: 'nul\u0000byte \u{1f600} \n\t"q" \\',
      yes: true,
      list: [1, "two", [3]],
      map: { k: "v" },
    };
    assert.deepEqual(value("return params", { params }), params);
    const types = value(
      `return { math.type(params.i), math.type(params.f), type(params.s), #params.list, params.map.k,
      #params.s, params.s:byte(4), math.type(params.big) }`,
      { params },
    );
    assert.deepEqual(types, ["integer", "float", "string", 3, "v", Buffer.byteLength(params.s), 0, "float"]);
  });

  it("null params are nil; an empty array or map arrives as an empty table and comes back as {}", () => {
    assert.equal(value("return params == nil"), true);
    assert.deepEqual(value("return params", { params: [] }), {});
    assert.deepEqual(value("return { a = {}, b = params }", { params: {} }), { a: {}, b: {} });
  });

  it("numbers come back exactly", () => {
    assert.deepEqual(value("return { 0.1, -0.0 == 0, 1e300, 3.0, 2^53, -(2^53 - 1) // 1, math.pi }"), [
      0.1,
      true,
      1e300,
      3,
      2 ** 53,
      -(2 ** 53 - 1),
      Math.PI,
    ]);
  });

  it("only the first return value is the result; metatables are ignored", () => {
    assert.equal(value("return 1, 2, 3"), 1);
    const raw = value(`return setmetatable({ a = 1 }, { __index = function() return 2 end, __pairs = function() error('ran') end,
      __len = function() error('ran') end })`);
    assert.deepEqual(raw, { a: 1 });
  });

  const refused: Array<[string, string, RegExp]> = [
    ["a function", "return { f = function() end }", /result\.f is a function/],
    ["a coroutine", "return { coroutine.create(print or error) }", /result\[1\] is a thread/],
    ["a table containing itself", "local t = { a = {} } t.a.b = t return t", /result\.a\.b contains itself/],
    ["NaN", "return { x = 0/0 }", /not a finite number/],
    ["infinity", "return { x = 1/0 }", /not a finite number/],
    ["an integer beyond 2^53", "return math.maxinteger", /beyond 2\^53/],
    ["a gap in an array", "return { 1, nil, 3 }", /gaps/],
    ["array items mixed with string keys", "return { 1, 2, x = 3 }", /mixes/],
    ["a float key", "return { [1.5] = true }", /neither a string nor an index/],
    ["a boolean key", "return { [true] = 1 }", /neither a string nor an index/],
    ["a zero key", "return { [0] = 1 }", /neither a string nor an index/],
    ["bytes that are not UTF-8", "return { s = '\\xff\\xfe' }", /result\.s is not valid UTF-8/],
    ["a key that is not UTF-8", "return { ['\\xff'] = 1 }", /has a key not valid UTF-8/],
    ["a string past the byte limit", `return string.rep('a', ${MAX_VALUE_STRING_BYTES + 1})`, /longer than/],
    [
      "too many bytes in all",
      `local t = {} for i = 1, 5 do t[i] = string.rep('a', ${MAX_VALUE_TOTAL_BYTES / 4}) end return t`,
      /bytes in all/,
    ],
    ["too many values", `local t = {} for i = 1, ${MAX_VALUE_NODES} do t[i] = i end return t`, /items in all/],
    ["too deep", `local t = {} for i = 1, ${MAX_VALUE_DEPTH} do t = { t } end return t`, /nested more than/],
  ];
  for (const [what, script, message] of refused) {
    it(`refuses to return ${what} with FUNCTION_RESULT_INVALID`, () => {
      const error = assertRefused(script, "FUNCTION_RESULT_INVALID", message);
      assert.ok((error.publicDetail as { path: string }).path.startsWith("result"));
    });
  }

  it("returns values right at the limits", () => {
    const deepest = value(`local t = {} for i = 1, ${MAX_VALUE_DEPTH - 1} do t = { t } end return t`);
    assert.deepEqual(deepest, JSON.parse(`${"[".repeat(MAX_VALUE_DEPTH - 1)}{}${"]".repeat(MAX_VALUE_DEPTH - 1)}`));
    const widest = value(`local t = {} for i = 1, ${MAX_VALUE_NODES - 1} do t[i] = i end return t`) as number[];
    assert.equal(widest.length, MAX_VALUE_NODES - 1);
    assert.equal((value(`return string.rep('é', ${MAX_VALUE_STRING_BYTES / 2})`) as string).length, MAX_VALUE_STRING_BYTES / 2);
  });
});

describe("the script's API", () => {
  const appVariables = { motd: "hello", max_items: 5, beta: false };

  it("app_vars reads the application's variables", () => {
    assert.deepEqual(
      value("return { app_vars.get('motd'), app_vars.get('max_items'), app_vars.get('beta'), app_vars.get('nope') == nil }", {
        appVariables,
      }),
      ["hello", 5, false, true],
    );
    assert.deepEqual(value("local all = app_vars.all() all.motd = 'changed' return { all, app_vars.get('motd') }", { appVariables }), [
      { ...appVariables, motd: "changed" },
      "hello",
    ]);
    assertRefused("return app_vars.get(1)", "FUNCTION_ERROR", /the name must be a string/);
  });

  it("user_vars reads and writes a copy, and returns only what changed, sorted by key", () => {
    const userVariables = { coins: "10", level: "3", old: "x" };
    const result = run(
      `user_vars.set('coins', tostring(tonumber(user_vars.get('coins')) + 5))
       user_vars.set('level', '4') user_vars.set('level', '3')
       user_vars.set('old', nil) user_vars.set('new', 'y')
       return user_vars.all()`,
      { userVariables },
    );
    assert.deepEqual(result.value, { coins: "15", level: "3", new: "y" });
    assert.deepEqual(result.userVariableWrites, [
      { key: "coins", value: "15" },
      { key: "new", value: "y" },
      { key: "old", value: null },
    ]);
    assert.deepEqual(run("return user_vars.get('coins')", { userVariables }).userVariableWrites, []);
  });

  it("user_vars refuses what cannot be stored, and a failed call writes nothing", () => {
    assertRefused("user_vars.set('n', 5)", "FUNCTION_ERROR", /must be a string, or nil/);
    assertRefused("user_vars.set(5, 'x')", "FUNCTION_ERROR", /key must be a string/);
    assertRefused("user_vars.set('bin', '\\xff')", "FUNCTION_ERROR", /not valid UTF-8/);
    assertRefused(`user_vars.set('big', string.rep('x', ${MAX_VALUE_STRING_BYTES + 1}))`, "FUNCTION_ERROR", /longer than/);
    assertRefused(`for i = 1, ${MAX_USER_VARIABLE_WRITES + 1} do user_vars.set('k' .. i, 'v') end`, "FUNCTION_ERROR", /at most/);
    assertRefused("user_vars.set('a', 'b') error('after writing')", "FUNCTION_ERROR", /after writing/);
  });
});

describe("compiled scripts", () => {
  it("are cached by sha256 with a bound, least recently used dropped first, and recompiled when needed", async () => {
    const small = await LuaSandbox.create({ compiledCacheSize: 2 });
    try {
      const call = (sha256: string, script: string) =>
        small.call({ sha256, script, timeoutMs: 1000, params: null, context: CONTEXT, appVariables: {}, userVariables: {} }).value;
      assert.equal(call("v1", "return 'one'"), "one");
      assert.equal(call("v2", "return 'two'"), "two");
      assert.equal(call("v1", "return 'ignored: v1 is cached'"), "one");
      assert.equal(call("v3", "return 'three'"), "three");
      assert.equal(small.compiledCount, 2);
      assert.equal(call("v2", "return 'two again'"), "two again", "v2 was dropped and compiles anew");
      assert.equal(call("v1", "return 'one again'"), "one again", "v1 was dropped when v2 came back");
    } finally {
      small.close();
    }
  });

  it("a script that does not compile is FUNCTION_SYNTAX_ERROR with its line", () => {
    const error = assertRefused("local x = 1\nif x then\nreturn 1", "FUNCTION_SYNTAX_ERROR", /line 3/);
    assert.deepEqual(error.publicDetail, { line: 3, message: "'end' expected (to close 'if' at line 2) near <eof>" });
  });
});

describe("checkLuaSyntax", () => {
  it("accepts valid Lua and never runs it", async () => {
    assert.deepEqual(await checkLuaSyntax("return 1"), { ok: true });
    assert.deepEqual(await checkLuaSyntax("while true do end"), { ok: true });
    assert.deepEqual(await checkLuaSyntax("error('this would fail if it ran')"), { ok: true });
  });

  it("gives the line and the message of the first error", async () => {
    assert.deepEqual(await checkLuaSyntax("local a = 1\nlocal b = = 2"), { ok: false, line: 2, message: "unexpected symbol near '='" });
    assert.deepEqual(await checkLuaSyntax("x = 'unfinished"), { ok: false, line: 1, message: "unfinished string near <eof>" });
    assert.deepEqual(await checkLuaSyntax("for i = 1, 2 do\n\n\n"), {
      ok: false,
      line: 4,
      message: "'end' expected (to close 'for' at line 1) near <eof>",
    });
  });

  it("refuses binary chunks and oversized scripts without a line", async () => {
    assert.deepEqual(await checkLuaSyntax("\x1bLua"), { ok: false, line: null, message: "attempt to load a binary chunk (mode is 't')" });
    const huge = await checkLuaSyntax(`--${"x".repeat(MAX_CLOUD_FUNCTION_SCRIPT_BYTES)}`);
    assert.equal(huge.ok, false);
    assert.equal(huge.ok === false && huge.line, null);
  });

  it("splits compiler messages into line and text", () => {
    assert.deepEqual(parseLuaError("fn:12: 'end' expected"), { line: 12, message: "'end' expected" });
    assert.deepEqual(parseLuaError("not enough memory"), { line: null, message: "not enough memory" });
  });
});
