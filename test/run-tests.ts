/**
 * The one test entry point (`npm test`).
 *
 *   node --import tsx test/run-tests.ts [selector…] [--node-test-flag…]
 *
 * Starts one PostgreSQL for the whole run (see helpers/postgres.ts), exports
 * AUTHNEXUS_TEST_PG_HOST / _PORT / _USER to `node --test`, runs every
 * test/{unit,integration,e2e}/**\/*.test.ts (or the subset selected), stops PostgreSQL and exits
 * with the test run's exit code.
 *
 * Selectors: an existing file or directory path (directories are searched for *.test.ts), or
 * else a substring matched against the test file paths (`npm test -- harness`). Arguments that
 * start with `-` are passed to `node --test` (`npm test -- --test-name-pattern=ocsp`).
 *
 * Environment:
 *   AUTHNEXUS_TEST_PG_HOST (+ _PORT, _USER) already set: reuse that server, start none.
 *   AUTHNEXUS_TEST_SKIP_POSTGRES=1: run without PostgreSQL; tests skip their PostgreSQL variants.
 *   AUTHNEXUS_PG_BIN: directory holding initdb/pg_ctl (default: pg_config, /usr/lib/postgresql).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { constants } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { connectionFromEnv, PostgresBinariesNotFoundError, type PostgresServer, startPostgres } from "./helpers/postgres.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const TEST_ROOTS = ["test/unit", "test/integration", "test/e2e"];
const TEST_FILE = /\.test\.ts$/;
/** Files run in parallel by `node --test`. */
const TEST_CONCURRENCY = 2;
/** After a signal, how long the test run may take to exit before it is killed, ms. */
const CHILD_KILL_GRACE_MS = 10_000;
const PG_ENV = ["AUTHNEXUS_TEST_PG_HOST", "AUTHNEXUS_TEST_PG_PORT", "AUTHNEXUS_TEST_PG_USER"] as const;

const say = (msg: string) => process.stderr.write(`[run-tests] ${msg}\n`);

/** Repo-relative, forward-slash path. */
const rel = (abs: string) => relative(ROOT, abs).split(sep).join("/");

function walk(dir: string, out: string[] = []): string[] {
  let entries: import("node:fs").Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    if (e.name === "node_modules" || e.name.startsWith(".")) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.isFile() && TEST_FILE.test(e.name)) out.push(rel(p));
  }
  return out;
}

function selectFiles(selectors: string[]): string[] {
  const all = TEST_ROOTS.flatMap((r) => walk(join(ROOT, r)));
  if (selectors.length === 0) return [...new Set(all)].sort();
  const picked = new Set<string>();
  for (const sel of selectors) {
    const abs = resolve(process.cwd(), sel);
    let matched: string[];
    if (existsSync(abs)) {
      matched = statSync(abs).isDirectory() ? walk(abs) : [rel(abs)];
    } else {
      const needle = sel.split(sep).join("/");
      matched = all.filter((f) => f.includes(needle));
    }
    if (matched.length === 0) throw new Error(`no test files match ${JSON.stringify(sel)}`);
    for (const f of matched) picked.add(f);
  }
  return [...picked].sort();
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const nodeFlags = args.filter((a) => a.startsWith("-"));
  const files = selectFiles(args.filter((a) => !a.startsWith("-")));
  if (files.length === 0) throw new Error(`no *.test.ts files under ${TEST_ROOTS.join(", ")}`);

  const env: NodeJS.ProcessEnv = { ...process.env };
  let server: PostgresServer | null = null;
  let child: ChildProcess | null = null;
  let signalled: NodeJS.Signals | null = null;

  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      child?.kill("SIGKILL");
      return;
    }
    signalled = sig;
    say(`${sig}: stopping the test run`);
    if (child) {
      child.kill(sig);
      setTimeout(() => child?.kill("SIGKILL"), CHILD_KILL_GRACE_MS).unref();
    }
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, onSignal);

  try {
    const started = Date.now();
    if (env.AUTHNEXUS_TEST_SKIP_POSTGRES === "1") {
      for (const k of PG_ENV) delete env[k];
      say("PostgreSQL: none (AUTHNEXUS_TEST_SKIP_POSTGRES=1); PostgreSQL test variants will be skipped");
    } else if (env.AUTHNEXUS_TEST_PG_HOST) {
      const conn = connectionFromEnv(env);
      if (!conn) throw new Error("AUTHNEXUS_TEST_PG_HOST is set but unusable");
      say(`PostgreSQL: reusing ${env.AUTHNEXUS_TEST_PG_HOST}:${env.AUTHNEXUS_TEST_PG_PORT ?? "5432"} (from AUTHNEXUS_TEST_PG_HOST)`);
    } else {
      try {
        server = await startPostgres();
      } catch (err) {
        if (err instanceof PostgresBinariesNotFoundError) {
          say(`ERROR: ${err.message}`);
          say("To run without PostgreSQL (its test variants are then skipped), set AUTHNEXUS_TEST_SKIP_POSTGRES=1.");
          return 1;
        }
        throw err;
      }
      env.AUTHNEXUS_TEST_PG_HOST = server.host;
      env.AUTHNEXUS_TEST_PG_PORT = String(server.port);
      env.AUTHNEXUS_TEST_PG_USER = server.user;
      say(
        `PostgreSQL ${server.version} on ${server.host}:${server.port} (user ${server.user}), ` +
          `started in ${seconds(Date.now() - started)}; ${files.length} test file(s)`,
      );
    }
    if (signalled) return 128 + (constants.signals[signalled as NodeJS.Signals] ?? 0); // signal during start

    const nodeArgs = ["--import", "tsx", "--test", `--test-concurrency=${TEST_CONCURRENCY}`];
    if (process.stdout.isTTY && !nodeFlags.some((f) => f.startsWith("--test-reporter"))) {
      nodeArgs.push("--test-reporter=spec");
    }
    const runStarted = Date.now();
    const code = await new Promise<number>((resolveCode, reject) => {
      child = spawn(process.execPath, [...nodeArgs, ...nodeFlags, ...files], {
        cwd: ROOT,
        env,
        stdio: ["ignore", "inherit", "inherit"],
      });
      child.on("error", reject);
      child.on("exit", (c, sig) => resolveCode(c ?? (sig ? 128 + (constants.signals[sig] ?? 0) : 1)));
    });
    child = null;
    say(`tests finished in ${seconds(Date.now() - runStarted)} with exit code ${code}`);
    const sig = signalled as NodeJS.Signals | null;
    return sig ? 128 + (constants.signals[sig] ?? 0) : code;
  } finally {
    if (server) await server.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    say(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
