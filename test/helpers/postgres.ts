/**
 * A throwaway PostgreSQL server for the test run.
 *
 * `startPostgres()` runs `initdb` into a temp dir and starts a postmaster on a free loopback
 * port with durability switched off (fsync, synchronous_commit, full_page_writes). It is started
 * once per run by test/run-tests.ts, which exports AUTHNEXUS_TEST_PG_HOST/PORT/USER; test files
 * reach it through `connectionFromEnv()` and create one database per suite.
 *
 * initdb and the postmaster refuse to run as root, so as root both run as the `postgres` OS user
 * (created by `apt-get install postgresql`) in a temp dir chowned to it.
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { chmod, chown, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";

const execFileAsync = promisify(execFile);

/** Temp dirs created by startPostgres() start with this; used to find stale ones. */
const TEMP_DIR_PREFIX = "authnexus-pg-";
/** The superuser initdb creates (trust auth, no password). */
const PG_USER = "app";
/** How long `pg_ctl -w start` may wait for the server to accept connections, seconds. */
const PG_START_TIMEOUT_S = 60;
/** Attempts at starting on a fresh port (another process may take the port we picked). */
const PG_START_ATTEMPTS = 3;
/** A temp dir without an owner.pid file younger than this may still be being set up, ms. */
const STALE_DIR_MIN_AGE_MS = 60_000;
/** PostgreSQL's identifier limit (NAMEDATALEN - 1), bytes. */
const MAX_IDENTIFIER_LENGTH = 63;

const SAFE_DB_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export type PostgresServer = {
  host: "127.0.0.1";
  port: number;
  user: string;
  /** `SHOW server_version`, e.g. "15.14 (Debian 15.14-0+deb12u1)". */
  version: string;
  url(dbName: string): string;
  createDatabase(name: string): Promise<void>;
  dropDatabase(name: string): Promise<void>;
  /** Stops the server (`pg_ctl stop -m immediate`) and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
  /** Kills the postmaster as a crash would (`pg_ctl stop -m immediate`), keeping its committed data for resume(). */
  pause(): Promise<void>;
  /** Starts the paused server again on the same port with the same data. */
  resume(): Promise<void>;
};

export type PostgresConnection = {
  url(dbName: string): string;
  createDatabase(name: string): Promise<void>;
  dropDatabase(name: string): Promise<void>;
};

export class PostgresBinariesNotFoundError extends Error {
  override readonly name = "PostgresBinariesNotFoundError";
}

type Connection = { host: string; port: number; user: string };

// ---------------------------------------------------------------------------------------------
// Database names and admin statements

/**
 * A database name unique to this process and call: `<prefix>_<pid>_<random>`, lowercase,
 * [a-z0-9_] only, at most 63 characters (the prefix is shortened, never the unique part).
 */
export function uniqueDatabaseName(prefix: string): string {
  const suffix = `_${process.pid}_${randomBytes(5).toString("hex")}`;
  let head = prefix
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, "_")
    .replace(/^_+|_+$/g, "");
  if (head === "" || !/^[a-z_]/.test(head)) head = `t${head}`;
  head = head.slice(0, MAX_IDENTIFIER_LENGTH - suffix.length);
  return `${head}${suffix}`;
}

function quoteIdentifier(name: string): string {
  if (!SAFE_DB_NAME.test(name)) {
    throw new Error(`invalid test database name ${JSON.stringify(name)}: use [a-z0-9_], <= 63 chars`);
  }
  return `"${name.replace(/"/g, '""')}"`;
}

function connectionUrl(conn: Connection, dbName: string): string {
  return `postgres://${encodeURIComponent(conn.user)}@${conn.host}:${conn.port}/${encodeURIComponent(dbName)}`;
}

async function withAdminClient<T>(conn: Connection, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: connectionUrl(conn, "postgres") });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function connectionFor(conn: Connection): PostgresConnection {
  return {
    url: (dbName) => connectionUrl(conn, dbName),
    createDatabase: async (name) => {
      const ident = quoteIdentifier(name);
      await withAdminClient(conn, (c) => c.query(`CREATE DATABASE ${ident}`));
    },
    dropDatabase: async (name) => {
      const ident = quoteIdentifier(name);
      // FORCE (PostgreSQL 13+) terminates connections a test forgot to close.
      await withAdminClient(conn, (c) => c.query(`DROP DATABASE IF EXISTS ${ident} WITH (FORCE)`));
    },
  };
}

/**
 * The server run-tests.ts started, from AUTHNEXUS_TEST_PG_HOST / _PORT / _USER; null when the
 * run has no PostgreSQL (the test should then skip its PostgreSQL variant, saying why).
 */
export function connectionFromEnv(env: NodeJS.ProcessEnv = process.env): PostgresConnection | null {
  const host = env.AUTHNEXUS_TEST_PG_HOST;
  if (host === undefined || host === "") return null;
  const port = Number(env.AUTHNEXUS_TEST_PG_PORT ?? "5432");
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`AUTHNEXUS_TEST_PG_PORT is not a port: ${JSON.stringify(env.AUTHNEXUS_TEST_PG_PORT)}`);
  }
  const user = env.AUTHNEXUS_TEST_PG_USER || PG_USER;
  return connectionFor({ host, port, user });
}

// ---------------------------------------------------------------------------------------------
// Binaries and OS user

/**
 * The directory holding initdb, pg_ctl and postgres: $AUTHNEXUS_PG_BIN, else `pg_config
 * --bindir`, else the highest /usr/lib/postgresql/<n>/bin. Throws PostgresBinariesNotFoundError.
 */
export function findPostgresBinDir(env: NodeJS.ProcessEnv = process.env): string {
  const hasInitdb = (dir: string) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl"));
  const fromEnv = env.AUTHNEXUS_PG_BIN;
  if (fromEnv) {
    if (hasInitdb(fromEnv)) return fromEnv;
    throw new PostgresBinariesNotFoundError(`AUTHNEXUS_PG_BIN=${fromEnv} has no initdb/pg_ctl`);
  }
  try {
    const dir = execFileSync("pg_config", ["--bindir"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
    // On Debian, pg_config may come from libpq-dev alone, whose bindir has no server binaries.
    if (dir && hasInitdb(dir)) return dir;
  } catch {
    // no pg_config on PATH
  }
  const root = "/usr/lib/postgresql";
  let versions: string[] = [];
  try {
    versions = readdirSync(root).filter((v) => /^\d+(\.\d+)?$/.test(v));
  } catch {
    // no /usr/lib/postgresql
  }
  versions.sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const dir = join(root, v, "bin");
    if (hasInitdb(dir)) return dir;
  }
  throw new PostgresBinariesNotFoundError(
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL " +
      "(Debian/Ubuntu: apt-get install postgresql), or set AUTHNEXUS_PG_BIN to its bin directory",
  );
}

const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0;

type Runner = {
  /** Runs a PostgreSQL binary as the user that may own the cluster. */
  run(file: string, args: string[]): Promise<{ stdout: string; stderr: string }>;
  runSync(file: string, args: string[]): void;
  /** Hands a freshly created dir to that user (no-op when not root). */
  adopt(dir: string): Promise<void>;
};

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function makeRunner(): Promise<Runner> {
  if (!isRoot()) {
    return {
      run: (file, args) => execFileAsync(file, args, { encoding: "utf8" }),
      runSync: (file, args) => void execFileSync(file, args, { stdio: "ignore" }),
      adopt: async () => {},
    };
  }
  let uid: number;
  let gid: number;
  try {
    uid = Number((await execFileAsync("id", ["-u", "postgres"])).stdout.trim());
    gid = Number((await execFileAsync("id", ["-g", "postgres"])).stdout.trim());
  } catch {
    throw new PostgresBinariesNotFoundError(
      "running as root, but there is no 'postgres' OS user to run initdb as " + "(apt-get install postgresql creates it)",
    );
  }
  const runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].find((p) => existsSync(p));
  const wrap = (file: string, args: string[]): [string, string[]] =>
    runuser
      ? [runuser, ["-u", "postgres", "--", file, ...args]]
      : ["su", ["postgres", "-s", "/bin/sh", "-c", [file, ...args].map(shellQuote).join(" ")]];
  return {
    run: (file, args) => {
      const [f, a] = wrap(file, args);
      return execFileAsync(f, a, { encoding: "utf8" });
    },
    runSync: (file, args) => {
      const [f, a] = wrap(file, args);
      execFileSync(f, a, { stdio: "ignore" });
    },
    adopt: async (dir) => {
      await chown(dir, uid, gid);
      await chmod(dir, 0o700);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Server lifecycle

/** A free loopback TCP port (bind port 0, read it, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error("could not pick a free port"))));
    });
  });
}

function errorText(err: unknown): string {
  const e = err as { stderr?: string; stdout?: string; message?: string };
  return (
    [e.stderr, e.stdout]
      .filter((s) => s && s.trim() !== "")
      .join("\n")
      .trim() || String(e.message ?? err)
  );
}

async function tail(file: string, lines = 30): Promise<string> {
  try {
    return (await readFile(file, "utf8")).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Stops and removes servers left behind by runs that were killed hard (SIGKILL, OOM): temp dirs
 * of ours whose owner process is gone. Live runs (their owner pid exists) are left alone.
 */
async function reapStaleServers(binDir: string, runner: Runner): Promise<void> {
  let entries: string[];
  try {
    entries = (await readdir(tmpdir())).filter((e) => e.startsWith(TEMP_DIR_PREFIX));
  } catch {
    return;
  }
  for (const entry of entries) {
    const dir = join(tmpdir(), entry);
    try {
      const owner = Number((await readFile(join(dir, "owner.pid"), "utf8")).trim());
      if (Number.isInteger(owner) && owner > 0 && processAlive(owner)) continue;
    } catch {
      // no owner.pid: skip unless clearly abandoned
      try {
        if (Date.now() - (await stat(dir)).mtimeMs < STALE_DIR_MIN_AGE_MS) continue;
      } catch {
        continue;
      }
    }
    const data = join(dir, "data");
    if (existsSync(join(data, "postmaster.pid"))) {
      await runner.run(join(binDir, "pg_ctl"), ["stop", "-D", data, "-m", "immediate", "-s"]).catch(() => {});
    }
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

async function initdb(binDir: string, runner: Runner, dataDir: string): Promise<void> {
  const base = ["-D", dataDir, "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"];
  try {
    await runner.run(join(binDir, "initdb"), [...base, "--locale=C.UTF-8"]);
    return;
  } catch (err) {
    // C.UTF-8 missing on this system: retry with plain C.
    if (!/locale/i.test(errorText(err))) throw new Error(`initdb failed:\n${errorText(err)}`);
  }
  await rm(dataDir, { recursive: true, force: true });
  try {
    await runner.run(join(binDir, "initdb"), [...base, "--locale=C"]);
  } catch (err) {
    throw new Error(`initdb failed:\n${errorText(err)}`);
  }
}

/**
 * Starts a private PostgreSQL on 127.0.0.1 and a free port. Call `stop()` when done; if the
 * process exits without it, an exit hook stops the server synchronously.
 */
export async function startPostgres(): Promise<PostgresServer> {
  const binDir = findPostgresBinDir();
  const runner = await makeRunner();
  await reapStaleServers(binDir, runner);

  const dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  const dataDir = join(dir, "data");
  const logFile = join(dir, "postgres.log");
  const pgCtl = join(binDir, "pg_ctl");
  let started = false;
  let stopped = false;

  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    if (started) {
      try {
        runner.runSync(pgCtl, ["stop", "-D", dataDir, "-m", "immediate", "-s"]);
      } catch {
        // already gone
      }
    }
    try {
      execFileSync("rm", ["-rf", dir], { stdio: "ignore" });
    } catch {
      // best effort
    }
  };
  process.on("exit", stopSync);

  try {
    await writeFile(join(dir, "owner.pid"), `${process.pid}\n`);
    await runner.adopt(dir);
    await initdb(binDir, runner, dataDir);

    let port = 0;
    let lastError = "";
    const optionsFor = (p: number) =>
      [
        `-k ${shellQuote(dir)}`, // pg_ctl passes -o through /bin/sh
        "-h 127.0.0.1",
        `-p ${p}`,
        "-c fsync=off",
        "-c synchronous_commit=off",
        "-c full_page_writes=off",
        "-c max_connections=200",
      ].join(" ");
    const startOn = (p: number) =>
      runner.run(pgCtl, ["start", "-D", dataDir, "-l", logFile, "-w", "-s", "-t", String(PG_START_TIMEOUT_S), "-o", optionsFor(p)]);
    for (let attempt = 1; attempt <= PG_START_ATTEMPTS && !started; attempt++) {
      port = await freePort();
      try {
        await startOn(port);
        started = true;
      } catch (err) {
        lastError = `${errorText(err)}\n--- ${logFile} ---\n${await tail(logFile)}`;
        // A half-started postmaster would keep the data dir locked for the next attempt.
        await runner.run(pgCtl, ["stop", "-D", dataDir, "-m", "immediate", "-s"]).catch(() => {});
      }
    }
    if (!started) throw new Error(`pg_ctl start failed after ${PG_START_ATTEMPTS} attempts:\n${lastError}`);

    const conn: Connection = { host: "127.0.0.1", port, user: PG_USER };
    const version = await withAdminClient(conn, async (c) => {
      const res = await c.query<{ server_version: string }>("SHOW server_version");
      return res.rows[0]?.server_version ?? "unknown";
    });

    return {
      host: "127.0.0.1",
      port,
      user: PG_USER,
      version,
      ...connectionFor(conn),
      stop: async () => {
        if (stopped) return;
        stopped = true;
        process.off("exit", stopSync);
        await runner.run(pgCtl, ["stop", "-D", dataDir, "-m", "immediate", "-s"]).catch(() => {});
        await rm(dir, { recursive: true, force: true });
      },
      pause: async () => {
        // synchronous_commit is off: a crash would lose the last commits, which is not the
        // outage under test. Flush them first, then crash.
        await withAdminClient(conn, (c) => c.query("CHECKPOINT"));
        await runner.run(pgCtl, ["stop", "-D", dataDir, "-m", "immediate", "-s"]);
      },
      resume: async () => {
        await startOn(port);
      },
    };
  } catch (err) {
    stopSync();
    process.off("exit", stopSync);
    throw err;
  }
}
