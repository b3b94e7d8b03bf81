/**
 * Group commit: small write transactions that arrive together commit together.
 *
 * On SQLite every write goes through one connection, one transaction at a time, and a commit
 * costs far more than the statements in it (the WAL frames of every page touched, their
 * checksums, the b-tree pages each commit rewrites): a password login's five statements took
 * ~170 µs of CPU in a transaction of their own and ~60 µs when twenty logins shared one. So a
 * unit of work asked for while others are waiting joins them: all the units queued by the time
 * the event loop comes round (atEndOfTurn) run in one transaction, each inside a SAVEPOINT of
 * its own, so a unit that throws — a refusal decided inside it, a unique violation — undoes only
 * its own writes and rejects only its own caller. Callers are answered after the COMMIT, so
 * nothing is acknowledged before it is committed (as durable as the connection's `synchronous`
 * setting makes a commit: with NORMAL, a process crash loses nothing, a power cut may lose the
 * last commits). If SQLite undoes the whole transaction while a unit runs (disk full, an I/O
 * error), that unit gets its error and the others of the batch run once more in the next one;
 * if the COMMIT fails, every unit of the batch rejects with its error.
 *
 * On PostgreSQL, where transactions run side by side on a pool and each waits on its own round
 * trips, every unit keeps a transaction of its own.
 */
import { CompiledQuery, type Kysely } from "kysely";
import { atEndOfTurn } from "../time/index.js";
import { openRawTransaction, type RawTransaction } from "./audit-chains.js";
import { dialectOf } from "./dialect.js";

/** Writes run in a transaction, which may be shared with other units. */
export type WriteUnit<Schema, T> = (trx: Kysely<Schema>) => Promise<T>;

export interface GroupCommit<Schema> {
  run<T>(unit: WriteUnit<Schema, T>): Promise<T>;
}

/** Units per transaction at most: a batch holds the connection, and reads wait behind it. */
export const GROUP_COMMIT_MAX_UNITS = 64;

export interface GroupCommitOptions {
  /** Told the number of units of each SQLite transaction as it starts (metrics). */
  onBatch?: (units: number) => void;
}

export function groupCommit<Schema>(db: Kysely<Schema>, options: GroupCommitOptions = {}): GroupCommit<Schema> {
  if (dialectOf(db) === "postgres") return { run: (unit) => db.transaction().execute(unit) };
  return new SqliteGroupCommit(db, options.onBatch);
}

interface Queued<Schema> {
  unit: WriteUnit<Schema, unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  /** Already sent back once because another unit's failure undid its batch. */
  requeued: boolean;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * SQLite undid the whole transaction while running `unit` (disk full, an I/O error, out of
 * memory), so its savepoint is gone with the other units' writes.
 */
class BatchAborted extends Error {
  constructor(
    readonly unitIndex: number,
    readonly original: unknown,
  ) {
    super("the batch's transaction was rolled back by SQLite");
  }
}

// IMMEDIATE: the write lock is taken at BEGIN, so a unit that reads before it writes cannot
// find its snapshot overtaken by another process's commit (SQLITE_BUSY_SNAPSHOT), which a
// savepoint rollback would not cure for the units after it.
const BEGIN_IMMEDIATE = CompiledQuery.raw("begin immediate");
const COMMIT = CompiledQuery.raw("commit");
const ROLLBACK = CompiledQuery.raw("rollback");
const SAVEPOINT = CompiledQuery.raw("savepoint unit");
const RELEASE = CompiledQuery.raw("release unit");
const ROLLBACK_TO = CompiledQuery.raw("rollback to unit");

class SqliteGroupCommit<Schema> implements GroupCommit<Schema> {
  private queue: Queued<Schema>[] = [];
  private scheduled = false;

  constructor(
    private readonly db: Kysely<Schema>,
    private readonly onBatch?: (units: number) => void,
  ) {}

  run<T>(unit: WriteUnit<Schema, T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ unit, resolve: resolve as (value: unknown) => void, reject, requeued: false });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    atEndOfTurn(() => {
      this.scheduled = false;
      const batch = this.queue.splice(0, GROUP_COMMIT_MAX_UNITS);
      if (this.queue.length > 0) this.schedule();
      this.onBatch?.(batch.length);
      void this.commit(batch);
    });
  }

  private async commit(batch: Queued<Schema>[]): Promise<void> {
    let outcomes: Outcome[];
    try {
      outcomes = await this.db.connection().execute((conn) => runBatch(conn, batch));
    } catch (error) {
      if (error instanceof BatchAborted) return this.recover(batch, error);
      for (const queued of batch) queued.reject(error);
      return;
    }
    batch.forEach((queued, i) => {
      const outcome = outcomes[i] as Outcome;
      if (outcome.ok) queued.resolve(outcome.value);
      else queued.reject(outcome.error);
    });
  }

  /** The unit that failed gets its own error; the others, undone with it, go round once more. */
  private recover(batch: Queued<Schema>[], aborted: BatchAborted): void {
    for (const [i, queued] of batch.entries()) {
      // A unit undone twice gives up with the error that undid it (the disk is still full).
      if (i === aborted.unitIndex || queued.requeued) {
        queued.reject(aborted.original);
        continue;
      }
      queued.requeued = true;
      this.queue.push(queued);
    }
    if (this.queue.length > 0) this.schedule();
  }
}

/**
 * Audit-chained rows the units write (login-log rows) wait with the batch and are sent just
 * before its COMMIT (shared/db/audit-chains.ts): chain order is commit order, and a unit rolled
 * back to its savepoint takes its rows with it before they had a number.
 */
async function runBatch<Schema>(conn: Kysely<Schema>, batch: Queued<Schema>[]): Promise<Outcome[]> {
  await conn.executeQuery(BEGIN_IMMEDIATE);
  const chained = await openRawTransaction(conn);
  try {
    const outcomes: Outcome[] = [];
    for (const [i, queued] of batch.entries()) outcomes.push(await runInSavepoint(conn, queued.unit, i, chained));
    if (chained) await chained.commit(async () => void (await conn.executeQuery(COMMIT)));
    else await conn.executeQuery(COMMIT);
    return outcomes;
  } catch (error) {
    // Nothing to roll back when SQLite already did (BatchAborted, or a COMMIT it undid).
    await conn.executeQuery(ROLLBACK).catch(() => undefined);
    throw error;
  } finally {
    chained?.close();
  }
}

async function runInSavepoint<Schema>(
  conn: Kysely<Schema>,
  unit: WriteUnit<Schema, unknown>,
  index: number,
  chained: RawTransaction | null,
): Promise<Outcome> {
  await conn.executeQuery(SAVEPOINT);
  chained?.mark("unit");
  try {
    const value = await unit(conn);
    await conn.executeQuery(RELEASE);
    chained?.release("unit");
    return { ok: true, value };
  } catch (error) {
    chained?.rewind("unit");
    try {
      await conn.executeQuery(ROLLBACK_TO);
      await conn.executeQuery(RELEASE);
    } catch {
      throw new BatchAborted(index, error);
    }
    return { ok: false, error };
  }
}
