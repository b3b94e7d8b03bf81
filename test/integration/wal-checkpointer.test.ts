/**
 * SQLite WAL checkpoints off the serving thread (src/shared/db/wal-checkpointer.ts): a server's
 * connection never checkpoints inside a commit, the worker checkpoints once the WAL holds the
 * threshold's worth of frames and drains it, the WAL is cut back when it restarts, two registrations of one file (a CP and a node in one process)
 * keep it watched until both are gone, and the data survives a reopen.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import SqliteDatabase from "better-sqlite3";
import { type Kysely, sql } from "kysely";
import type { SqliteOptions } from "../../src/shared/config/db-options.js";
import { openDatabase } from "../../src/shared/db/index.js";
import {
  CHECKPOINT_THRESHOLD_FRAMES,
  checkpointInBackground,
  checkpointNow,
  checkpointThresholdBytes,
} from "../../src/shared/db/wal-checkpointer.js";

const dir = mkdtempSync(join(tmpdir(), "authnexus-wal-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const sqlite = (name: string): SqliteOptions => ({ type: "sqlite", path: join(dir, name), busyTimeoutMs: 5000 });

/** The WAL file's size: read with stat(), never by opening the file (see wal-checkpoint-worker.ts). */
function walBytes(path: string): number {
  try {
    return statSync(`${path}-wal`).size;
  } catch {
    return 0;
  }
}

async function writeRows(db: Kysely<any>, rows: number): Promise<void> {
  await sql`create table if not exists t (id integer primary key, v blob)`.execute(db);
  // One commit per row, each touching a fresh page: ~1 WAL frame (or more) per commit.
  for (let i = 0; i < rows; i += 1) await sql`insert into t (v) values (randomblob(3000))`.execute(db);
}

function events() {
  const checkpoints: { walFrames: number; copiedFrames: number; ms: number }[] = [];
  let notify: () => void = () => {};
  // The worker is unref'd (it never keeps a process alive): a timer keeps this test's loop up
  // while it waits for the worker's report.
  const next = () =>
    new Promise<void>((resolve) => {
      const keepAlive = setInterval(() => {}, 1000);
      notify = () => {
        clearInterval(keepAlive);
        resolve();
      };
    });
  return {
    checkpoints,
    next,
    handlers: {
      checkpointed: (event: { walFrames: number; copiedFrames: number; ms: number }) => {
        checkpoints.push(event);
        notify();
      },
      failed: (event: { error: string }) => assert.fail(`checkpoint failed: ${event.error}`),
    },
  };
}

test("a server connection leaves checkpoints to the worker, which runs one at the threshold", async () => {
  const options = sqlite("server.db");
  const seen = events();
  const db = await openDatabase(options, { backgroundCheckpoints: seen.handlers });
  try {
    const [setting] = (await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(db)).rows;
    assert.equal(setting?.wal_autocheckpoint, 0, "the serving connection never checkpoints inside a commit");
    const checkpointed = seen.next();
    await writeRows(db, CHECKPOINT_THRESHOLD_FRAMES + 200);
    await checkpointed;
    const first = seen.checkpoints[0];
    assert.ok(first && first.walFrames >= CHECKPOINT_THRESHOLD_FRAMES, `checkpointed at ${first?.walFrames} frames`);
    await checkpointNow(options.path);
    const last = seen.checkpoints.at(-1);
    assert.ok(last && last.copiedFrames === last.walFrames, "after a checkpoint every frame is copied");
    // The serving connection cut the WAL back to the threshold when it restarted it.
    await sql`insert into t (v) values (randomblob(10))`.execute(db);
    assert.ok(walBytes(options.path) <= checkpointThresholdBytes(4096), `WAL of ${walBytes(options.path)} bytes after a restart`);
  } finally {
    await db.destroy();
  }
  const reopened = new SqliteDatabase(options.path, { fileMustExist: true });
  try {
    assert.equal((reopened.prepare("select count(*) as n from t").get() as { n: number }).n, CHECKPOINT_THRESHOLD_FRAMES + 201);
    assert.equal((reopened.pragma("integrity_check") as { integrity_check: string }[])[0]?.integrity_check, "ok");
  } finally {
    reopened.close();
  }
});

test("below the threshold nothing is checkpointed", async () => {
  const options = sqlite("quiet.db");
  const seen = events();
  const db = await openDatabase(options, { backgroundCheckpoints: seen.handlers });
  try {
    await writeRows(db, 50);
    // The worker polls every 20 ms: a round trip through it is later than the next poll's look.
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(seen.checkpoints, []);
    assert.ok(walBytes(options.path) > 0, "the frames wait in the WAL");
  } finally {
    await db.destroy();
  }
});

test("a file opened twice stays watched until both connections are closed", async () => {
  const options = sqlite("shared.db");
  const first = events();
  const second = events();
  const a = await openDatabase(options, { backgroundCheckpoints: first.handlers });
  const b = await openDatabase(options, { backgroundCheckpoints: second.handlers });
  await a.destroy();
  try {
    const checkpointed = second.next();
    await writeRows(b, CHECKPOINT_THRESHOLD_FRAMES + 100);
    await checkpointed;
    assert.ok(second.checkpoints.length >= 1);
    assert.equal(first.checkpoints.length, 0, "a closed registration hears nothing");
  } finally {
    await b.destroy();
  }
});

test("without the option SQLite checkpoints by itself, as before", async () => {
  const db = await openDatabase(sqlite("plain.db"));
  try {
    const [setting] = (await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(db)).rows;
    assert.equal(setting?.wal_autocheckpoint, 1000);
  } finally {
    await db.destroy();
  }
});

test("a file the worker cannot open is reported failed (the serving connection then checkpoints by itself)", async () => {
  const seen = await new Promise<{ path: string; error: string }>((resolve) => {
    const keepAlive = setInterval(() => {}, 1000);
    const stop = checkpointInBackground(join(dir, "missing", "never.db"), checkpointThresholdBytes(4096), {
      failed: (event) => {
        clearInterval(keepAlive);
        stop();
        resolve(event);
      },
    });
  });
  assert.match(seen.error, /unable to open|does not exist|directory/i);
});
