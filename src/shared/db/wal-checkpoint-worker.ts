/**
 * The worker thread behind wal-checkpointer.ts: one connection per registered SQLite file, and
 * a checkpoint whenever a file's WAL has grown past the threshold — SQLite's own automatic
 * policy, moved off the thread that serves requests.
 *
 * How far the WAL has grown is read with stat(), never by opening the -wal or -shm file: SQLite
 * locks those files with POSIX advisory locks, which belong to the process, and closing any
 * descriptor of a file drops every lock the process holds on it — other processes sharing the
 * database would then see no writer and no reader where there are some. The serving connection
 * sets `journal_size_limit` to the threshold, so each time the WAL restarts it is cut back to
 * that size, and a file larger than it holds more than a threshold's worth of new frames.
 *
 * Once started, a checkpoint drains: the writer restarts the WAL from its beginning only when it
 * finds every frame copied, so the worker repeats PASSIVE checkpoints (SQLite reports how many
 * frames the WAL holds and how many are copied) until they match. Stopping at the threshold
 * would leave the frames written meanwhile behind, and the WAL would grow without end.
 */
import fs from "node:fs";
import { parentPort } from "node:worker_threads";
import SqliteDatabase from "better-sqlite3";
import { type CancelTimer, every, systemScheduler } from "../time/index.js";

export type CheckpointerMessage =
  | { kind: "add"; path: string; thresholdBytes: number }
  | { kind: "remove"; path: string }
  | { kind: "checkpoint-now"; path: string; token: number };

export type CheckpointerReply =
  | { kind: "checkpointed"; path: string; walFrames: number; copiedFrames: number; ms: number }
  | { kind: "failed"; path: string; error: string }
  | { kind: "done"; token: number };

const POLL_INTERVAL_MS = 20;
const DRAIN_PASSES_PER_POLL = 8;

interface Watched {
  db: SqliteDatabase.Database;
  walPath: string;
  thresholdBytes: number;
  /** A checkpoint started and frames written meanwhile are still to be copied. */
  draining: boolean;
}

const watched = new Map<string, Watched>();
let stopPolling: CancelTimer | null = null;

function walBytes(walPath: string): number {
  try {
    return fs.statSync(walPath).size;
  } catch {
    return 0;
  }
}

/** One PASSIVE checkpoint: how many frames the WAL holds and how many are now copied. */
function checkpoint(path: string, entry: Watched): { walFrames: number; copiedFrames: number } | null {
  const started = performance.now();
  try {
    // PASSIVE: copies what no reader still needs, never waits for or blocks the writer.
    const [row] = entry.db.pragma("wal_checkpoint(PASSIVE)") as { busy: number; log: number; checkpointed: number }[];
    const walFrames = row?.log ?? 0;
    const copiedFrames = row?.checkpointed ?? 0;
    const ms = performance.now() - started;
    parentPort?.postMessage({ kind: "checkpointed", path, walFrames, copiedFrames, ms } satisfies CheckpointerReply);
    return { walFrames, copiedFrames };
  } catch (error) {
    parentPort?.postMessage({ kind: "failed", path, error: (error as Error).message } satisfies CheckpointerReply);
    return null;
  }
}

function poll(): void {
  for (const [path, entry] of watched) {
    if (!entry.draining && walBytes(entry.walPath) <= entry.thresholdBytes) continue;
    let copiedBefore = -1;
    entry.draining = false;
    for (let pass = 0; pass < DRAIN_PASSES_PER_POLL; pass += 1) {
      const result = checkpoint(path, entry);
      if (result === null || result.copiedFrames >= result.walFrames) break;
      // A reader still holds the rest (a long query, a backup): try again next poll, not now.
      entry.draining = true;
      if (result.copiedFrames === copiedBefore) break;
      copiedBefore = result.copiedFrames;
    }
  }
}

function add(path: string, thresholdBytes: number): void {
  if (watched.has(path)) return;
  try {
    const db = new SqliteDatabase(path, { fileMustExist: true });
    watched.set(path, { db, walPath: `${path}-wal`, thresholdBytes, draining: false });
    stopPolling ??= every(systemScheduler, POLL_INTERVAL_MS, poll);
  } catch (error) {
    parentPort?.postMessage({ kind: "failed", path, error: (error as Error).message } satisfies CheckpointerReply);
  }
}

function remove(path: string): void {
  const entry = watched.get(path);
  if (!entry) return;
  watched.delete(path);
  try {
    entry.db.close();
  } catch {
    // The file may be gone already; the connection is released either way.
  }
  if (watched.size === 0 && stopPolling) {
    stopPolling();
    stopPolling = null;
  }
}

parentPort?.on("message", (message: CheckpointerMessage) => {
  if (message.kind === "add") add(message.path, message.thresholdBytes);
  else if (message.kind === "remove") remove(message.path);
  else {
    const entry = watched.get(message.path);
    if (entry) checkpoint(message.path, entry);
    parentPort?.postMessage({ kind: "done", token: message.token } satisfies CheckpointerReply);
  }
});
