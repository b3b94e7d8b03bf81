/**
 * Opens a Kysely instance on SQLite (better-sqlite3, WAL) or PostgreSQL (pg pool with connect,
 * statement and lock timeouts) and proves the connection works before returning.
 */
import fs from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { type Dialect, Kysely, PostgresDialect, SqliteDialect, sql } from "kysely";
import pg from "pg";
import { type DbOptions, describeDb, type PostgresOptions, type SqliteOptions } from "../config/db-options.js";
import { AuthNexusError } from "../errors/index.js";
import { withAuditChains } from "./audit-chains.js";
import {
  CHECKPOINT_THRESHOLD_FRAMES,
  type CheckpointEvents,
  checkpointInBackground,
  checkpointThresholdBytes,
} from "./wal-checkpointer.js";

// int8 (bigint) columns hold epoch-ms timestamps and sequence ids: well inside 2^53.
pg.types.setTypeParser(20, (value: string) => Number(value));

export interface OpenOptions {
  /**
   * SQLite: checkpoint the WAL from a worker thread instead of inside commits (wal-checkpointer.ts),
   * reporting to these callbacks. For long-running servers; absent, SQLite checkpoints itself.
   */
  backgroundCheckpoints?: CheckpointEvents;
}

/** What a database handle can tell about itself for metrics: its pool (PostgreSQL) and SQLITE_BUSY failures (SQLite). */
export interface DatabaseStats {
  dialect: "sqlite" | "postgres";
  /** PostgreSQL: connections open, idle, and queries waiting for one; null on SQLite. */
  pool: { total: number; idle: number; waiting: number } | null;
  /** SQLite: statements that failed with SQLITE_BUSY (or a BUSY extended code) since opening; 0 on PostgreSQL. */
  busyErrors: number;
}

const statsByDb = new WeakMap<object, () => DatabaseStats>();

/** The stats of a handle openDatabase returned; a handle opened elsewhere reports nothing observed. */
export function databaseStats(db: object): DatabaseStats {
  return statsByDb.get(db)?.() ?? { dialect: "sqlite", pool: null, busyErrors: 0 };
}

export async function openDatabase<Schema>(options: DbOptions, open: OpenOptions = {}): Promise<Kysely<Schema>> {
  let db: Kysely<Schema> | undefined;
  try {
    db = options.type === "sqlite" ? openSqlite<Schema>(options, open) : openPostgres<Schema>(options);
    await sql`select 1`.execute(db);
    return db;
  } catch (cause) {
    await db?.destroy().catch(() => undefined);
    throw new AuthNexusError("DB_UNAVAILABLE", {
      message: `cannot open database ${describeDb(options)}: ${(cause as Error).message}`,
      cause,
    });
  }
}

function openSqlite<Schema>(options: SqliteOptions, open: OpenOptions): Kysely<Schema> {
  fs.mkdirSync(path.dirname(options.path), { recursive: true, mode: 0o700 });
  // The file holds sealed keys and password hashes: owner-only from the first byte. SQLite's
  // -wal and -shm files inherit this mode.
  // Created here, never opened when it exists: closing a descriptor of an open SQLite file drops
  // every POSIX lock this process holds on it (another connection's, in the dev deployment).
  try {
    fs.closeSync(fs.openSync(options.path, "wx", 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  const database = new SqliteDatabase(options.path, { timeout: options.busyTimeoutMs });
  try {
    database.pragma("journal_mode = WAL");
    database.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
    database.pragma("synchronous = NORMAL");
    database.pragma("foreign_keys = ON");
    if (open.backgroundCheckpoints) {
      database.pragma("wal_autocheckpoint = 0");
      // Each WAL restart cuts the file back to the threshold: its size then tells the
      // checkpoint worker how much was written since (wal-checkpoint-worker.ts).
      database.pragma(`journal_size_limit = ${thresholdBytesOf(database)}`);
    }
  } catch (error) {
    database.close();
    throw error;
  }
  const stopCheckpoints = open.backgroundCheckpoints
    ? checkpointInBackground(options.path, thresholdBytesOf(database), withFallback(database, open.backgroundCheckpoints))
    : () => {};
  const busy = { errors: 0 };
  const db = withChains<Schema>(new SqliteDialect({ database: withStatementCache(database, stopCheckpoints, busy) }));
  statsByDb.set(db, () => ({ dialect: "sqlite", pool: null, busyErrors: busy.errors }));
  return db;
}

/**
 * When the worker cannot checkpoint the file, the serving connection goes back to SQLite's own
 * automatic checkpoints: a WAL nobody checkpoints would grow until the disk is full.
 */
function withFallback(database: SqliteDatabase.Database, events: CheckpointEvents): CheckpointEvents {
  return {
    ...events,
    failed: (event) => {
      if (database.open) database.pragma(`wal_autocheckpoint = ${CHECKPOINT_THRESHOLD_FRAMES}`);
      events.failed?.(event);
    },
  };
}

function thresholdBytesOf(database: SqliteDatabase.Database): number {
  return checkpointThresholdBytes(Number(database.pragma("page_size", { simple: true })));
}

/** Distinct SQL texts kept prepared; the application has a few hundred at most. */
const STATEMENT_CACHE_SIZE = 1000;

/**
 * Kysely's SQLite driver prepares every query anew, and on the hot paths (node checkins,
 * identity checks) preparing costs more than running. Statements are reusable in
 * better-sqlite3 (it is synchronous), except one still being iterated, which gets a fresh one.
 */
function withStatementCache(database: SqliteDatabase.Database, onClose: () => void, busy: { errors: number }): SqliteDatabase.Database {
  const cache = new Map<string, SqliteDatabase.Statement>();
  const prepare = (source: string): SqliteDatabase.Statement => {
    const cached = cache.get(source);
    if (cached && !cached.busy) return cached;
    const statement = countingBusy(database.prepare(source), busy);
    if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
    cache.set(source, statement);
    return statement;
  };
  const close = () => {
    onClose();
    return database.close();
  };
  return new Proxy(database, {
    get(target, property, receiver) {
      if (property === "prepare") return prepare;
      if (property === "close") return close;
      const value = Reflect.get(target, property, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/**
 * The statement as Kysely's SQLite driver uses it (reader, all, run, iterate), counting
 * SQLITE_BUSY failures for metrics: made once per prepared statement, so a query pays one more
 * call and nothing else.
 */
function countingBusy(statement: SqliteDatabase.Statement, busy: { errors: number }): SqliteDatabase.Statement {
  const noteBusy = (error: unknown) => {
    if (String((error as { code?: unknown }).code).startsWith("SQLITE_BUSY")) busy.errors += 1;
    return error;
  };
  const counted = {
    reader: statement.reader,
    get busy() {
      return statement.busy;
    },
    all(parameters: unknown) {
      try {
        return statement.all(parameters);
      } catch (error) {
        throw noteBusy(error);
      }
    },
    run(parameters: unknown) {
      try {
        return statement.run(parameters);
      } catch (error) {
        throw noteBusy(error);
      }
    },
    iterate(parameters: unknown) {
      try {
        return statement.iterate(parameters);
      } catch (error) {
        throw noteBusy(error);
      }
    },
  };
  return counted as unknown as SqliteDatabase.Statement;
}

function openPostgres<Schema>(options: PostgresOptions): Kysely<Schema> {
  const pool = new pg.Pool({
    host: options.host,
    port: options.port,
    user: options.user,
    password: options.password,
    database: options.database,
    max: options.poolSize,
    connectionTimeoutMillis: options.connectTimeoutS * 1000,
    statement_timeout: options.statementTimeoutMs,
    lock_timeout: options.lockTimeoutMs,
    // A transaction left open by a crashed request must not hold locks forever.
    idle_in_transaction_session_timeout: Math.max(options.statementTimeoutMs, 60_000),
    application_name: "authnexus",
  });
  // An idle client that loses its server must not crash the process; the next query reports it.
  pool.on("error", () => undefined);
  // Nor may a client that loses it while checked out between two queries of a request: it emits
  // "error" with no listener of the pool's attached (the request's own query still rejects).
  pool.on("connect", (client) => client.on("error", () => undefined));
  const db = withChains<Schema>(new PostgresDialect({ pool }));
  statsByDb.set(db, () => ({
    dialect: "postgres",
    pool: { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount },
    busyErrors: 0,
  }));
  return db;
}

/** Every database can carry audit hash chains (audit-chains.ts): its driver reports transactions to them. */
function withChains<Schema>(dialect: Dialect): Kysely<Schema> {
  const chained = withAuditChains(dialect);
  const db = new Kysely<Schema>({ dialect: chained.dialect });
  chained.attach(db);
  return db;
}
