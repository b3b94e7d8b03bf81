/**
 * The database variants every repository-level suite runs on: SQLite always, and the real
 * PostgreSQL that test/run-tests.ts started (skipped, visibly, when a run has none).
 */
import path from "node:path";
import type { DbOptions } from "../../src/shared/config/db-options.js";
import { connectionFromEnv, type PostgresConnection, uniqueDatabaseName } from "./postgres.js";
import { makeTempDir } from "./temp-dir.js";

export interface DbVariant {
  name: "sqlite" | "postgres";
  /** A reason to skip, or false. */
  skip: string | false;
  /** A fresh, empty database; dropped or deleted by cleanup(). */
  fresh(label: string): Promise<DbOptions>;
  cleanup(): Promise<void>;
}

export function dbVariants(): DbVariant[] {
  return [sqliteVariant(), postgresVariant()];
}

function sqliteVariant(): DbVariant {
  const cleanups: Array<() => Promise<void>> = [];
  return {
    name: "sqlite",
    skip: false,
    async fresh(label) {
      const dir = await makeTempDir(`authnexus-db-${label}`);
      cleanups.push(dir.cleanup);
      return { type: "sqlite", path: path.join(dir.path, `${label}.db`), busyTimeoutMs: 5000 };
    },
    async cleanup() {
      await Promise.all(cleanups.splice(0).map((c) => c()));
    },
  };
}

/** PostgreSQL: the run's shared server, or `connection` (a server a suite started for itself). */
export function postgresVariant(connection: PostgresConnection | null = connectionFromEnv()): DbVariant {
  const created: string[] = [];
  return {
    name: "postgres",
    skip: connection ? false : "no PostgreSQL in this run (AUTHNEXUS_TEST_PG_HOST unset)",
    async fresh(label) {
      if (!connection) throw new Error("no PostgreSQL in this run");
      const name = uniqueDatabaseName(label.replace(/[^a-z0-9_]/g, "_"));
      await connection.createDatabase(name);
      created.push(name);
      const url = new URL(connection.url(name));
      return {
        type: "postgres",
        host: url.hostname,
        port: Number(url.port),
        user: decodeURIComponent(url.username),
        password: url.password ? decodeURIComponent(url.password) : undefined,
        database: name,
        connectTimeoutS: 5,
        statementTimeoutMs: 15000,
        lockTimeoutMs: 5000,
        poolSize: 5,
      };
    },
    async cleanup() {
      if (!connection) return;
      for (const name of created.splice(0)) await connection.dropDatabase(name);
    },
  };
}

/** The serve-cp / serve-node flags that select `options` (`prefix` "runtime-" for serve-cp's Runtime DB). */
export function dbFlags(prefix: "" | "runtime-", options: DbOptions): string[] {
  if (options.type === "sqlite") return [`--${prefix}db-type`, "sqlite", `--${prefix}db-path`, options.path];
  return [
    `--${prefix}db-type`,
    "postgres",
    `--${prefix}db-host`,
    options.host,
    `--${prefix}db-port`,
    String(options.port),
    `--${prefix}db-user`,
    options.user,
    `--${prefix}db-name`,
    options.database,
  ];
}

/** The same flags as a parsed-flags record (kebab-case keys), for resolve*Config in process. */
export function dbFlagRecord(prefix: "" | "runtime-", options: DbOptions): Record<string, string> {
  const args = dbFlags(prefix, options);
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) out[(args[i] as string).replace(/^--/, "")] = args[i + 1] as string;
  return out;
}
