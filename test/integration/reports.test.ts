/**
 * The daily reports (GET /admin/v1/reports/*) on SQLite and PostgreSQL: rows placed around the
 * two 2026 DST changes of Europe/Berlin (29 March, a 23-hour day; 25 October, a 25-hour day)
 * land on the right local day in Berlin and on the right UTC day in UTC; `from` and `to` are
 * local days, both included, and a row at the exact start of the day after `to` is out; the
 * app filter narrows every count; bad input is a 400 that changes nothing.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Kysely, sql } from "kysely";
import { type AdminApp, buildAdminApp, call, expectOk, expectRefused, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

const V1 = "/admin/v1";
const at = (iso: string) => Date.parse(iso);

interface Login {
  at: string;
  app: string;
  method: string;
  result: string;
}

const LOGINS: Login[] = [
  { at: "2026-03-28T22:30:00Z", app: "app_a", method: "password", result: "success" }, // Berlin 28th 23:30; UTC 28th
  { at: "2026-03-28T23:30:00Z", app: "app_a", method: "password", result: "failure" }, // Berlin 29th 00:30; UTC 28th
  { at: "2026-03-29T21:30:00Z", app: "app_b", method: "card", result: "success" }, // Berlin 29th 23:30 CEST; UTC 29th
  { at: "2026-03-29T22:30:00Z", app: "app_a", method: "token", result: "throttled" }, // Berlin 30th 00:30; UTC 29th
  { at: "2026-03-30T12:00:00Z", app: "app_b", method: "password", result: "success" }, // 30th in both
  { at: "2026-10-24T22:30:00Z", app: "app_a", method: "password", result: "success" }, // Berlin 25th 00:30 CEST; UTC 24th
  { at: "2026-10-25T22:30:00Z", app: "app_a", method: "password", result: "success" }, // Berlin 25th 23:30 CET; UTC 25th
  { at: "2026-10-25T23:00:00Z", app: "app_b", method: "password", result: "failure" }, // exactly Berlin 26th 00:00; UTC 25th
];

interface Day {
  date: string;
  start: number;
  end: number;
  hours: number;
  count?: number;
  success?: number;
  failure?: number;
  throttled?: number;
  total?: number;
  by_app?: Record<string, unknown>;
  by_method?: Record<string, unknown>;
}
interface Report {
  report: string;
  time_zone: string;
  from: string;
  to: string;
  range: { start: number; end: number };
  app_id: string | null;
  totals: Record<string, number>;
  by_app?: Record<string, unknown>;
  by_method?: Record<string, unknown>;
  days: Day[];
}

const brief = (d: Day) => [d.date, d.hours, d.success, d.failure, d.throttled, d.total];

for (const variant of dbVariants()) {
  describe(`daily reports on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    let token: string;
    const report = async (path: string): Promise<Report> =>
      expectOk(await call(app, "GET", `${V1}${path}`, { token }), 200, path) as unknown as Report;

    before(async () => {
      cp = await createTestCp(variant, "reports");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      token = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      const runtime = cp.ctx.runtimeDb as Kysely<unknown>;
      let i = 0;
      for (const l of LOGINS) {
        i += 1;
        await sql`insert into login_logs (id, created_at, app_id, user_id, username, method, result) values (${`lgl_t${i}`}, ${at(l.at)}, ${l.app}, ${null}, ${"u"}, ${l.method}, ${l.result})`.execute(
          runtime,
        );
      }
      // Cards: three generated on Berlin's 29 March (one per app plus one more), two of them activated on 25 October.
      const cards: Array<[string, string, string, string | null]> = [
        ["card_1", "app_a", "2026-03-28T23:30:00Z", "2026-10-24T22:30:00Z"],
        ["card_2", "app_b", "2026-03-29T12:00:00Z", "2026-10-25T22:59:59.999Z"],
        ["card_3", "app_a", "2026-03-29T21:59:59.999Z", null],
        ["card_4", "app_a", "2026-03-29T22:00:00Z", "2026-10-25T23:00:00Z"],
      ];
      for (const [id, appId, created, activated] of cards) {
        await sql`insert into card_keys (id, app_id, code_hash, code_hint, duration_seconds, status, created_at, activated_at)
          values (${id}, ${appId}, ${`hash-${id}`}, ${"XXXX"}, ${86400}, ${activated ? "active" : "unused"}, ${at(created)}, ${activated ? at(activated) : null})`.execute(
          runtime,
        );
      }
      const control = cp.ctx.controlDb as Kysely<unknown>;
      const agentLogins: Array<[string, string]> = [
        ["2026-03-28T23:30:00Z", "success"],
        ["2026-03-29T10:00:00Z", "failure"],
        ["2026-03-29T11:00:00Z", "throttled"],
      ];
      for (const [when, result] of agentLogins) {
        await sql`insert into agent_login_logs (id, created_at, username, result) values (${`alg_${when}`}, ${at(when)}, ${"root"}, ${result})`.execute(
          control,
        );
      }
    });
    after(async () => {
      await cp?.close();
      await variant.cleanup();
    });

    test("login-daily in Europe/Berlin: the spring DST day has 23 hours and the rows fall on Berlin days", async () => {
      const r = await report("/reports/login-daily?from=2026-03-28&to=2026-03-30&tz=Europe/Berlin");
      assert.equal(r.time_zone, "Europe/Berlin");
      assert.deepEqual(r.days.map(brief), [
        ["2026-03-28", 24, 1, 0, 0, 1],
        ["2026-03-29", 23, 1, 1, 0, 2],
        ["2026-03-30", 24, 1, 0, 1, 2],
      ]);
      assert.equal(r.days[1]?.start, at("2026-03-28T23:00:00Z"));
      assert.equal(r.days[1]?.end, at("2026-03-29T22:00:00Z"));
      assert.deepEqual(r.range, { start: at("2026-03-27T23:00:00Z"), end: at("2026-03-30T22:00:00Z") });
      assert.deepEqual(r.totals, { success: 3, failure: 1, throttled: 1, total: 5 });
      assert.deepEqual(r.days[1]?.by_app, {
        app_a: { success: 0, failure: 1, throttled: 0, total: 1 },
        app_b: { success: 1, failure: 0, throttled: 0, total: 1 },
      });
      assert.deepEqual(r.days[1]?.by_method, {
        card: { success: 1, failure: 0, throttled: 0, total: 1 },
        password: { success: 0, failure: 1, throttled: 0, total: 1 },
      });
      assert.deepEqual(r.by_method?.token, { success: 0, failure: 0, throttled: 1, total: 1 });
    });

    test("login-daily in UTC buckets the same rows by UTC day", async () => {
      const r = await report("/reports/login-daily?from=2026-03-28&to=2026-03-30&tz=UTC");
      assert.deepEqual(r.days.map(brief), [
        ["2026-03-28", 24, 1, 1, 0, 2],
        ["2026-03-29", 24, 1, 0, 1, 2],
        ["2026-03-30", 24, 1, 0, 0, 1],
      ]);
      const autumn = await report("/reports/login-daily?from=2026-10-24&to=2026-10-26&tz=UTC");
      assert.deepEqual(autumn.days.map(brief), [
        ["2026-10-24", 24, 1, 0, 0, 1],
        ["2026-10-25", 24, 1, 1, 0, 2],
        ["2026-10-26", 24, 0, 0, 0, 0],
      ]);
    });

    test("the autumn DST day has 25 hours; to is included, the instant the next day starts is not", async () => {
      const r = await report("/reports/login-daily?from=2026-10-24&to=2026-10-25&tz=Europe/Berlin");
      assert.deepEqual(r.days.map(brief), [
        ["2026-10-24", 24, 0, 0, 0, 0],
        ["2026-10-25", 25, 2, 0, 0, 2],
      ]);
      assert.equal(r.range.end, at("2026-10-25T23:00:00Z"), "end is exclusive: the start of the 26th");
      const next = await report("/reports/login-daily?from=2026-10-26&to=2026-10-26&tz=Europe/Berlin");
      assert.deepEqual(next.days.map(brief), [["2026-10-26", 24, 0, 1, 0, 1]], "from is included: a row at its first instant counts");
      const single = await report("/reports/login-daily?from=2026-03-29&to=2026-03-29&tz=Europe/Berlin");
      assert.deepEqual(single.days.map(brief), [["2026-03-29", 23, 1, 1, 0, 2]]);
    });

    test("the deployment's zone is the default; tz overrides it", async () => {
      const before = cp.ctx.reportTimeZone;
      cp.ctx.reportTimeZone = "Europe/Berlin";
      try {
        const r = await report("/reports/login-daily?from=2026-03-29&to=2026-03-29");
        assert.equal(r.time_zone, "Europe/Berlin");
        assert.equal(r.days[0]?.hours, 23);
        const utc = await report("/reports/login-daily?from=2026-03-29&to=2026-03-29&tz=UTC");
        assert.equal(utc.time_zone, "UTC");
        assert.deepEqual(utc.days.map(brief), [["2026-03-29", 24, 1, 0, 1, 2]]);
      } finally {
        if (before === undefined) delete cp.ctx.reportTimeZone;
        else cp.ctx.reportTimeZone = before;
      }
      const plain = await report("/reports/login-daily");
      assert.equal(plain.time_zone, "UTC");
      assert.equal(plain.days.length, 30, "30 days by default");
      assert.equal(plain.to, "2026-06-01", "ending today (the CP clock)");
    });

    test("app_id narrows every count", async () => {
      const r = await report("/reports/login-daily?from=2026-03-28&to=2026-03-30&tz=Europe/Berlin&app_id=app_b");
      assert.equal(r.app_id, "app_b");
      assert.deepEqual(r.days.map(brief), [
        ["2026-03-28", 24, 0, 0, 0, 0],
        ["2026-03-29", 23, 1, 0, 0, 1],
        ["2026-03-30", 24, 1, 0, 0, 1],
      ]);
      assert.deepEqual(Object.keys(r.by_app ?? {}), ["app_b"]);
      const none = await report("/reports/login-daily?from=2026-03-28&to=2026-03-30&app_id=app_zzz");
      assert.equal(none.totals.total, 0);
    });

    test("card-generated-daily and card-activated-daily count per day and per application", async () => {
      const made = await report("/reports/card-generated-daily?from=2026-03-28&to=2026-03-30&tz=Europe/Berlin");
      assert.deepEqual(
        made.days.map((d) => [d.date, d.count, d.by_app]),
        [
          ["2026-03-28", 0, {}],
          ["2026-03-29", 3, { app_a: 2, app_b: 1 }],
          ["2026-03-30", 1, { app_a: 1 }],
        ],
      );
      assert.deepEqual(made.by_app, { app_a: 3, app_b: 1 });
      const madeUtc = await report("/reports/card-generated-daily?from=2026-03-28&to=2026-03-30&tz=UTC");
      assert.deepEqual(
        madeUtc.days.map((d) => d.count),
        [1, 3, 0],
      );
      const used = await report("/reports/card-activated-daily?from=2026-10-25&to=2026-10-25&tz=Europe/Berlin");
      assert.deepEqual(
        used.days.map((d) => [d.date, d.hours, d.count, d.by_app]),
        [["2026-10-25", 25, 2, { app_a: 1, app_b: 1 }]],
      );
      const usedA = await report("/reports/card-activated-daily?from=2026-10-24&to=2026-10-26&tz=Europe/Berlin&app_id=app_a");
      assert.deepEqual(
        usedA.days.map((d) => d.count),
        [0, 1, 1],
      );
    });

    test("agent-login-daily counts the Control DB's agent logins by result", async () => {
      const r = await report("/reports/agent-login-daily?from=2026-03-28&to=2026-03-29&tz=Europe/Berlin");
      assert.deepEqual(r.days.map(brief), [
        ["2026-03-28", 24, 0, 0, 0, 0],
        ["2026-03-29", 23, 1, 1, 1, 3],
      ]);
      assert.equal(r.by_app, undefined);
      const today = await report("/reports/agent-login-daily?from=2026-06-01&to=2026-06-01");
      assert.equal(today.totals.success, 1, "the test's own login");
    });

    test("a day that ended over an hour ago is counted once and remembered; the days after it are counted on every request", async () => {
      const runtime = cp.ctx.runtimeDb as Kysely<unknown>;
      const insert = (id: string, when: string) =>
        sql`insert into login_logs (id, created_at, app_id, user_id, username, method, result) values (${id}, ${at(when)}, ${"app_sealed"}, ${null}, ${"u"}, ${"password"}, ${"success"})`.execute(
          runtime,
        );
      cp.clock.set(at("2026-05-02T00:30:00Z"));
      const path = "/reports/login-daily?from=2026-04-30&to=2026-05-02&tz=UTC&app_id=app_sealed";
      await insert("lgl_sealed_1", "2026-04-30T12:00:00Z");
      assert.deepEqual(
        (await report(path)).days.map((d) => d.total),
        [1, 0, 0],
      );
      // 30 April is sealed: a row written into it now is not counted (until the CP restarts).
      // 1 May ended 30 minutes ago, inside the margin: counted again. 2 May is today.
      await insert("lgl_sealed_2", "2026-04-30T13:00:00Z");
      await insert("lgl_sealed_3", "2026-05-01T23:50:00Z");
      await insert("lgl_sealed_4", "2026-05-02T00:10:00Z");
      assert.deepEqual(
        (await report(path)).days.map((d) => d.total),
        [1, 1, 1],
      );
      // Another zone is another set of days.
      assert.equal((await report("/reports/login-daily?from=2026-04-30&to=2026-04-30&tz=Asia/Tokyo&app_id=app_sealed")).totals.total, 2);
    });

    test("bad tz, from, to or app_id: 400 naming the field, nothing changed", async () => {
      const before = await snapshotDb(cp.ctx);
      const bad: Array<[string, string]> = [
        ["/reports/login-daily?tz=Mars/Olympus_Mons", "tz"],
        ["/reports/login-daily?tz=%2B01:00", "tz"],
        ["/reports/login-daily?from=2026-02-30", "from"],
        ["/reports/login-daily?from=yesterday", "from"],
        ["/reports/login-daily?to=1774742400000", "to"],
        ["/reports/login-daily?from=2026-03-30&to=2026-03-29", "from"],
        ["/reports/login-daily?from=2024-01-01&to=2026-03-29", "to"],
        ["/reports/card-generated-daily?app_id=bad%20id", "app_id"],
        ["/reports/agent-login-daily?app_id=app_a", "app_id"],
      ];
      for (const [path, field] of bad)
        expectRefused(await call(app, "GET", `${V1}${path}`, { token }), 400, "VALIDATION_FAILED", path, field);
      assert.deepEqual(await snapshotDb(cp.ctx), before);
      const anonymous = await call(app, "GET", `${V1}/reports/login-daily`);
      assert.equal(anonymous.status, 401);
    });
  });
}
