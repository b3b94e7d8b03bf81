/**
 * The worker pool cloud functions run on, with real worker threads. The attacker's script now
 * tries what only the pool can stop: a C call that never returns (a pathological pattern that
 * Lua's own time check cannot interrupt), runaway calls repeated to starve the event loop that
 * serves logins and heartbeats, and a flood of calls to grow memory without bound. Each must
 * end in a typed error on time, with the pool still answering. Also: a new version of a
 * function is used by the next call while a call in flight finishes on the old one, close()
 * leaves nothing running, and the built pool (dist/) finds its built worker.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { type FunctionCallRequest, FunctionPool } from "../../src/node/functions/pool.js";
import { type AuthNexusError, type ErrorCode, isAuthNexusError } from "../../src/shared/errors/index.js";
import { sha256Hex } from "../../src/shared/ids.js";
import { ManualClock } from "../../src/shared/time/index.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const ROOT = join(import.meta.dirname, "..", "..");
const CONTEXT = { user_id: "usr_1", app_id: "app_1", username: "alice", device_id: "dev_1" };
/** A pattern that backtracks for minutes inside string.find, where no Lua instruction runs. */
const PATHOLOGICAL = `return string.find(string.rep("a", 40000), ".-.-.-.-.-.-.-.-.-.-b")`;
const ENDLESS = "while true do end";
/** A loop that takes tens of milliseconds, then answers. */
const busyFor = (label: string) => `local n = 0 for i = 1, 3e6 do n = n + i end return "${label}"`;
/** How late past its limit a timed-out call may be answered, on a loaded machine (ms). */
const LATENESS_ALLOWED_MS = 300;
/** The time-limit tests give a worker this long to report a timeout before it counts as stuck (ms). */
const GRACE_MS = 1000;

function request(script: string, overrides: Partial<FunctionCallRequest> = {}): FunctionCallRequest {
  return {
    name: "test_fn",
    sha256: sha256Hex(script),
    script,
    timeoutMs: 1000,
    params: null,
    context: CONTEXT,
    appVariables: {},
    userVariables: {},
    ...overrides,
  };
}

async function rejection(promise: Promise<unknown>): Promise<AuthNexusError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isAuthNexusError(error), `expected a typed error, got ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<AuthNexusError> {
  const error = await rejection(promise);
  assert.equal(error.code, code, `${error.code}: ${error.message}`);
  if (message) assert.match(error.message, message);
  return error;
}

async function timed<T>(work: () => Promise<T>): Promise<{ result: T; ms: number }> {
  const started = performance.now();
  const result = await work();
  return { result, ms: performance.now() - started };
}

describe("FunctionPool", () => {
  let pool: FunctionPool;
  before(async () => {
    pool = await FunctionPool.start({ size: 2, maxQueue: 512 });
  });
  after(() => pool.close());

  it("runs a call with its params, context and variables, and returns its value and writes", async () => {
    const script = `user_vars.set("seen", params.greeting .. ", " .. username)
      return { greeting = params.greeting, app = app_id, motd = app_vars.get("motd"), coins = user_vars.get("coins") }`;
    const result = await pool.call(
      request(script, { params: { greeting: "hi" }, appVariables: { motd: "welcome" }, userVariables: { coins: "7" } }),
    );
    assert.deepEqual(result, {
      value: { greeting: "hi", app: "app_1", motd: "welcome", coins: "7" },
      userVariableWrites: [{ key: "seen", value: "hi, alice" }],
    });
  });

  it("carries every failure back as its typed error", async () => {
    const cases: Array<[string, ErrorCode, RegExp]> = [
      ["return io.open('/etc/passwd')", "FUNCTION_ERROR", /fn:1: attempt to index a nil value \(global 'io'\)/],
      ["os.exit(1)", "FUNCTION_ERROR", /global 'os'/],
      ["return require('os')", "FUNCTION_ERROR", /global 'require'/],
      ["return assert(load('\\27Lua'))", "FUNCTION_ERROR", /binary chunk/],
      ["getmetatable('').__index = {}", "FUNCTION_ERROR", /boolean value/],
      ["return #string.rep('x', 1e9)", "FUNCTION_MEMORY_EXCEEDED", /memory/],
      ["return function() end", "FUNCTION_RESULT_INVALID", /result is a function/],
      ["return (", "FUNCTION_SYNTAX_ERROR", /line 1/],
    ];
    for (const [script, code, message] of cases) await expectCode(pool.call(request(script)), code, message);
  });

  it("refuses bad params with VALIDATION_FAILED before queueing, and a time limit out of range", async () => {
    await expectCode(pool.call(request("return 1", { params: { list: [1, null] } })), "VALIDATION_FAILED", /params\.list\[1\]/);
    await expectCode(pool.call(request("return 1", { params: { n: Number.NaN } })), "VALIDATION_FAILED", /params\.n/);
    await expectCode(pool.call(request("return 1", { timeoutMs: 5 })), "VALIDATION_FAILED", /timeoutMs/);
    await expectCode(pool.call(request("return 1", { timeoutMs: 10 * 60_000 })), "VALIDATION_FAILED", /timeoutMs/);
  });

  it("answers many calls spread over its workers, each with its own result", async () => {
    const calls = Array.from({ length: 300 }, (_, i) => pool.call(request("return params.i * 2", { params: { i } })));
    const values = (await Promise.all(calls)).map((result) => result.value);
    assert.deepEqual(
      values,
      Array.from({ length: 300 }, (_, i) => i * 2),
    );
  });
});

describe("FunctionPool time limits", () => {
  let pool: FunctionPool;
  before(async () => {
    // A worker that is only slow to report (a loaded test machine) must not pass for a stuck one.
    pool = await FunctionPool.start({ size: 1, maxQueue: 8, timedOutWorkerGraceMs: GRACE_MS });
  });
  after(() => pool.close());

  it("cuts a pathological pattern stuck in C at its limit, replaces the worker, and the next call works", async () => {
    const restartsBefore = pool.stats().restarts;
    const { result: error, ms } = await timed(() => rejection(pool.call(request(PATHOLOGICAL, { timeoutMs: 200 }))));
    assert.equal(error.code, "FUNCTION_TIMEOUT");
    assert.match(error.message, /'test_fn' ran past its time limit of 200 ms/);
    assert.ok(ms >= 199 && ms < 200 + LATENESS_ALLOWED_MS, `answered after ${ms.toFixed(0)} ms`);
    // The only worker was stuck: this call can run only on its replacement.
    assert.equal((await pool.call(request("return 'after'"))).value, "after");
    assert.equal(pool.stats().restarts, restartsBefore + 1);
  });

  it("stops an endless Lua loop at its limit and keeps the worker, which Lua's own check freed", async () => {
    const restartsBefore = pool.stats().restarts;
    const { result: error, ms } = await timed(() => rejection(pool.call(request(ENDLESS, { timeoutMs: 200 }))));
    assert.equal(error.code, "FUNCTION_TIMEOUT");
    assert.ok(ms >= 199 && ms < 200 + LATENESS_ALLOWED_MS, `answered after ${ms.toFixed(0)} ms`);
    assert.equal((await pool.call(request("return 'after'"))).value, "after");
    assert.equal(pool.stats().restarts, restartsBefore, `the worker answered within ${GRACE_MS} ms and was kept`);
  });

  it("caps each call's memory and keeps the worker", async () => {
    const restartsBefore = pool.stats().restarts;
    await expectCode(pool.call(request("local t = {} for i = 1, 1e9 do t[i] = i end")), "FUNCTION_MEMORY_EXCEEDED");
    assert.equal((await pool.call(request("return #string.rep('x', 1e6)"))).value, 1e6, "the next call has its full allowance");
    assert.equal(pool.stats().restarts, restartsBefore);
  });

  it("a call in flight finishes on its version while the next call runs the new one", async () => {
    const v1 = pool.call(request(busyFor("v1"), { name: "versioned" }));
    const v2 = pool.call(request("return 'v2'", { name: "versioned" }));
    const order: string[] = [];
    const settled = [v1, v2].map((call) => call.then((result) => order.push(result.value as string)));
    await Promise.all(settled);
    assert.deepEqual(order, ["v1", "v2"]);
    assert.equal((await pool.call(request(busyFor("v1"), { name: "versioned" }))).value, "v1", "both versions stay cached");
  });

  it("refuses a call with FUNCTION_BUSY at once when the queue is full", async () => {
    let runningSettled = false;
    const running = pool.call(request(ENDLESS, { timeoutMs: 300 })).finally(() => {
      runningSettled = true;
    });
    const queued = Array.from({ length: 8 }, (_, i) => pool.call(request("return params", { params: i })));
    assert.equal(pool.stats().queued, 8);
    await expectCode(pool.call(request("return 'one too many'")), "FUNCTION_BUSY");
    assert.equal(runningSettled, false, "refused while the queue was still full");
    await expectCode(running, "FUNCTION_TIMEOUT");
    assert.deepEqual(
      (await Promise.all(queued)).map((result) => result.value),
      [0, 1, 2, 3, 4, 5, 6, 7],
    );
  });
});

describe("FunctionPool and the event loop", () => {
  it("stays responsive while four runaway functions time out in a loop", async () => {
    const pool = await FunctionPool.start({ size: 4, maxQueue: 8 });
    const lateness: number[] = [];
    const intervalMs = 5;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      lateness.push(Math.max(0, now - last - intervalMs));
      last = now;
    }, intervalMs);
    try {
      const runaway = async (script: string) => {
        for (let round = 0; round < 6; round++) await expectCode(pool.call(request(script, { timeoutMs: 100 })), "FUNCTION_TIMEOUT");
      };
      await Promise.all([runaway(PATHOLOGICAL), runaway(ENDLESS), runaway(PATHOLOGICAL), runaway(ENDLESS)]);
    } finally {
      clearInterval(ticker);
      await pool.close();
    }
    // Lua never runs on this thread: were it to, ticks would be late by a whole time limit
    // (100 ms) at each timeout. What lateness is left comes from sharing the cores with four
    // runaway threads and the replacements' start-up.
    lateness.sort((a, b) => a - b);
    const at = (quantile: number) => lateness[Math.floor(lateness.length * quantile)] ?? 0;
    assert.ok(lateness.length > 50, `${lateness.length} ticks`);
    // Bounds loose enough for a loaded two-core test machine, far below what Lua on this thread
    // would cause (most ticks a whole time limit late).
    const summary = `timer lateness p50 ${at(0.5).toFixed(1)} ms, p90 ${at(0.9).toFixed(1)} ms, p99 ${at(0.99).toFixed(1)} ms`;
    assert.ok(at(0.5) < 5 && at(0.9) < 50, summary);
  });
});

describe("FunctionPool lifecycle", () => {
  it("refuses bad options with CONFIG_INVALID", async () => {
    await assert.rejects(FunctionPool.start({ size: 0, maxQueue: -1 }), (error) => {
      return isAuthNexusError(error, "CONFIG_INVALID") && /size/.test(error.message) && /maxQueue/.test(error.message);
    });
  });

  it("takes server_time from the injected clock unless the caller gives one", async () => {
    const clock = new ManualClock(Date.UTC(2030, 5, 1));
    const pool = await FunctionPool.start({ size: 1, maxQueue: 1, clock });
    try {
      assert.equal((await pool.call(request("return server_time"))).value, clock.now());
      clock.advance(1234);
      assert.equal((await pool.call(request("return server_time"))).value, clock.now());
      assert.equal((await pool.call(request("return server_time", { context: { ...CONTEXT, server_time: 5 } }))).value, 5);
    } finally {
      await pool.close();
    }
  });

  it("close() refuses queued and running calls, ends every worker, and refuses calls after it", async () => {
    const pool = await FunctionPool.start({ size: 2, maxQueue: 4 });
    const running = [pool.call(request(ENDLESS, { timeoutMs: 30_000 })), pool.call(request(PATHOLOGICAL, { timeoutMs: 30_000 }))];
    const queued = pool.call(request("return 1"));
    const refusals = [...running, queued].map((call) => expectCode(call, "FUNCTION_BUSY", /shutting down/));
    assert.deepEqual({ busy: pool.stats().busy, queued: pool.stats().queued }, { busy: 2, queued: 1 });
    const { ms } = await timed(() => pool.close());
    await Promise.all(refusals);
    assert.ok(ms < 5_000, `close took ${ms.toFixed(0)} ms`);
    assert.deepEqual({ idle: pool.stats().idle, busy: pool.stats().busy }, { idle: 0, busy: 0 });
    await expectCode(pool.call(request("return 1")), "FUNCTION_BUSY");
    await pool.close();
  });

  const builtPool = join(ROOT, "dist", "src", "node", "functions", "pool.js");
  it("from the build (dist/), the pool starts its compiled worker", {
    skip: !existsSync(builtPool) && "run npm run build first",
  }, async () => {
    const dir = await makeTempDir("function-pool-dist");
    try {
      const entry = join(dir.path, "call.mjs");
      await writeFile(
        entry,
        `import { FunctionPool } from ${JSON.stringify(pathToFileURL(builtPool).href)};
        const pool = await FunctionPool.start({ size: 1, maxQueue: 1 });
        const context = { user_id: "u", app_id: "a", username: "n", device_id: null };
        const result = await pool.call({ name: "f", sha256: "s", script: "return params.x + 1", timeoutMs: 1000, params: { x: 41 },
          context, appVariables: {}, userVariables: {} });
        await pool.close();
        process.stdout.write(JSON.stringify(result.value));`,
      );
      const { stdout } = await promisify(execFile)(process.execPath, [entry], { cwd: ROOT, timeout: 30_000 });
      assert.equal(stdout, "42");
    } finally {
      await dir.cleanup();
    }
  });
});
