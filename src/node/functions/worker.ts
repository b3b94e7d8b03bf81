/**
 * A cloud function worker thread (started by ./pool.ts, never imported for its code). It owns
 * one LuaSandbox, and so one LuaFactory and one wasm instance, and runs one call at a time:
 * the pool posts a call, the worker answers with its result or its typed error. The worker
 * never touches the database: user variable writes travel back in the result.
 *
 * A call stuck in a C function (a pathological pattern) never answers; the pool terminates the
 * thread. A call that broke the engine (a wasm trap) is answered INTERNAL with `retire`, and
 * the pool replaces the thread.
 */
import { constants, setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import { AuthNexusError, type ErrorCode } from "../../shared/errors/index.js";
import { type EncodedLuaCall, type LuaCallResult, LuaSandbox } from "../../shared/lua/sandbox.js";

export interface WorkerSetup {
  compiledCacheSize: number;
}

export interface WorkerCall {
  type: "call";
  id: number;
  call: EncodedLuaCall;
}

export type WorkerReply =
  | { type: "ready" }
  | { type: "result"; id: number; ok: true; result: LuaCallResult }
  | { type: "result"; id: number; ok: false; code: ErrorCode; message: string; publicDetail?: unknown; retire: boolean };

function answer(sandbox: LuaSandbox, request: WorkerCall): WorkerReply {
  try {
    return { type: "result", id: request.id, ok: true, result: sandbox.run(request.call) };
  } catch (error) {
    if (error instanceof AuthNexusError) {
      const detail = error.publicDetail === undefined ? {} : { publicDetail: error.publicDetail };
      return { type: "result", id: request.id, ok: false, code: error.code, message: error.message, ...detail, retire: !sandbox.usable };
    }
    const message = error instanceof Error ? error.message : String(error);
    return { type: "result", id: request.id, ok: false, code: "INTERNAL", message, retire: true };
  }
}

/**
 * Lua work gives way to the event loop that serves logins and heartbeats: with more runaway
 * functions than cores, this thread would otherwise take the CPU from it. On Linux a priority
 * set from a thread is that thread's alone (elsewhere it would be the whole process's, so it
 * is left alone there).
 */
function yieldCpuToEventLoop(): void {
  if (process.platform === "linux") setPriority(constants.priority.PRIORITY_BELOW_NORMAL);
}

async function serve(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error("the cloud function worker runs only as a worker thread");
  yieldCpuToEventLoop();
  const setup = workerData as WorkerSetup;
  const sandbox = await LuaSandbox.create({ compiledCacheSize: setup.compiledCacheSize });
  port.on("message", (request: WorkerCall) => port.postMessage(answer(sandbox, request)));
  port.postMessage({ type: "ready" } satisfies WorkerReply);
}

await serve();
