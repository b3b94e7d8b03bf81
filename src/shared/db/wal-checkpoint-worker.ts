/**
 * The worker thread behind wal-checkpointer.ts: one connection per registered SQLite file, and
 * a checkpoint whenever a file's WAL holds more un-checkpointed frames than the threshold —
 * SQLite's own automatic policy, moved off the thread that serves requests.
 *
 * How many frames wait is read from the wal-index (the `-shm` file), whose layout SQLite
 * documents (https://www.sqlite.org/walformat.html, "The WAL-Index Header"): mxFrame, the last
 * valid frame, at byte 16; nBackfill, the last frame copied into the database, at byte 96; both
 * 32-bit in the host's byte order. Reading them is a 100-byte pread; a checkpoint that finds
 * nothing to do is skipped. When the header cannot be read, a PASSIVE checkpoint runs every
 * FALLBACK_INTERVAL_MS instead.
 */
import fs from "node:fs";
import { parentPort } from "node:worker_threads";
import SqliteDatabase from "better-sqlite3";
import { type CancelTimer, every, systemClock, systemScheduler } from "../time/index.js";

export type CheckpointerMessage =
  | { kind: "add"; path: string; thresholdFrames: number }
  | { kind: "remove"; path: string }
  | { kind: "checkpoint-now"; path: string; token: number };

export type CheckpointerReply =
  | { kind: "checkpointed"; path: string; frames: number; ms: number }
  | { kind: "failed"; path: string; error: string }
  | { kind: "done"; token: number };

const POLL_INTERVAL_MS = 20;
const FALLBACK_INTERVAL_MS = 1000;
const DRAIN_PASSES_PER_POLL = 8;
const HEADER_BYTES = 100;
const MX_FRAME_OFFSET = 16;
const N_BACKFILL_OFFSET = 96;

interface Watched {
  db: SqliteDatabase.Database;
  shmPath: string;
  thresholdFrames: number;
  lastFallbackAt: number;
  /** A checkpoint started and frames written meanwhile are still to be copied. */
  draining: boolean;
}

const watched = new Map<string, Watched>();
const header = Buffer.alloc(HEADER_BYTES);
let stopPolling: CancelTimer | null = null;

function framesWaiting(shmPath: string): number | null {
  let fd: number | null = null;
  try {
    fd = fs.openSync(shmPath, "r");
    if (fs.readSync(fd, header, 0, HEADER_BYTES, 0) < HEADER_BYTES) return null;
    const little = header.readUInt32LE(0) === 3007000;
    const mxFrame = little ? header.readUInt32LE(MX_FRAME_OFFSET) : header.readUInt32BE(MX_FRAME_OFFSET);
    const nBackfill = little ? header.readUInt32LE(N_BACKFILL_OFFSET) : header.readUInt32BE(N_BACKFILL_OFFSET);
    return Math.max(0, mxFrame - nBackfill);
  } catch {
    return null;
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

function checkpoint(path: string, entry: Watched, frames: number): void {
  const started = performance.now();
  try {
    // PASSIVE: copies what no reader still needs, never waits for or blocks the writer.
    entry.db.pragma("wal_checkpoint(PASSIVE)");
    parentPort?.postMessage({ kind: "checkpointed", path, frames, ms: performance.now() - started } satisfies CheckpointerReply);
  } catch (error) {
    parentPort?.postMessage({ kind: "failed", path, error: (error as Error).message } satisfies CheckpointerReply);
  }
}

function poll(): void {
  const now = systemClock.now();
  for (const [path, entry] of watched) {
    let frames = framesWaiting(entry.shmPath);
    if (frames === null) {
      if (now - entry.lastFallbackAt < FALLBACK_INTERVAL_MS) continue;
      entry.lastFallbackAt = now;
      checkpoint(path, entry, -1);
      continue;
    }
    if (frames < entry.thresholdFrames && !entry.draining) continue;
    // Once started, drain: the writer restarts the WAL from its beginning only when it finds
    // every frame copied. Stopping at the threshold would leave the frames written during the
    // checkpoint behind, the WAL would never restart, and it would grow without end.
    for (let pass = 0; pass < DRAIN_PASSES_PER_POLL && frames !== null && frames > 0; pass += 1) {
      checkpoint(path, entry, frames);
      frames = framesWaiting(entry.shmPath);
    }
    entry.draining = frames !== null && frames > 0;
  }
}

function add(path: string, thresholdFrames: number): void {
  if (watched.has(path)) return;
  try {
    const db = new SqliteDatabase(path, { fileMustExist: true });
    watched.set(path, { db, shmPath: `${path}-shm`, thresholdFrames, lastFallbackAt: 0, draining: false });
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
  if (message.kind === "add") add(message.path, message.thresholdFrames);
  else if (message.kind === "remove") remove(message.path);
  else {
    const entry = watched.get(message.path);
    if (entry) checkpoint(message.path, entry, framesWaiting(entry.shmPath) ?? -1);
    parentPort?.postMessage({ kind: "done", token: message.token } satisfies CheckpointerReply);
  }
});
