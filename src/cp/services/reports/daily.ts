/**
 * Daily reports (the operations manual's "Dashboard Reports"): counts per local day in the
 * deployment's report time zone (or a per-request `tz`), per application where it applies.
 *
 * | report                 | database | rows                              | split by               |
 * |------------------------|----------|-----------------------------------|------------------------|
 * | login-daily            | Runtime  | login_logs by created_at          | app, method, result    |
 * | card-generated-daily   | Runtime  | card_keys by created_at           | app                    |
 * | card-activated-daily   | Runtime  | card_keys by activated_at         | app                    |
 * | agent-login-daily      | Control  | agent_login_logs by created_at    | result                 |
 *
 * How it stays fast on millions of rows: the day boundaries are computed here (calendar.ts;
 * DST days are 23 or 25 hours long) and the database buckets rows by them in ONE statement:
 * - SQLite (no hash aggregation: a GROUP BY over a million rows is a sort) sends the days as a
 *   VALUES list and the distinct keys (app, method, result; found by a loose index scan, one
 *   seek per key), and counts every (key, day) pair with a correlated count(*) over an index
 *   whose columns are the key followed by the timestamp: each count is a narrow index range,
 *   each row in the range is visited once, nothing is sorted. Keys with no row in the whole
 *   range are dropped first (one seek each).
 * - PostgreSQL scans the range once, finds each row's day with width_bucket() over the array of
 *   day starts, and hash-aggregates per day and key.
 *
 * A day that ended more than SEALED_AFTER_MS ago no longer gets rows (they are written as they
 * happen), so its counts are kept in memory per database (SealedDays, bounded) and a report over
 * a year counts only the days it has not seen before: a dashboard's repeated reports cost the
 * current day. A row written later into a sealed day (a node whose clock is more than the margin
 * behind) is counted once the CP restarts.
 */

import { type Kysely, type RawBuilder, sql } from "kysely";
import { dialectOf } from "../../../shared/db/dialect.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { fieldInvalid } from "../../../shared/errors/validation.js";
import type { CpContext } from "../context.js";
import { canonicalTimeZone, dayNumberOfDate, type LocalDay, localDayNumber, localDays } from "./calendar.js";

export const REPORT_KINDS = ["login-daily", "card-generated-daily", "card-activated-daily", "agent-login-daily"] as const;
export type ReportKind = (typeof REPORT_KINDS)[number];

/** The zone reports use when neither the deployment nor the request names one. */
export const DEFAULT_REPORT_TIME_ZONE = "UTC";
/** Days a report covers when `from` is not given (ending with `to`, or today). */
export const DEFAULT_REPORT_DAYS = 30;
/** The longest range one report may cover, days (two years, one of them a leap year). */
export const MAX_REPORT_DAYS = 731;
/** The most distinct keys (app × method × result) one report counts; beyond, ask per application. */
export const MAX_REPORT_KEYS = 5000;

const APP_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

interface Source {
  db: "control" | "runtime";
  table: string;
  time: string;
  /** Key columns, in the order of the index that ends with `time`. */
  keys: string[];
  /** Which key column the app filter narrows (always the first), or null when the report has no app. */
  appKey: string | null;
}

const SOURCES: Record<ReportKind, Source> = {
  "login-daily": { db: "runtime", table: "login_logs", time: "created_at", keys: ["app_id", "method", "result"], appKey: "app_id" },
  "card-generated-daily": { db: "runtime", table: "card_keys", time: "created_at", keys: ["app_id"], appKey: "app_id" },
  "card-activated-daily": { db: "runtime", table: "card_keys", time: "activated_at", keys: ["app_id"], appKey: "app_id" },
  "agent-login-daily": { db: "control", table: "agent_login_logs", time: "created_at", keys: ["result"], appKey: null },
};

export interface ReportRequest {
  kind: ReportKind;
  timeZone: string;
  /** First and last local day (day numbers since 1970-01-01), both included. */
  fromDay: number;
  toDay: number;
  appId: string | null;
}

/** Login outcomes, disjoint: `total` is their sum. */
export interface LoginCounts {
  success: number;
  failure: number;
  throttled: number;
  total: number;
}

export interface ReportDay extends LocalDay {
  /** 24, or 23 / 25 on the days the zone changes its offset. */
  hours: number;
  /** card reports: rows that day. */
  count?: number;
  /** login reports: outcomes that day. */
  success?: number;
  failure?: number;
  throttled?: number;
  total?: number;
  by_app?: Record<string, number | LoginCounts>;
  by_method?: Record<string, LoginCounts>;
}

export interface DailyReport {
  report: ReportKind;
  time_zone: string;
  /** First and last local day, both included. */
  from: string;
  to: string;
  /** The instants covered: start inclusive, end exclusive (the start of the day after `to`). */
  range: { start: number; end: number };
  app_id: string | null;
  totals: { count?: number } & Partial<LoginCounts>;
  by_app?: Record<string, number | LoginCounts>;
  by_method?: Record<string, LoginCounts>;
  days: ReportDay[];
  generated_at: number;
}

/** The deployment's zone: ctx.reportTimeZone (serve-cp --report-time-zone), else UTC. */
export function deploymentTimeZone(ctx: Pick<CpContext, "reportTimeZone">): string {
  return ctx.reportTimeZone ?? DEFAULT_REPORT_TIME_ZONE;
}

/**
 * Reads `tz`, `from`, `to` (YYYY-MM-DD, local days, both included) and `app_id` from a query.
 * Without `to` the range ends today (in the zone); without `from` it covers DEFAULT_REPORT_DAYS.
 */
export function parseReportRequest(ctx: CpContext, kind: ReportKind, query: Record<string, string | undefined>): ReportRequest {
  let timeZone = deploymentTimeZone(ctx);
  if (query.tz !== undefined) {
    const zone = canonicalTimeZone(query.tz);
    if (!zone) throw fieldInvalid("tz", "must be an IANA time zone name, e.g. Europe/Berlin or UTC");
    timeZone = zone;
  }
  const day = (name: "from" | "to"): number | undefined => {
    const raw = query[name];
    if (raw === undefined || raw === "") return undefined;
    const n = dayNumberOfDate(raw);
    if (n === null) throw fieldInvalid(name, "must be a date YYYY-MM-DD (a day in the report's time zone), from 1970 on");
    return n;
  };
  const toDay = day("to") ?? localDayNumber(timeZone, ctx.clock.now());
  const fromDay = day("from") ?? toDay - (DEFAULT_REPORT_DAYS - 1);
  if (fromDay > toDay) throw fieldInvalid("from", "must not be after to");
  if (toDay - fromDay + 1 > MAX_REPORT_DAYS) throw fieldInvalid("to", `a report covers at most ${MAX_REPORT_DAYS} days`);
  let appId: string | null = null;
  if (query.app_id !== undefined) {
    if (SOURCES[kind].appKey === null) throw fieldInvalid("app_id", `${kind} is not per application`);
    if (!APP_ID_PATTERN.test(query.app_id)) throw fieldInvalid("app_id", "must be 1-64 letters, digits, _ or -");
    appId = query.app_id;
  }
  return { kind, timeZone, fromDay, toDay, appId };
}

export async function dailyReport(ctx: CpContext, request: ReportRequest): Promise<DailyReport> {
  const source = SOURCES[request.kind];
  const days = localDays(request.timeZone, request.fromDay, request.toDay);
  const first = days[0];
  const last = days[days.length - 1];
  if (!first || !last) throw new AuthNexusError("INTERNAL", { detail: { why: "a report range without days" } });
  // biome-ignore lint/suspicious/noExplicitAny: both schemas hold the report tables; the SQL below is raw
  const db = (source.db === "control" ? ctx.controlDb : ctx.runtimeDb) as Kysely<any>;
  const counts = await countWithSealedDays(ctx, db, source, request, days);
  return shapeReport(ctx, request, source, days, counts);
}

/** How long after a day's end its counts are taken as final (rows are written as they happen). */
export const SEALED_AFTER_MS = 60 * 60_000;
/** The most sealed (report, zone, app filter, day) entries kept per database. */
const SEALED_DAYS_MAX = 50_000;

/** Counts of sealed days, least recently used first (a Map keeps insertion order). */
class SealedDays {
  private readonly entries = new Map<string, Array<{ key: Key; count: number }>>();

  get(id: string): Array<{ key: Key; count: number }> | undefined {
    const hit = this.entries.get(id);
    if (hit) {
      this.entries.delete(id);
      this.entries.set(id, hit);
    }
    return hit;
  }

  set(id: string, counts: Array<{ key: Key; count: number }>): void {
    this.entries.set(id, counts);
    if (this.entries.size > SEALED_DAYS_MAX) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }
}

const sealedByDatabase = new WeakMap<object, SealedDays>();

/** The days' counts: sealed ones from memory when seen before, the others from the database (then remembered when sealed). */
async function countWithSealedDays(
  ctx: CpContext,
  db: Kysely<unknown>,
  source: Source,
  request: ReportRequest,
  days: LocalDay[],
): Promise<KeyDayCount[]> {
  let sealed = sealedByDatabase.get(db);
  if (!sealed) {
    sealed = new SealedDays();
    sealedByDatabase.set(db, sealed);
  }
  const sealedBefore = ctx.clock.now() - SEALED_AFTER_MS;
  const idOf = (d: LocalDay) => `${request.kind}|${request.timeZone}|${request.appId ?? "*"}|${d.start}|${d.end}`;
  const out: KeyDayCount[] = [];
  const missing: number[] = [];
  days.forEach((d, index) => {
    const hit = d.end <= sealedBefore ? sealed.get(idOf(d)) : undefined;
    if (hit) for (const c of hit) out.push({ key: c.key, day: index, count: c.count });
    else missing.push(index);
  });
  // Counted in runs of consecutive days (PostgreSQL's buckets need a contiguous range).
  for (const run of consecutiveRuns(missing)) {
    const runDays = run.map((i) => days[i] as LocalDay);
    const counted = await countFromDatabase(db, source, request.appId, runDays);
    const perDay = new Map<number, Array<{ key: Key; count: number }>>(run.map((i) => [i, []]));
    for (const c of counted) {
      const index = run[c.day] as number;
      out.push({ key: c.key, day: index, count: c.count });
      perDay.get(index)?.push({ key: c.key, count: c.count });
    }
    for (const [index, counts] of perDay) {
      const day = days[index] as LocalDay;
      if (day.end <= sealedBefore) sealed.set(idOf(day), counts);
    }
  }
  return out;
}

function consecutiveRuns(indexes: number[]): number[][] {
  const runs: number[][] = [];
  for (const i of indexes) {
    const run = runs[runs.length - 1];
    if (run && run[run.length - 1] === i - 1) run.push(i);
    else runs.push([i]);
  }
  return runs;
}

async function countFromDatabase(db: Kysely<unknown>, source: Source, appId: string | null, days: LocalDay[]): Promise<KeyDayCount[]> {
  if (dialectOf(db) === "postgres") return countByDayBuckets(db, source, appId, days);
  const keys = await distinctKeys(db, source, appId);
  return keys.length === 0 ? [] : countPerKeyAndDay(db, source, keys, days);
}

type Key = string[];

/**
 * Every distinct key tuple in the table (within the app when filtered), in index order: a loose
 * index scan, one seek per key, so its cost does not grow with the rows.
 */
async function distinctKeys(db: Kysely<unknown>, source: Source, appId: string | null): Promise<Key[]> {
  const table = sql.table(source.table);
  const columns = sql.join(source.keys.map((k) => sql.ref(k)));
  const order = sql.join(source.keys.map((k) => sql.ref(k)));
  const keys: Key[] = [];
  let previous: Key | null = null;
  for (;;) {
    const conditions: RawBuilder<unknown>[] = [];
    if (appId !== null && source.appKey) conditions.push(sql`${sql.ref(source.appKey)} = ${appId}`);
    if (previous) conditions.push(sql`(${columns}) > (${sql.join(previous.map((v) => sql`${v}`))})`);
    const where = conditions.length > 0 ? sql`where ${sql.join(conditions, sql` and `)}` : sql``;
    const row = (await sql<Record<string, unknown>>`select ${columns} from ${table} ${where} order by ${order} limit 1`.execute(db))
      .rows[0];
    if (!row) return keys;
    previous = source.keys.map((k) => String(row[k]));
    keys.push(previous);
    if (keys.length > MAX_REPORT_KEYS)
      throw fieldInvalid("app_id", `more than ${MAX_REPORT_KEYS} distinct keys to count: ask per application with app_id`);
  }
}

interface KeyDayCount {
  key: Key;
  day: number;
  count: number;
}

async function countPerKeyAndDay(db: Kysely<unknown>, source: Source, keys: Key[], days: LocalDay[]): Promise<KeyDayCount[]> {
  const first = days[0] as LocalDay;
  const last = days[days.length - 1] as LocalDay;
  const time = sql.ref(`t.${source.time}`);
  const keyNames = source.keys.map((_, i) => `k${i}`);
  // Day bounds are integers this process computed: literals, so both dialects compare integers.
  const dayRows = sql.join(days.map((d, i) => sql`(${sql.lit(i)}, ${sql.lit(d.start)}, ${sql.lit(d.end)})`));
  const keyRows = sql.join(keys.map((key) => sql`(${sql.join(key.map((v) => sql`${v}`))})`));
  const keyColumns = sql.join(keyNames.map((k) => sql.ref(k)));
  const match = (alias: string) =>
    sql.join(
      source.keys.map((column, i) => sql`t.${sql.ref(column)} = ${sql.ref(`${alias}.k${i}`)}`),
      sql` and `,
    );
  const statement = sql<Record<string, unknown>>`
    with days(n, s, e) as (values ${dayRows}),
    all_keys(${keyColumns}) as (values ${keyRows}),
    live as materialized (
      select * from all_keys a
      where exists (select 1 from ${sql.table(source.table)} t where ${match("a")} and ${time} >= ${sql.lit(first.start)} and ${time} < ${sql.lit(last.end)})
    )
    select ${sql.join(keyNames.map((k) => sql.ref(`l.${k}`)))}, d.n as day,
      (select count(*) from ${sql.table(source.table)} t where ${match("l")} and ${time} >= d.s and ${time} < d.e) as c
    from live l cross join days d`;
  // Zero counts are dropped here: a "where c > 0" around the query would count every pair twice.
  return readCounts((await statement.execute(db)).rows, keyNames);
}

/**
 * PostgreSQL: one scan of the range, each row's day found by width_bucket() (a binary search
 * in the array of day starts), hash-aggregated per day and key. PostgreSQL prefers the plain
 * time index over the key + time index for a low-selectivity key, which makes the per-pair
 * counts above slow there, while its hash aggregation is fast.
 */
async function countByDayBuckets(db: Kysely<unknown>, source: Source, appId: string | null, days: LocalDay[]): Promise<KeyDayCount[]> {
  const first = days[0] as LocalDay;
  const last = days[days.length - 1] as LocalDay;
  const time = sql.ref(source.time);
  const keyNames = source.keys.map((_, i) => `k${i}`);
  const starts = sql`array[${sql.join(days.map((d) => sql.lit(d.start)))}]::bigint[]`;
  const app = appId !== null && source.appKey ? sql`and ${sql.ref(source.appKey)} = ${appId}` : sql``;
  const statement = sql<Record<string, unknown>>`
    select width_bucket(${time}, ${starts}) - 1 as day, ${sql.join(source.keys.map((k, i) => sql`${sql.ref(k)} as ${sql.ref(`k${i}`)}`))}, count(*) as c
    from ${sql.table(source.table)}
    where ${time} >= ${sql.lit(first.start)} and ${time} < ${sql.lit(last.end)} ${app}
    group by ${sql.join(["day", ...keyNames].map((k) => sql.ref(k)))}`;
  return readCounts((await statement.execute(db)).rows, keyNames);
}

function readCounts(rows: Record<string, unknown>[], keyNames: string[]): KeyDayCount[] {
  const out: KeyDayCount[] = [];
  for (const row of rows) {
    const count = Number(row.c);
    if (count > 0) out.push({ key: keyNames.map((k) => String(row[k])), day: Number(row.day), count });
  }
  return out;
}

const emptyLogin = (): LoginCounts => ({ success: 0, failure: 0, throttled: 0, total: 0 });

function addLogin(target: LoginCounts, result: string, n: number): void {
  if (result === "success") target.success += n;
  else if (result === "throttled") target.throttled += n;
  else target.failure += n;
  target.total += n;
}

function shapeReport(ctx: CpContext, request: ReportRequest, source: Source, days: LocalDay[], counts: KeyDayCount[]): DailyReport {
  const login = request.kind === "login-daily" || request.kind === "agent-login-daily";
  const perApp = source.appKey !== null;
  const out: ReportDay[] = days.map((d) => ({
    ...d,
    hours: (d.end - d.start) / 3_600_000,
    ...(login ? emptyLogin() : { count: 0 }),
    ...(perApp ? { by_app: {} } : {}),
    ...(request.kind === "login-daily" ? { by_method: {} } : {}),
  }));
  const totals: DailyReport["totals"] = login ? emptyLogin() : { count: 0 };
  const byApp: Record<string, number | LoginCounts> = {};
  const byMethod: Record<string, LoginCounts> = {};
  for (const { key, day, count } of counts) {
    const row = out[day];
    if (!row) continue;
    if (request.kind === "login-daily") {
      const [app, method, result] = key as [string, string, string];
      addLogin(row as LoginCounts, result, count);
      addLogin(totals as LoginCounts, result, count);
      const rowApps = row.by_app as Record<string, LoginCounts>;
      rowApps[app] ??= emptyLogin();
      addLogin(rowApps[app], result, count);
      const rowMethods = row.by_method as Record<string, LoginCounts>;
      rowMethods[method] ??= emptyLogin();
      addLogin(rowMethods[method], result, count);
      byApp[app] ??= emptyLogin();
      addLogin(byApp[app] as LoginCounts, result, count);
      byMethod[method] ??= emptyLogin();
      addLogin(byMethod[method], result, count);
    } else if (request.kind === "agent-login-daily") {
      const [result] = key as [string];
      // An attempt still in flight (or orphaned by a crash) has no outcome to count.
      if (result === "pending") continue;
      addLogin(row as LoginCounts, result, count);
      addLogin(totals as LoginCounts, result, count);
    } else {
      const [app] = key as [string];
      row.count = (row.count ?? 0) + count;
      totals.count = (totals.count ?? 0) + count;
      const rowApps = row.by_app as Record<string, number>;
      rowApps[app] = (rowApps[app] ?? 0) + count;
      byApp[app] = ((byApp[app] as number | undefined) ?? 0) + count;
    }
  }
  const first = days[0] as LocalDay;
  const last = days[days.length - 1] as LocalDay;
  return {
    report: request.kind,
    time_zone: request.timeZone,
    from: first.date,
    to: last.date,
    range: { start: first.start, end: last.end },
    app_id: request.appId,
    totals,
    ...(perApp ? { by_app: byApp } : {}),
    ...(request.kind === "login-daily" ? { by_method: byMethod } : {}),
    days: out,
    generated_at: ctx.clock.now(),
  };
}
