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
 * nothing is acknowledged before it is durable; if the COMMIT fails, every unit of the batch
 * rejects with its error.
 *
 * On PostgreSQL, where transactions run side by side on a pool and each waits on its own round
 * trips, every unit keeps a transaction of its own.
 */
import { CompiledQuery, type Kysely, type Transaction } from "kysely";
import { atEndOfTurn } from "../time/index.js";
import { dialectOf } from "./dialect.js";

/** Writes run in a transaction, which may be shared with other units. */
export type WriteUnit<Schema, T> = (trx: Transaction<Schema>) => Promise<T>;

export interface GroupCommit<Schema> {
  run<T>(unit: WriteUnit<Schema, T>): Promise<T>;
}

/** Units per transaction at most: a batch holds the connection, and reads wait behind it. */
export const GROUP_COMMIT_MAX_UNITS = 64;

export function groupCommit<Schema>(db: Kysely<Schema>): GroupCommit<Schema> {
  if (dialectOf(db) === "postgres") return { run: (unit) => db.transaction().execute(unit) };
  return new SqliteGroupCommit(db);
}

interface Queued<Schema> {
  unit: WriteUnit<Schema, unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

class SqliteGroupCommit<Schema> implements GroupCommit<Schema> {
  private queue: Queued<Schema>[] = [];
  private scheduled = false;

  constructor(private readonly db: Kysely<Schema>) {}

  run<T>(unit: WriteUnit<Schema, T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ unit, resolve: resolve as (value: unknown) => void, reject });
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
      void this.commit(batch);
    });
  }

  private async commit(batch: Queued<Schema>[]): Promise<void> {
    let outcomes: Outcome[];
    try {
      outcomes = await this.db.transaction().execute(async (trx) => {
        const results: Outcome[] = [];
        for (const queued of batch) results.push(await runInSavepoint(trx, queued.unit));
        return results;
      });
    } catch (error) {
      for (const queued of batch) queued.reject(error);
      return;
    }
    batch.forEach((queued, i) => {
      const outcome = outcomes[i] as Outcome;
      if (outcome.ok) queued.resolve(outcome.value);
      else queued.reject(outcome.error);
    });
  }
}

const SAVEPOINT = CompiledQuery.raw("savepoint unit");
const RELEASE = CompiledQuery.raw("release unit");
const ROLLBACK_TO = CompiledQuery.raw("rollback to unit");

async function runInSavepoint<Schema>(trx: Transaction<Schema>, unit: WriteUnit<Schema, unknown>): Promise<Outcome> {
  await trx.executeQuery(SAVEPOINT);
  try {
    const value = await unit(trx);
    await trx.executeQuery(RELEASE);
    return { ok: true, value };
  } catch (error) {
    await trx.executeQuery(ROLLBACK_TO);
    await trx.executeQuery(RELEASE);
    return { ok: false, error };
  }
}
