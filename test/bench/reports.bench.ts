/**
 * Daily report cost (docs/benchmarks.md): each report over one year (366 local days in
 * Europe/Berlin, both DST changes included) against 1,000,000 login_logs rows, 1,000,000
 * card_keys rows (60 % of them activated) and 200,000 agent_login_logs rows, on SQLite and on
 * PostgreSQL (a throwaway server, started here). Rows are spread evenly over the year across
 * APPS applications, four login methods and three results, and the databases are migrated by the
 * real migrator, so the indexes are the ones a deployment has. Each report runs once in another
 * zone (warming the code, not the sealed-day memory), once cold (every day counted in the
 * database), then RUNS times warm (the sealed days remembered); the cold time and the warm
 * median and slowest are printed, against the 200 ms target.
 *
 * Run: node --import tsx test/bench/reports.bench.ts [runs=5] [apps=10]
 * While it runs it holds /tmp/authnexus-bench.lock (created exclusively, removed at the end), so
 * test runs on the same machine can see that a benchmark is using it.
 */
import { closeSync, openSync, rmSync } from "node:fs";
import path from "node:path";
import { type Kysely, sql } from "kysely";
import { controlMigrationSet } from "../../migrations/control/index.js";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import type { CpContext } from "../../src/cp/services/context.js";
import { dayNumberOfDate, localDayNumber } from "../../src/cp/services/reports/calendar.js";
import { dailyReport, REPORT_KINDS, type ReportKind } from "../../src/cp/services/reports/daily.js";
import type { DbOptions } from "../../src/shared/config/db-options.js";
import { type ControlSchema, dialectOf, migrateDatabase, openDatabase, type RuntimeSchema } from "../../src/shared/db/index.js";
import { ManualClock } from "../../src/shared/time/index.js";
import { startPostgres } from "../helpers/postgres.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const RUNS = Number(process.argv[2] ?? 5);
const APPS = Number(process.argv[3] ?? 10);
const LOGIN_ROWS = 1_000_000;
const CARD_ROWS = 1_000_000;
const AGENT_LOGIN_ROWS = 200_000;
const TARGET_MS = 200;
const TIME_ZONE = "Europe/Berlin";
const LOCK_FILE = "/tmp/authnexus-bench.lock";
/** The year the rows cover: 2025-06-01 to 2026-05-31 in Berlin (both DST changes of the winter inside). */
const FROM = "2025-06-01";
const TO = "2026-05-31";
const START = Date.UTC(2025, 4, 31, 22, 0, 0);
const SPAN_MS = Date.UTC(2026, 4, 31, 22, 0, 0) - START;

interface Row {
  db: string;
  report: string;
  filter: string;
  cold: number;
  median: number;
  max: number;
}

async function fill(dialect: "sqlite" | "postgres", runtime: Kysely<unknown>, control: Kysely<unknown>): Promise<void> {
  const series = (n: number) =>
    dialect === "postgres"
      ? sql`select g as n from generate_series(0, ${sql.lit(n - 1)}) g`
      : sql`select n from (with recursive i(n) as (select 0 union all select n + 1 from i where n < ${sql.lit(n - 1)}) select n from i)`;
  const at = (n: number) => sql`${sql.lit(START)} + (s.n * ${sql.lit(SPAN_MS)}) / ${sql.lit(n)}`;
  await sql`insert into login_logs (id, created_at, app_id, user_id, username, method, result, ip, device_id, node_id)
    select 'lgl_' || s.n, ${at(LOGIN_ROWS)}, 'app_' || (s.n % ${sql.lit(APPS)}), 'usr_' || (s.n % 50000), 'user' || (s.n % 50000),
      case s.n % 4 when 0 then 'password' when 1 then 'card' when 2 then 'token' else 'register' end,
      case when s.n % 10 < 7 then 'success' when s.n % 10 < 9 then 'failure' else 'throttled' end,
      '203.0.113.7', 'device-' || (s.n % 1000), 'node_1'
    from (${series(LOGIN_ROWS)}) s`.execute(runtime);
  await sql`insert into card_keys (id, app_id, code_hash, code_hint, duration_seconds, status, created_at, activated_at)
    select 'crd_' || s.n, 'app_' || (s.n % ${sql.lit(APPS)}), 'hash_' || s.n, 'ABCD', 2592000,
      case when s.n % 10 < 6 then 'active' else 'unused' end, ${at(CARD_ROWS)},
      case when s.n % 10 < 6 then ${at(CARD_ROWS)} + 3600000 else null end
    from (${series(CARD_ROWS)}) s`.execute(runtime);
  await sql`insert into agent_login_logs (id, created_at, username, ip, result)
    select 'alg_' || s.n, ${at(AGENT_LOGIN_ROWS)}, 'root', '127.0.0.1',
      case when s.n % 10 < 8 then 'success' when s.n % 10 < 9 then 'failure' else 'throttled' end
    from (${series(AGENT_LOGIN_ROWS)}) s`.execute(control);
  for (const db of [runtime, control]) await sql`${sql.raw(dialect === "postgres" ? "vacuum analyze" : "analyze")}`.execute(db);
}

async function measure(name: string, options: { control: DbOptions; runtime: DbOptions }): Promise<Row[]> {
  const controlDb = await openDatabase<ControlSchema>(options.control);
  const runtimeDb = await openDatabase<RuntimeSchema>(options.runtime);
  try {
    await migrateDatabase(controlDb as Kysely<unknown>, controlMigrationSet, "bench control");
    await migrateDatabase(runtimeDb as Kysely<unknown>, runtimeMigrationSet, "bench runtime");
    const filled = performance.now();
    await fill(dialectOf(runtimeDb), runtimeDb as Kysely<unknown>, controlDb as Kysely<unknown>);
    process.stderr.write(`[${name}] rows written in ${((performance.now() - filled) / 1000).toFixed(1)} s\n`);
    const ctx = { controlDb, runtimeDb, clock: new ManualClock(START + SPAN_MS), reportTimeZone: TIME_ZONE } as unknown as CpContext;
    const fromDay = dayNumberOfDate(FROM) as number;
    const toDay = dayNumberOfDate(TO) as number;
    if (localDayNumber(TIME_ZONE, START) !== fromDay) throw new Error("the rows do not start on the report's first day");
    const rows: Row[] = [];
    for (const kind of REPORT_KINDS as readonly ReportKind[]) {
      const filters: Array<string | null> = kind === "agent-login-daily" ? [null] : [null, "app_3"];
      for (const appId of filters) {
        const times: number[] = [];
        let total = 0;
        let cold = 0;
        await dailyReport(ctx, { kind, timeZone: "UTC", fromDay, toDay, appId });
        for (let i = 0; i <= RUNS; i++) {
          const t0 = performance.now();
          const report = await dailyReport(ctx, { kind, timeZone: TIME_ZONE, fromDay, toDay, appId });
          const ms = performance.now() - t0;
          if (i > 0) times.push(ms);
          else cold = ms;
          total = report.totals.total ?? report.totals.count ?? 0;
          if (report.days.length !== 365) throw new Error(`expected 365 days, got ${report.days.length}`);
        }
        times.sort((a, b) => a - b);
        const row = {
          db: name,
          report: kind,
          filter: appId ? `app_id (${total} rows)` : `all apps (${total} rows)`,
          cold,
          median: times[Math.floor(times.length / 2)] as number,
          max: times[times.length - 1] as number,
        };
        process.stderr.write(
          `[${name}] ${kind} ${row.filter}: cold ${row.cold.toFixed(1)} ms, warm median ${row.median.toFixed(1)} ms, max ${row.max.toFixed(1)} ms\n`,
        );
        rows.push(row);
      }
    }
    return rows;
  } finally {
    await Promise.all([controlDb.destroy(), runtimeDb.destroy()]);
  }
}

async function main(): Promise<void> {
  closeSync(openSync(LOCK_FILE, "wx"));
  const release = () => rmSync(LOCK_FILE, { force: true });
  process.once("SIGINT", () => {
    release();
    process.exit(130);
  });
  const dir = await makeTempDir("authnexus-bench-reports");
  const rows: Row[] = [];
  try {
    rows.push(
      ...(await measure("sqlite", {
        control: { type: "sqlite", path: path.join(dir.path, "control.db"), busyTimeoutMs: 5000 },
        runtime: { type: "sqlite", path: path.join(dir.path, "runtime.db"), busyTimeoutMs: 5000 },
      })),
    );
    const pg = await startPostgres();
    try {
      await pg.createDatabase("bench_control");
      await pg.createDatabase("bench_runtime");
      const options = (database: string): DbOptions => ({
        type: "postgres",
        host: pg.host,
        port: pg.port,
        user: pg.user,
        password: undefined,
        database,
        connectTimeoutS: 5,
        statementTimeoutMs: 600_000,
        lockTimeoutMs: 5000,
        poolSize: 5,
      });
      rows.push(
        ...(await measure(`postgres ${pg.version.split(" ")[0]}`, {
          control: options("bench_control"),
          runtime: options("bench_runtime"),
        })),
      );
    } finally {
      await pg.stop();
    }
  } finally {
    await dir.cleanup();
    release();
  }
  process.stdout.write(
    `\n| database | report | rows counted | cold ms | warm median ms | warm slowest ms | cold < ${TARGET_MS} ms | warm < ${TARGET_MS} ms |\n|---|---|---|---|---|---|---|---|\n`,
  );
  for (const r of rows)
    process.stdout.write(
      `| ${r.db} | ${r.report} | ${r.filter} | ${r.cold.toFixed(1)} | ${r.median.toFixed(1)} | ${r.max.toFixed(1)} | ${r.cold < TARGET_MS ? "yes" : "no"} | ${r.max < TARGET_MS ? "yes" : "no"} |\n`,
    );
}

await main();
