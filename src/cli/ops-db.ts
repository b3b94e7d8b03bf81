/**
 * `ops db backup|vacuum|checkpoint|migrate|status`: maintenance of the Control DB
 * (`--db control`, named by the plain DB flags) or the Runtime DB (`--db runtime`, named by the
 * `--runtime-` DB flags), exactly as serve-cp reads them (same defaults under --data-dir, same
 * AUTHNEXUS_* variables), so the flags a CP runs with name the same databases here. Each command
 * first reads the migration tables and refuses a database that belongs to the other role
 * (DB_MIGRATION_MISMATCH), and opens an SQLite file only when it exists.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import type { Command } from "commander";
import { type Kysely, sql } from "kysely";
import { controlMigrationSet } from "../../migrations/control/index.js";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import {
  DB_FLAGS,
  type DbOptions,
  describeDb,
  type PostgresOptions,
  type RawDbValues,
  resolveDbOptions,
  type SqliteOptions,
} from "../shared/config/db-options.js";
import { DEFAULT_DATA_DIR } from "../shared/config/defaults.js";
import { flagValue, throwIfProblems } from "../shared/config/options.js";
import { openDatabase } from "../shared/db/connect.js";
import { type DatabaseRole, type MigrationSet, migrateDatabase, migrationTableName } from "../shared/db/migrate.js";
import { AuthNexusError } from "../shared/errors/index.js";
import { systemClock } from "../shared/time/index.js";
import { addFlags, dbFlagSpecs, type FlagSpec, readFlags } from "./flags.js";
import type { JsonFlag } from "./ops-common.js";
import { progressLine } from "./ops-common.js";
import { printJson, printTable } from "./output.js";

const DB_SPECS: FlagSpec[] = [
  {
    name: "data-dir",
    value: "dir",
    description: "the CP's data directory, where the SQLite files are by default (default ./authnexus-data)",
  },
  ...dbFlagSpecs("", "Control DB"),
  ...dbFlagSpecs("runtime-", "Runtime DB"),
];

const ROLES: readonly DatabaseRole[] = ["control", "runtime"];
const MIGRATION_SETS: Record<DatabaseRole, MigrationSet> = { control: controlMigrationSet, runtime: runtimeMigrationSet };

/** The largest page count one backup step may copy: the whole file in one read transaction. */
const WHOLE_FILE_PAGES = 0x7fffffff;

interface DbFlags extends JsonFlag {
  db?: string;
}

interface Target {
  role: DatabaseRole;
  options: DbOptions;
  location: string;
}

export function registerOpsDb(ops: Command): void {
  const db = ops.command("db").description("database maintenance: backup, vacuum, checkpoint, migrate, status (Control DB or Runtime DB)");

  dbCommand(db, "backup", "a consistent copy while the CP runs (SQLite online backup, checked; PostgreSQL: pg_dump)")
    .option(
      "--out <file>",
      "where to write it (default: SQLite <db dir>/backups/<role>-<time>.db; PostgreSQL ./authnexus-<role>-<time>.dump)",
    )
    .option("--force", "overwrite --out when it exists")
    .action(async (flags: DbFlags & { out?: string; force?: boolean }, command: Command) => {
      const target = resolveTarget(command, requiredRole(flags));
      const result =
        target.options.type === "sqlite"
          ? await backupSqlite(target, target.options, flags)
          : await backupPostgres(target, target.options, flags);
      if (flags.json) return printJson(result);
      process.stdout.write(`${result.summary}\n`);
    });

  dbCommand(db, "vacuum", "reclaim space: SQLite VACUUM, PostgreSQL VACUUM (ANALYZE)").action(async (flags: DbFlags, command: Command) => {
    const target = resolveTarget(command, requiredRole(flags));
    const progress = progressLine();
    progress.update(`vacuuming the ${target.role} database ${target.location} …`);
    const started = systemClock.now();
    let result: Record<string, unknown>;
    try {
      result = target.options.type === "sqlite" ? vacuumSqlite(target, target.options) : await vacuumPostgres(target, target.options);
    } finally {
      progress.done();
    }
    const ms = systemClock.now() - started;
    if (flags.json) return printJson({ role: target.role, database: target.location, ms, ...result });
    const sizes =
      typeof result.bytes_before === "number" ? `: ${result.bytes_before} bytes before, ${result.bytes_after} after (file and WAL)` : "";
    process.stdout.write(`vacuumed the ${target.role} database ${target.location} in ${ms} ms${sizes}\n`);
  });

  dbCommand(db, "checkpoint", "SQLite: copy the WAL into the database file and truncate it (PostgreSQL needs none)").action(
    async (flags: DbFlags, command: Command) => {
      const target = resolveTarget(command, requiredRole(flags));
      if (target.options.type === "postgres") {
        if (flags.json) return printJson({ role: target.role, database: target.location, needed: false });
        process.stdout.write(`${target.location} is PostgreSQL: its server checkpoints by itself, nothing to do\n`);
        return;
      }
      const result = checkpointSqlite(target, target.options);
      if (flags.json) printJson({ role: target.role, database: target.location, needed: true, ...result });
      else if (result.busy)
        process.stderr.write(
          `authnexus: the checkpoint of ${target.location} could not finish: a connection kept the WAL busy (${result.wal_frames} frames, ${result.checkpointed_frames} copied); run it again\n`,
        );
      else
        process.stdout.write(
          `checkpointed ${target.location}: ${result.checkpointed_frames} of ${result.wal_frames} WAL frames copied, WAL truncated\n`,
        );
      if (result.busy) process.exitCode = 1;
    },
  );

  dbCommand(db, "migrate", "apply the migrations this build has and the database lacks").action(
    async (flags: DbFlags, command: Command) => {
      const target = resolveTarget(command, requiredRole(flags));
      const applied = await withKysely(target, async (kdb) => {
        checkRole(target, await tableNames(kdb));
        return (await migrateDatabase(kdb, MIGRATION_SETS[target.role], target.location)).applied;
      });
      if (flags.json) return printJson({ role: target.role, database: target.location, applied });
      process.stdout.write(
        applied.length === 0
          ? `the ${target.role} database ${target.location} is up to date; nothing applied\n`
          : `applied to the ${target.role} database ${target.location}: ${applied.join(", ")}\n`,
      );
    },
  );

  dbCommand(db, "status", "applied and pending migrations of the Control DB and the Runtime DB (or the one --db names)").action(
    async (flags: DbFlags, command: Command) => {
      const roles = flags.db === undefined ? ROLES : [requiredRole(flags)];
      const reports = [];
      for (const role of roles) reports.push(await migrationStatus(resolveTarget(command, role)));
      if (flags.json) return printJson({ databases: reports });
      printTable(
        [
          { header: "ROLE", value: (r: MigrationStatus) => r.role },
          { header: "DATABASE", value: (r) => r.database },
          { header: "APPLIED", value: (r) => `${r.applied.length}/${r.known}` },
          { header: "LATEST", value: (r) => r.applied.at(-1)?.name ?? "-" },
          { header: "PENDING", value: (r) => r.pending.join(",") || "-" },
          { header: "UNKNOWN", value: (r) => r.unknown.join(",") || "-" },
        ],
        reports,
        process.stdout.isTTY === true,
      );
    },
  );
}

function dbCommand(parent: Command, name: string, description: string): Command {
  const command = parent
    .command(name)
    .description(description)
    .option("--db <role>", name === "status" ? "control or runtime (default: both)" : "control or runtime (required)")
    .option("--json", "print the outcome as JSON");
  return addFlags(command, DB_SPECS);
}

function requiredRole(flags: DbFlags): DatabaseRole {
  if (flags.db === "control" || flags.db === "runtime") return flags.db;
  throw new AuthNexusError("CONFIG_INVALID", {
    message: flags.db === undefined ? "pass --db control or --db runtime" : `--db must be control or runtime, got "${flags.db}"`,
  });
}

/** The database of `role` as serve-cp would open it with the same flags and environment. */
function resolveTarget(command: Command, role: DatabaseRole): Target {
  const flags = readFlags(command, DB_SPECS);
  const get = (flag: string) => flagValue(flags, process.env, flag);
  const prefix = role === "control" ? "" : "runtime-";
  const values = Object.fromEntries(DB_FLAGS.map((f) => [f, get(`${prefix}${f}`)]).filter(([, v]) => v !== undefined)) as RawDbValues;
  const problems: string[] = [];
  const options = resolveDbOptions(
    {
      values,
      prefix,
      dataDir: path.resolve(get("data-dir") ?? DEFAULT_DATA_DIR),
      defaultSqliteFile: `${role}.db`,
      defaultPgDatabase: `authnexus_${role}`,
    },
    problems,
  );
  throwIfProblems(problems);
  return { role, options, location: describeDb(options) };
}

/** Refuses the other role's database; false when the database has no AuthNexus migrations at all. */
function checkRole(target: Target, tables: string[]): boolean {
  const other: DatabaseRole = target.role === "control" ? "runtime" : "control";
  if (tables.includes(migrationTableName(other)))
    throw new AuthNexusError("DB_MIGRATION_MISMATCH", {
      message: `${target.location} is the ${other} database (it holds ${migrationTableName(other)}), not the ${target.role} database: check --db and the ${target.role === "control" ? "plain" : "--runtime-"} DB flags`,
    });
  return tables.includes(migrationTableName(target.role));
}

// ---- SQLite ----------------------------------------------------------------------------------

function openSqliteFile(target: Target, options: SqliteOptions): SqliteDatabase.Database {
  if (!fs.existsSync(options.path))
    throw new Error(
      `no ${target.role} database at ${options.path}: check --data-dir and the DB flags (serve-cp creates it on first start)`,
    );
  const db = new SqliteDatabase(options.path, { fileMustExist: true, timeout: options.busyTimeoutMs });
  try {
    db.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
    const tables = (db.prepare("select name from sqlite_master where type = 'table'").all() as Array<{ name: string }>).map((t) => t.name);
    if (!checkRole(target, tables))
      throw new Error(`${options.path} is not an AuthNexus ${target.role} database (it has no ${migrationTableName(target.role)} table)`);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

function appliedMigrations(db: SqliteDatabase.Database, role: DatabaseRole): string[] {
  return (db.prepare(`select name from ${migrationTableName(role)} order by name`).all() as Array<{ name: string }>).map((r) => r.name);
}

function timestamp(): string {
  return new Date(systemClock.now())
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}Z$/, "Z");
}

/** Creates `file` empty with mode 0600 (replacing it only with --force), so no copy is ever readable by others. */
function createPrivateFile(file: string, force: boolean): void {
  if (fs.existsSync(file)) {
    if (!force) throw new Error(`${file} exists: pass --force to overwrite it, or choose another --out`);
    fs.rmSync(file);
  }
  fs.closeSync(fs.openSync(file, "wx", 0o600));
}

async function backupSqlite(target: Target, options: SqliteOptions, flags: { out?: string; force?: boolean }) {
  const out = path.resolve(flags.out ?? path.join(path.dirname(options.path), "backups", `${target.role}-${timestamp()}.db`));
  if (!flags.out) fs.mkdirSync(path.dirname(out), { recursive: true, mode: 0o700 });
  const source = openSqliteFile(target, options);
  const progress = progressLine();
  let pages = 0;
  try {
    if (path.resolve(out) === path.resolve(options.path)) throw new Error("--out names the database itself");
    createPrivateFile(out, flags.force === true);
  } catch (error) {
    source.close();
    throw error;
  }
  try {
    // One step copies every page inside one read transaction: a consistent snapshot however busy
    // the CP is (in smaller steps, every write the CP makes in between would restart the copy).
    const result = await source.backup(out, {
      progress: (p: { totalPages: number; remainingPages: number }) => {
        progress.update(`copying ${p.totalPages} pages of ${options.path} …`);
        return WHOLE_FILE_PAGES;
      },
    });
    pages = result.totalPages;
  } catch (error) {
    fs.rmSync(out, { force: true });
    throw error;
  } finally {
    progress.done();
    source.close();
  }
  // The copy stands alone: rollback journal mode, so it is one file with no -wal beside it.
  const copy = new SqliteDatabase(out, { fileMustExist: true });
  let integrity: string[];
  let migrations: string[];
  try {
    copy.pragma("journal_mode = DELETE");
    integrity = (copy.pragma("integrity_check") as Array<{ integrity_check: string }>).map((r) => r.integrity_check);
    migrations = appliedMigrations(copy, target.role);
  } finally {
    copy.close();
  }
  fs.chmodSync(out, 0o600);
  const ok = integrity.length === 1 && integrity[0] === "ok";
  if (!ok)
    throw new Error(
      `the copy ${out} fails PRAGMA integrity_check: ${integrity.slice(0, 5).join("; ")}; do not restore from it, run the backup again`,
    );
  const bytes = fs.statSync(out).size;
  return {
    role: target.role,
    database: target.location,
    file: out,
    bytes,
    pages,
    integrity_check: "ok",
    migrations: migrations.length,
    latest_migration: migrations.at(-1) ?? null,
    summary:
      `backed up the ${target.role} database ${options.path} to ${out} (${bytes} bytes, mode 0600; integrity_check ok; ` +
      `${migrations.length} migrations, latest ${migrations.at(-1) ?? "-"})`,
  };
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function vacuumSqlite(target: Target, options: SqliteOptions) {
  const db = openSqliteFile(target, options);
  const size = () => fileSize(options.path) + fileSize(`${options.path}-wal`);
  try {
    const before = size();
    db.exec("VACUUM");
    return { bytes_before: before, bytes_after: size() };
  } finally {
    db.close();
  }
}

function checkpointSqlite(target: Target, options: SqliteOptions) {
  const db = openSqliteFile(target, options);
  try {
    const [row] = db.pragma("wal_checkpoint(TRUNCATE)") as Array<{ busy: number; log: number; checkpointed: number }>;
    return { busy: (row?.busy ?? 0) !== 0, wal_frames: row?.log ?? 0, checkpointed_frames: row?.checkpointed ?? 0 };
  } finally {
    db.close();
  }
}

// ---- both dialects (Kysely) ------------------------------------------------------------------

async function withKysely<T>(target: Target, work: (db: Kysely<unknown>) => Promise<T>): Promise<T> {
  if (target.options.type === "sqlite" && !fs.existsSync(target.options.path))
    throw new Error(
      `no ${target.role} database at ${target.options.path}: check --data-dir and the DB flags (serve-cp creates it on first start)`,
    );
  const db = await openDatabase<unknown>(target.options);
  try {
    return await work(db);
  } finally {
    await db.destroy();
  }
}

async function tableNames(db: Kysely<unknown>): Promise<string[]> {
  return (await db.introspection.getTables({ withInternalKyselyTables: true })).map((t) => t.name);
}

interface MigrationStatus {
  role: DatabaseRole;
  database: string;
  known: number;
  applied: Array<{ name: string; applied_at: string }>;
  pending: string[];
  /** Applied here but unknown to this build: the database was migrated by a newer AuthNexus. */
  unknown: string[];
}

async function migrationStatus(target: Target): Promise<MigrationStatus> {
  return withKysely(target, async (db) => {
    const known = Object.keys(MIGRATION_SETS[target.role].migrations).sort();
    const applied = checkRole(target, await tableNames(db))
      ? (
          await sql<{
            name: string;
            timestamp: string;
          }>`select name, timestamp from ${sql.table(migrationTableName(target.role))} order by name`.execute(db)
        ).rows.map((r) => ({ name: r.name, applied_at: String(r.timestamp) }))
      : [];
    const names = new Set(applied.map((a) => a.name));
    return {
      role: target.role,
      database: target.location,
      known: known.length,
      applied,
      pending: known.filter((n) => !names.has(n)),
      unknown: [...names].filter((n) => !known.includes(n)),
    };
  });
}

// ---- PostgreSQL ------------------------------------------------------------------------------

async function vacuumPostgres(target: Target, _options: PostgresOptions) {
  await withKysely(target, async (db) => {
    if (!checkRole(target, await tableNames(db))) throw new Error(`${target.location} is not an AuthNexus ${target.role} database`);
    // One connection: VACUUM may outlast the pool's statement timeout, so it is lifted for this session.
    await db.connection().execute(async (conn) => {
      await sql`set statement_timeout = 0`.execute(conn);
      await sql.raw("VACUUM (ANALYZE)").execute(conn);
    });
  });
  return {};
}

function findInPath(program: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, program);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function backupPostgres(target: Target, options: PostgresOptions, flags: { out?: string; force?: boolean }) {
  const out = path.resolve(flags.out ?? `authnexus-${target.role}-${timestamp()}.dump`);
  await withKysely(target, async (db) => {
    if (!checkRole(target, await tableNames(db))) throw new Error(`${target.location} is not an AuthNexus ${target.role} database`);
  });
  const args = [
    "--format=custom",
    `--file=${out}`,
    `--host=${options.host}`,
    `--port=${options.port}`,
    `--username=${options.user}`,
    `--dbname=${options.database}`,
    "--no-password",
  ];
  const pgDump = findInPath("pg_dump");
  if (!pgDump)
    throw new Error(
      `pg_dump is not in PATH; install the PostgreSQL client tools (the server's major version or newer) and run, with the password in PGPASSWORD or ~/.pgpass:\n  pg_dump ${args.map(shellQuote).join(" ")}`,
    );
  createPrivateFile(out, flags.force === true);
  const env = {
    ...process.env,
    PGCONNECT_TIMEOUT: String(options.connectTimeoutS),
    ...(options.password !== undefined ? { PGPASSWORD: options.password } : {}),
  };
  const progress = progressLine();
  progress.update(`pg_dump of ${target.location} …`);
  let dump: { code: number; stderr: string };
  try {
    dump = await run(pgDump, args, env);
  } finally {
    progress.done();
  }
  if (dump.code !== 0) {
    fs.rmSync(out, { force: true });
    throw new Error(`pg_dump failed (exit ${dump.code}): ${dump.stderr.trim()}`);
  }
  fs.chmodSync(out, 0o600);
  // pg_restore --list reads the whole archive's table of contents: a truncated dump fails it.
  const pgRestore = findInPath("pg_restore");
  let entries: number | null = null;
  if (pgRestore) {
    const list = await run(pgRestore, ["--list", out], process.env);
    if (list.code !== 0) throw new Error(`pg_restore --list cannot read ${out}: ${list.stderr.trim()}`);
    entries = list.stdout.split("\n").filter((line) => line.trim() !== "" && !line.startsWith(";")).length;
  }
  const bytes = fs.statSync(out).size;
  return {
    role: target.role,
    database: target.location,
    file: out,
    bytes,
    archive_entries: entries,
    summary:
      `backed up the ${target.role} database ${target.location} to ${out} with pg_dump (custom format, ${bytes} bytes, mode 0600` +
      (entries === null ? "; pg_restore not found, archive not listed)" : `; pg_restore --list reads ${entries} entries)`) +
      `; restore with: pg_restore --dbname=<empty database> ${shellQuote(out)}`,
  };
}

function shellQuote(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, "'\\''")}'`;
}
