/**
 * The pool of worker threads cloud functions run on, off the event loop that serves logins and
 * heartbeats. Each worker holds one Lua sandbox (src/shared/lua/sandbox.ts, which documents
 * what a script sees) and runs one call at a time.
 *
 * - Calls wait in a bounded queue while every worker is busy; when it is full a call is
 *   refused at once with FUNCTION_BUSY instead of the queue growing.
 * - Each call's time limit is enforced here, by a timer on this thread started when the call
 *   is handed to a worker. At the limit the caller gets FUNCTION_TIMEOUT at once. The worker
 *   checks the same limit inside Lua and normally reports it a moment later, staying in
 *   service; one that does not within TIMED_OUT_WORKER_GRACE_MS (stuck in a C call such as a
 *   pathological `string.find`) is terminated and replaced by a fresh one.
 * - Calls carry the script's sha256: each worker caches compiled scripts by it, so a new
 *   version is compiled on its first call while calls in flight finish on the old one.
 * - Parameters are checked before a call is queued (VALIDATION_FAILED); `server_time` is the
 *   injected clock's when the call is accepted, unless the caller gives one.
 * - `close()` refuses what is queued or running with FUNCTION_BUSY and ends every thread.
 */
import type { Worker } from "node:worker_threads";
import { MAX_CLOUD_FUNCTION_TIMEOUT_MS, MIN_CLOUD_FUNCTION_TIMEOUT_MS } from "../../shared/config/defaults.js";
import { AuthNexusError, fieldInvalid } from "../../shared/errors/index.js";
import type { Logger } from "../../shared/log/index.js";
import {
  type AppVariables,
  DEFAULT_COMPILED_CACHE_SIZE,
  DEFAULT_FUNCTION_MEMORY_LIMIT_BYTES,
  type EncodedLuaCall,
  encodeLuaCall,
  type LuaCallResult,
  type UserVariables,
} from "../../shared/lua/sandbox.js";
import { siblingModule, startWorker } from "../../shared/threads/start-worker.js";
import { type CancelTimer, type Clock, type Scheduler, systemScheduler } from "../../shared/time/index.js";
import type { WorkerCall, WorkerReply, WorkerSetup } from "./worker.js";

/** After a call's time limit, how long its worker may take to report it before it is terminated (ms). */
export const TIMED_OUT_WORKER_GRACE_MS = 100;
/** After a worker failed to start, how long before the next attempt (ms). */
export const WORKER_RESTART_DELAY_MS = 1_000;
/** V8 heap of one worker (MiB): Lua's memory lives in wasm memory, capped per call by the sandbox. */
const WORKER_HEAP_LIMIT_MB = 128;

export interface FunctionCallContext {
  user_id: string;
  app_id: string;
  username: string;
  device_id: string | null;
  /** Unix ms; the pool's clock when the call is accepted if not given. */
  server_time?: number;
}

export interface FunctionCallRequest {
  /** The function's name, for messages and logs. */
  name: string;
  sha256: string;
  script: string;
  timeoutMs: number;
  params: unknown;
  context: FunctionCallContext;
  appVariables: AppVariables;
  userVariables: UserVariables;
}

export type FunctionCallResult = LuaCallResult;

export interface FunctionPoolOptions {
  /** Worker threads. */
  size: number;
  /** Calls that may wait for a worker; one more is refused with FUNCTION_BUSY. */
  maxQueue: number;
  /** Memory one call may allocate (bytes). */
  memoryLimitBytes?: number;
  /** Compiled scripts each worker keeps. */
  compiledCacheSize?: number;
  /** After a call's time limit, how long its worker may take to report it before it is replaced (ms). */
  timedOutWorkerGraceMs?: number;
  /** Timers for time limits and restarts. */
  scheduler?: Scheduler;
  /** The source of `server_time`; the scheduler's clock by default. */
  clock?: Clock;
  log?: Logger;
}

export interface FunctionPoolStats {
  size: number;
  idle: number;
  busy: number;
  queued: number;
  /** Workers replaced since the pool started (timeouts, crashes, broken engines). */
  restarts: number;
}

interface PendingCall {
  id: number;
  name: string;
  call: EncodedLuaCall;
  resolve: (result: FunctionCallResult) => void;
  reject: (error: AuthNexusError) => void;
}

type SlotState = "starting" | "idle" | "busy" | "draining" | "stopped";

interface Slot {
  worker: Worker;
  state: SlotState;
  call: PendingCall | null;
  cancelTimer: CancelTimer;
  /** Settles when the worker is ready, or rejects when it fails to start. */
  ready: Promise<void>;
}

const noTimer: CancelTimer = () => {};

/** The worker entry beside this file: worker.ts when running from source, worker.js when built. */
const WORKER_ENTRY = siblingModule(import.meta.url, "worker");

function spawnWorker(setup: WorkerSetup): Worker {
  return startWorker(WORKER_ENTRY, { workerData: setup, resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_LIMIT_MB } });
}

function poolClosed(): AuthNexusError {
  return new AuthNexusError("FUNCTION_BUSY", { message: "The cloud function pool is shutting down; try again shortly." });
}

function checkOptions(options: FunctionPoolOptions): void {
  const problems: string[] = [];
  if (!Number.isSafeInteger(options.size) || options.size < 1) problems.push("size must be an integer ≥ 1");
  if (!Number.isSafeInteger(options.maxQueue) || options.maxQueue < 0) problems.push("maxQueue must be an integer ≥ 0");
  const memory = options.memoryLimitBytes;
  if (memory !== undefined && (!Number.isSafeInteger(memory) || memory < 64 * 1024))
    problems.push("memoryLimitBytes must be an integer ≥ 65536");
  const cache = options.compiledCacheSize;
  if (cache !== undefined && (!Number.isSafeInteger(cache) || cache < 1)) problems.push("compiledCacheSize must be an integer ≥ 1");
  if (problems.length > 0) throw new AuthNexusError("CONFIG_INVALID", { message: `Function pool options: ${problems.join("; ")}` });
}

export class FunctionPool {
  private readonly slots: Slot[] = [];
  private readonly queue: PendingCall[] = [];
  private readonly terminating = new Set<Promise<unknown>>();
  private readonly scheduler: Scheduler;
  private readonly clock: Clock;
  private readonly setup: WorkerSetup;
  private readonly memoryLimitBytes: number;
  private nextId = 1;
  private restarts = 0;
  private closing: Promise<void> | null = null;

  /** Starts `size` workers and resolves once all are ready; rejects (having stopped them) if one cannot start. */
  static async start(options: FunctionPoolOptions): Promise<FunctionPool> {
    checkOptions(options);
    const pool = new FunctionPool(options);
    try {
      await Promise.all(pool.slots.map((slot) => slot.ready));
    } catch (error) {
      await pool.close();
      throw error;
    }
    return pool;
  }

  private constructor(private readonly options: FunctionPoolOptions) {
    this.scheduler = options.scheduler ?? systemScheduler;
    this.clock = options.clock ?? this.scheduler.clock;
    this.memoryLimitBytes = options.memoryLimitBytes ?? DEFAULT_FUNCTION_MEMORY_LIMIT_BYTES;
    this.setup = { compiledCacheSize: options.compiledCacheSize ?? DEFAULT_COMPILED_CACHE_SIZE };
    for (let i = 0; i < options.size; i++) this.slots.push(this.newSlot());
  }

  stats(): FunctionPoolStats {
    const count = (state: SlotState) => this.slots.filter((slot) => slot.state === state).length;
    return { size: this.slots.length, idle: count("idle"), busy: count("busy"), queued: this.queue.length, restarts: this.restarts };
  }

  /**
   * Runs a cloud function. Rejects with VALIDATION_FAILED (bad params or variables, before
   * queueing), FUNCTION_BUSY (queue full or pool closing), FUNCTION_TIMEOUT, FUNCTION_ERROR,
   * FUNCTION_MEMORY_EXCEEDED, FUNCTION_RESULT_INVALID or FUNCTION_SYNTAX_ERROR.
   */
  call(request: FunctionCallRequest): Promise<FunctionCallResult> {
    return new Promise<FunctionCallResult>((resolve, reject) => {
      if (this.closing) throw poolClosed();
      const pending: PendingCall = { id: this.nextId++, name: request.name, call: this.encode(request), resolve, reject };
      const idle = this.slots.find((slot) => slot.state === "idle");
      if (idle) return this.dispatch(idle, pending);
      if (this.queue.length >= this.options.maxQueue) throw new AuthNexusError("FUNCTION_BUSY");
      this.queue.push(pending);
    });
  }

  private encode(request: FunctionCallRequest): EncodedLuaCall {
    const { timeoutMs } = request;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < MIN_CLOUD_FUNCTION_TIMEOUT_MS || timeoutMs > MAX_CLOUD_FUNCTION_TIMEOUT_MS) {
      throw fieldInvalid("timeoutMs", `must be an integer from ${MIN_CLOUD_FUNCTION_TIMEOUT_MS} to ${MAX_CLOUD_FUNCTION_TIMEOUT_MS}`);
    }
    const context = { ...request.context, server_time: request.context.server_time ?? this.clock.now() };
    return encodeLuaCall({ ...request, context, memoryLimitBytes: this.memoryLimitBytes });
  }

  private newSlot(): Slot {
    const slot: Slot = { worker: spawnWorker(this.setup), state: "starting", call: null, cancelTimer: noTimer, ready: Promise.resolve() };
    this.watch(slot);
    return slot;
  }

  /** Gives `slot` a fresh worker; events of the worker it had before are ignored from now on. */
  private launch(slot: Slot): void {
    Object.assign(slot, { worker: spawnWorker(this.setup), state: "starting", call: null, cancelTimer: noTimer });
    this.watch(slot);
  }

  private watch(slot: Slot): void {
    const worker = slot.worker;
    let markReady: () => void = () => {};
    let markFailed: (error: Error) => void = () => {};
    slot.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      markFailed = reject;
    });
    slot.ready.catch(() => {});
    worker.on("message", (reply: WorkerReply) => {
      if (slot.worker !== worker) return;
      if (reply.type === "ready") {
        slot.state = "idle";
        markReady();
        this.pump();
      } else this.onResult(slot, reply);
    });
    worker.on("error", (error) => {
      if (slot.worker === worker) this.onWorkerDied(slot, error, markFailed);
    });
    worker.on("exit", (code) => {
      if (slot.worker === worker) this.onWorkerDied(slot, new Error(`the worker exited with code ${code}`), markFailed);
    });
  }

  private dispatch(slot: Slot, pending: PendingCall): void {
    slot.state = "busy";
    slot.call = pending;
    slot.worker.postMessage({ type: "call", id: pending.id, call: pending.call } satisfies WorkerCall);
    slot.cancelTimer = this.scheduler.setTimer(pending.call.timeoutMs, () => this.onDeadline(slot, pending));
  }

  private pump(): void {
    for (const slot of this.slots) {
      if (slot.state !== "idle") continue;
      const next = this.queue.shift();
      if (!next) return;
      this.dispatch(slot, next);
    }
  }

  private onResult(slot: Slot, reply: Extract<WorkerReply, { type: "result" }>): void {
    const pending = slot.call;
    if (!pending || pending.id !== reply.id) return;
    slot.cancelTimer();
    // A reply while draining comes after the caller was told of the timeout: it only frees the worker.
    if (slot.state === "busy") this.settle(pending, reply);
    if (!reply.ok && reply.retire) this.replace(slot, "engine_failed");
    else {
      slot.call = null;
      slot.state = "idle";
      this.pump();
    }
  }

  private settle(pending: PendingCall, reply: Extract<WorkerReply, { type: "result" }>): void {
    if (reply.ok) pending.resolve(reply.result);
    else pending.reject(this.errorFrom(pending, reply));
  }

  private errorFrom(pending: PendingCall, reply: Extract<WorkerReply, { ok: false }>): AuthNexusError {
    if (reply.code === "FUNCTION_TIMEOUT") return this.timeoutError(pending);
    if (reply.code === "INTERNAL") this.options.log?.error("function.failed", { function: pending.name, error: reply.message });
    const detail = reply.publicDetail === undefined ? {} : { publicDetail: reply.publicDetail };
    return new AuthNexusError(reply.code, { message: reply.message, ...detail });
  }

  private timeoutError(pending: PendingCall): AuthNexusError {
    return new AuthNexusError("FUNCTION_TIMEOUT", {
      message: `The cloud function '${pending.name}' ran past its time limit of ${pending.call.timeoutMs} ms.`,
    });
  }

  /** The caller hears at the limit; the worker gets a short grace to report it from inside Lua. */
  private onDeadline(slot: Slot, pending: PendingCall): void {
    if (slot.call !== pending || slot.state !== "busy") return;
    pending.reject(this.timeoutError(pending));
    slot.state = "draining";
    slot.cancelTimer = this.scheduler.setTimer(this.options.timedOutWorkerGraceMs ?? TIMED_OUT_WORKER_GRACE_MS, () => {
      if (slot.call === pending) this.replace(slot, "timeout");
    });
  }

  private replace(slot: Slot, reason: "timeout" | "engine_failed" | "crashed"): void {
    this.options.log?.warn("function_worker.replaced", { reason, function: slot.call?.name });
    this.stopWorker(slot);
    if (this.closing) return;
    this.restarts++;
    this.launch(slot);
  }

  private stopWorker(slot: Slot): void {
    slot.cancelTimer();
    slot.state = "stopped";
    slot.call = null;
    const ended = slot.worker.terminate().catch(() => 0);
    this.terminating.add(ended);
    void ended.finally(() => this.terminating.delete(ended));
  }

  private onWorkerDied(slot: Slot, error: Error, markFailed: (error: Error) => void): void {
    if (slot.state === "stopped") return;
    const pending = slot.call;
    if (pending && slot.state === "busy") {
      this.options.log?.error("function_worker.crashed", { function: pending.name, error: error.message });
      pending.reject(new AuthNexusError("INTERNAL", { detail: { error: error.message }, cause: error }));
    }
    if (slot.state !== "starting") {
      this.replace(slot, "crashed");
      return;
    }
    this.options.log?.error("function_worker.start_failed", { error: error.message });
    markFailed(error);
    this.stopWorker(slot);
    if (this.closing) return;
    slot.cancelTimer = this.scheduler.setTimer(WORKER_RESTART_DELAY_MS, () => this.retryStart(slot), { background: true });
  }

  private retryStart(slot: Slot): void {
    if (this.closing || slot.state !== "stopped") return;
    this.restarts++;
    this.launch(slot);
  }

  /** Refuses queued and running calls with FUNCTION_BUSY and ends every worker; resolves when all have exited. */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    for (const pending of this.queue.splice(0)) pending.reject(poolClosed());
    for (const slot of this.slots) {
      const pending = slot.call;
      if (pending && slot.state === "busy") pending.reject(poolClosed());
      if (slot.state !== "stopped") this.stopWorker(slot);
      else slot.cancelTimer();
    }
    await Promise.all([...this.terminating]);
  }
}
