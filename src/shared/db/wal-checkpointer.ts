/**
 * WAL checkpoints off the serving thread. better-sqlite3 runs on the thread that serves
 * requests, and SQLite's automatic checkpoint runs inside whichever commit pushes the WAL past
 * 1,000 frames: three fsyncs, ~6 ms on this class of disk, during which every request on that
 * thread waits (it was the whole p99 of token logins and, at the same time, of heartbeats).
 * A long-running server instead turns the automatic checkpoint off on its connection and
 * registers the file here: one worker thread per process, with its own connection per file,
 * checkpoints at the same threshold (wal-checkpoint-worker.ts). The worker is unref'd: it never
 * keeps a process alive.
 */
import path from "node:path";
import type { Worker } from "node:worker_threads";
import { siblingModule, startWorker } from "../threads/start-worker.js";
import type { CheckpointerMessage, CheckpointerReply } from "./wal-checkpoint-worker.js";

/** SQLite's own default for wal_autocheckpoint, in frames. */
export const CHECKPOINT_THRESHOLD_FRAMES = 1000;

/**
 * The threshold as a WAL file size for a database of `pageSize` pages (a 32-byte header, then
 * frames of a 24-byte header and a page). The serving connection's journal_size_limit.
 */
export function checkpointThresholdBytes(pageSize: number): number {
  return 32 + CHECKPOINT_THRESHOLD_FRAMES * (24 + pageSize);
}

export interface CheckpointEvents {
  /** A PASSIVE checkpoint ran: the WAL held `walFrames`, of which `copiedFrames` are now in the database. */
  checkpointed?: (event: { path: string; walFrames: number; copiedFrames: number; ms: number }) => void;
  failed?: (event: { path: string; error: string }) => void;
}

/** A worker that exits sooner than this after starting is not started again. */
const WORKER_MIN_LIFETIME_MS = 5000;

let worker: Worker | null = null;
/** File → the registrations watching it (a CP and a node in one process share a Runtime DB file). */
const listeners = new Map<string, Set<CheckpointEvents>>();
/** File → its threshold in bytes, to register it again with a replacement worker. */
const thresholds = new Map<string, number>();
const waiting = new Map<number, () => void>();
let nextToken = 0;

function ensureWorker(): Worker {
  if (worker) return worker;
  const started = startWorker(siblingModule(import.meta.url, "wal-checkpoint-worker"));
  started.on("message", (reply: CheckpointerReply) => {
    if (reply.kind === "done") {
      waiting.get(reply.token)?.();
      waiting.delete(reply.token);
    } else if (reply.kind === "checkpointed") for (const events of listeners.get(reply.path) ?? []) events.checkpointed?.(reply);
    else report(reply.path, reply.error);
  });
  const startedAt = performance.now();
  // A worker that died (out of memory, a native crash) is replaced and its files registered
  // again — unless it died straight after starting, which another start would only repeat:
  // then every file is reported failed, and its serving connection checkpoints by itself.
  started.on("exit", (code) => {
    if (worker !== started) return;
    worker = null;
    for (const done of waiting.values()) done();
    waiting.clear();
    if (listeners.size === 0) return;
    if (performance.now() - startedAt < WORKER_MIN_LIFETIME_MS) {
      for (const watchedPath of [...listeners.keys()]) report(watchedPath, `the checkpoint worker exited at start (code ${code})`);
      return;
    }
    const replacement = ensureWorker();
    for (const [watchedPath, thresholdBytes] of thresholds) post(replacement, { kind: "add", path: watchedPath, thresholdBytes });
  });
  started.on("error", () => undefined);
  // After the listeners: attaching a message listener references the worker's port again.
  started.unref();
  worker = started;
  return started;
}

function report(path: string, error: string): void {
  for (const events of listeners.get(path) ?? []) events.failed?.({ path, error });
}

function post(target: Worker, message: CheckpointerMessage): void {
  target.postMessage(message);
}

/**
 * Watches `file` (an open SQLite database in WAL mode whose own connection has
 * wal_autocheckpoint = 0) until the returned function is called.
 */
export function checkpointInBackground(file: string, thresholdBytes: number, events: CheckpointEvents = {}): () => void {
  const absolute = path.resolve(file);
  const registration = { ...events };
  const registrations = listeners.get(absolute) ?? new Set();
  registrations.add(registration);
  listeners.set(absolute, registrations);
  thresholds.set(absolute, thresholdBytes);
  if (registrations.size === 1) post(ensureWorker(), { kind: "add", path: absolute, thresholdBytes });
  return () => {
    if (!registrations.delete(registration) || registrations.size > 0 || listeners.get(absolute) !== registrations) return;
    listeners.delete(absolute);
    thresholds.delete(absolute);
    if (worker) post(worker, { kind: "remove", path: absolute });
  };
}

/** Runs one checkpoint of `file` in the worker now and resolves when it has (tests, maintenance). */
export function checkpointNow(file: string): Promise<void> {
  const target = worker;
  if (!target) return Promise.resolve();
  const token = ++nextToken;
  // Referenced while a caller waits, so the process does not exit under it.
  target.ref();
  return new Promise((resolve) => {
    waiting.set(token, () => {
      if (waiting.size <= 1) target.unref();
      resolve();
    });
    post(target, { kind: "checkpoint-now", path: path.resolve(file), token });
  });
}
