/**
 * Database options from flags and AUTHNEXUS_* environment variables. The same flag set names
 * the Control DB (no prefix) and, on serve-cp, the Runtime DB (`--runtime-` prefix).
 */
import path from "node:path";
import {
  DEFAULT_DB_CONNECT_TIMEOUT_S,
  DEFAULT_DB_LOCK_TIMEOUT_MS,
  DEFAULT_DB_POOL_SIZE,
  DEFAULT_DB_STATEMENT_TIMEOUT_MS,
  DEFAULT_PG_PORT,
  DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
} from "./defaults.js";

export interface SqliteOptions {
  type: "sqlite";
  path: string;
  busyTimeoutMs: number;
}

export interface PostgresOptions {
  type: "postgres";
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  database: string;
  connectTimeoutS: number;
  statementTimeoutMs: number;
  lockTimeoutMs: number;
  poolSize: number;
}

export type DbOptions = SqliteOptions | PostgresOptions;

/** Raw option values keyed by flag name without dashes or prefix (e.g. "db-type"). */
export type RawDbValues = Partial<Record<DbFlag, string>>;

export const DB_FLAGS = [
  "db-type",
  "db-path",
  "db-host",
  "db-port",
  "db-user",
  "db-pass",
  "db-name",
  "sqlite-busy-timeout",
  "db-connect-timeout",
  "db-statement-timeout",
  "db-lock-timeout",
] as const;
export type DbFlag = (typeof DB_FLAGS)[number];

export interface ResolveDbInput {
  values: RawDbValues;
  /** "" for the Control DB / a node's Runtime DB, "runtime-" for serve-cp's Runtime DB. */
  prefix: "" | "runtime-";
  dataDir: string;
  defaultSqliteFile: string;
  defaultPgDatabase: string;
}

/** Resolves options, collecting every problem instead of stopping at the first. */
export function resolveDbOptions(input: ResolveDbInput, problems: string[]): DbOptions {
  const { values, prefix } = input;
  const flag = (name: DbFlag) => `--${prefix}${name}`;
  const type = values["db-type"] ?? "sqlite";
  if (type !== "sqlite" && type !== "postgres") problems.push(`${flag("db-type")} must be sqlite or postgres, got "${type}"`);

  const int = (name: DbFlag, fallback: number, min: number, max: number): number => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`${flag(name)} must be an integer from ${min} to ${max}, got "${raw}"`);
      return fallback;
    }
    return n;
  };

  if (type === "postgres") {
    const host = values["db-host"] ?? "127.0.0.1";
    return {
      type: "postgres",
      host,
      port: int("db-port", DEFAULT_PG_PORT, 1, 65535),
      user: values["db-user"] ?? "authnexus",
      password: values["db-pass"],
      database: values["db-name"] ?? input.defaultPgDatabase,
      connectTimeoutS: int("db-connect-timeout", DEFAULT_DB_CONNECT_TIMEOUT_S, 1, 600),
      statementTimeoutMs: int("db-statement-timeout", DEFAULT_DB_STATEMENT_TIMEOUT_MS, 0, 3_600_000),
      lockTimeoutMs: int("db-lock-timeout", DEFAULT_DB_LOCK_TIMEOUT_MS, 0, 3_600_000),
      poolSize: DEFAULT_DB_POOL_SIZE,
    };
  }
  return {
    type: "sqlite",
    path: path.resolve(input.dataDir, values["db-path"] ?? input.defaultSqliteFile),
    busyTimeoutMs: int("sqlite-busy-timeout", DEFAULT_SQLITE_BUSY_TIMEOUT_MS, 0, 600_000),
  };
}

/** A human-readable location for logs and errors; never includes the password. */
export function describeDb(options: DbOptions): string {
  return options.type === "sqlite"
    ? `sqlite:${options.path}`
    : `postgres://${options.user}@${options.host}:${options.port}/${options.database}`;
}

/** True when two option sets point at the same physical database. */
export function sameDatabase(a: DbOptions, b: DbOptions): boolean {
  if (a.type === "sqlite" && b.type === "sqlite") return a.path === b.path;
  if (a.type === "postgres" && b.type === "postgres") {
    return a.host === b.host && a.port === b.port && a.database === b.database;
  }
  return false;
}
