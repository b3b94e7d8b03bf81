/**
 * The seven audit trails as an operator queries them: GET /admin/v1/audit-logs, /login-logs,
 * /agent-audit-logs, /agent-login-logs, /pki/audit-logs, /nodes/audit-logs and
 * /nodes/auth-events, over rows written by the real writers across five days (ManualClock):
 * pagination, from/to, every filter each log has, and refusals (an unknown filter, a value out
 * of form, a bad time range) that answer 400 and change nothing.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { writeAgentAudit } from "../../src/cp/services/audit/agent-audit.js";
import { writeNodeAudit, writeNodeAuthEvent } from "../../src/cp/services/audit/node-audit.js";
import { writePkiAudit } from "../../src/cp/services/audit/pki-audit.js";
import { writeLoginLog, writeUserAudit } from "../../src/shared/db/runtime/index.js";
import { newId } from "../../src/shared/ids.js";
import { type AdminApp, buildAdminApp, call, expectOk, expectRefused, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

const DAY_MS = 86_400_000;
const DAYS = 5;
const V1 = "/admin/v1";

const PATHS = {
  "audit-logs": `${V1}/audit-logs`,
  "login-logs": `${V1}/login-logs`,
  "agent-audit-logs": `${V1}/agent-audit-logs`,
  "agent-login-logs": `${V1}/agent-login-logs`,
  "pki-audit-logs": `${V1}/pki/audit-logs`,
  "node-audit-logs": `${V1}/nodes/audit-logs`,
  "node-auth-events": `${V1}/nodes/auth-events`,
} as const;
type LogName = keyof typeof PATHS;

interface Page {
  items: Array<Record<string, unknown>>;
  total: number;
  page: number;
  page_size: number;
}

for (const variant of dbVariants()) {
  describe(`audit log queries on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    let token: string;
    /** Start of day 0 of the seeded rows; every seeded row is at start + d days + 1 hour. */
    let start: number;
    const appIds = [newId("app"), newId("app")];

    const list = async (log: LogName, query = ""): Promise<Page> =>
      expectOk(await call(app, "GET", `${PATHS[log]}${query ? `?${query}` : ""}`, { token }), 200, `${log}?${query}`) as unknown as Page;
    const dayOf = (item: Record<string, unknown>) => Math.floor(((item.created_at as number) - start) / DAY_MS);

    before(async () => {
      cp = await createTestCp(variant, "auditq");
      await completeSetup(cp.ctx);
      ({ app } = await buildAdminApp(cp));
      cp.clock.advance(DAY_MS);
      start = cp.clock.now();
      const { ctx } = cp;
      for (let d = 0; d < DAYS; d += 1) {
        cp.clock.set(start + d * DAY_MS + 3_600_000);
        const odd = d % 2 === 1;
        await writeAgentAudit(
          ctx.controlDb,
          ctx.clock,
          { agentId: odd ? "agt_odd" : "agt_even", username: "someone", ip: "10.0.0.1", requestId: null },
          { action: odd ? "node.create" : "app.create", targetType: "node", targetId: `tgt_${d}`, result: d === 4 ? "failure" : "success" },
        );
        await writePkiAudit(ctx.controlDb, ctx.clock, {
          event: odd ? "cert.issued" : "cert.revoked",
          certificateId: `crt_${d}`,
          serialHex: `0a0b0${d}`,
          profile: "node_server",
          actor: odd ? "job:node_onboard" : "agt_even",
        });
        await writeNodeAudit(ctx.controlDb, ctx.clock, {
          nodeId: `nod_${d % 2}`,
          event: odd ? "node.disabled" : "node.enabled",
          actor: odd ? "system" : "agt_even",
        });
        await writeNodeAuthEvent(ctx.controlDb, ctx.clock, {
          nodeId: `nod_${d % 2}`,
          event: odd ? "node_cert_revoked" : "node_unknown",
          peer: "10.0.0.9",
          certSerial: "01",
        });
        await ctx.controlDb
          .insertInto("agent_login_logs")
          .values({
            id: newId("alg"),
            created_at: ctx.clock.now(),
            username: odd ? "alice" : "bob",
            agent_id: odd ? "agt_odd" : null,
            ip: "10.0.0.1",
            user_agent: null,
            result: odd ? "success" : "failure",
            reason: odd ? null : "bad_credentials",
          })
          .execute();
        await writeUserAudit(ctx.runtimeDb, {
          created_at: ctx.clock.now(),
          app_id: appIds[d % 2] as string,
          user_id: `usr_${d}`,
          event: odd ? "user.banned" : "user.created",
          actor: odd ? "agt_odd" : "agt_even",
          detail: JSON.stringify({ day: d }),
        });
        await writeLoginLog(ctx.runtimeDb, {
          created_at: ctx.clock.now(),
          app_id: appIds[d % 2] as string,
          user_id: `usr_${d}`,
          username: `user${d}`,
          method: odd ? "password" : "card",
          result: d === 3 ? "failure" : "success",
          reason: d === 3 ? "bad_credentials" : null,
          ip: "10.1.1.1",
          device_id: "dev",
          node_id: `nod_${d % 2}`,
        });
      }
      cp.clock.set(start + DAYS * DAY_MS);
      token = (await loginAs(app, "root", ROOT_PASSWORD)).access_token;
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });

    const range = () => `from=${start + DAY_MS}&to=${new Date(start + 4 * DAY_MS - 1).toISOString()}`;

    for (const log of Object.keys(PATHS) as LogName[]) {
      test(`${log}: from/to picks days 1-3, newest first, paginated without overlap`, async () => {
        const all = await list(log, range());
        assert.equal(all.total, 3);
        assert.deepEqual(all.items.map(dayOf), [3, 2, 1]);
        const first = await list(log, `${range()}&page_size=2`);
        const second = await list(log, `${range()}&page_size=2&page=2`);
        assert.equal(first.total, 3);
        assert.deepEqual(
          [...first.items, ...second.items].map((i) => i.id),
          all.items.map((i) => i.id),
        );
        assert.equal((await list(log, `${range()}&page_size=2&page=3`)).items.length, 0);
        // Seeded rows are chained: each carries its chain columns.
        const chained = all.items.filter((i) => typeof i.chain_id === "string");
        if (log !== "agent-login-logs") assert.equal(chained.length, 3, "the writers chain every row");
      });
    }

    /** [log, query, days expected (within the seeded days)] */
    const filterCases: Array<[LogName, string, number[]]> = [
      ["audit-logs", "actor=agt_odd", [3, 1]],
      ["audit-logs", "target=usr_2", [2]],
      ["audit-logs", "action=user.created", [4, 2, 0]],
      ["audit-logs", `app_id=${appIds[1]}`, [3, 1]],
      ["audit-logs", "user_id=usr_4&event=user.created", [4]],
      ["login-logs", "actor=user2", [2]],
      ["login-logs", "action=card", [4, 2, 0]],
      ["login-logs", "result=failure", [3]],
      ["login-logs", `app_id=${appIds[0]}&method=card`, [4, 2, 0]],
      ["login-logs", "user_id=usr_1&node_id=nod_1&username=user1", [1]],
      ["agent-audit-logs", "actor=agt_odd", [3, 1]],
      ["agent-audit-logs", "target=tgt_2&target_type=node", [2]],
      ["agent-audit-logs", "action=node.create", [3, 1]],
      ["agent-audit-logs", "result=failure", [4]],
      ["agent-audit-logs", "agent_id=agt_even&result=success", [2, 0]],
      ["agent-login-logs", "actor=ALICE", [3, 1]],
      ["agent-login-logs", "result=failure&username=bob", [4, 2, 0]],
      ["agent-login-logs", "agent_id=agt_odd", [3, 1]],
      ["pki-audit-logs", "actor=job:node_onboard", [3, 1]],
      ["pki-audit-logs", "target=crt_3", [3]],
      ["pki-audit-logs", "action=cert.revoked&certificate_id=crt_2", [2]],
      ["pki-audit-logs", "serial=0A:0B:04", [4]],
      ["node-audit-logs", "actor=system", [3, 1]],
      ["node-audit-logs", "target=nod_0&action=node.enabled", [4, 2, 0]],
      ["node-audit-logs", "node_id=nod_1&event=node.disabled", [3, 1]],
      ["node-auth-events", "actor=nod_1", [3, 1]],
      ["node-auth-events", "action=node_unknown&node_id=nod_0", [4, 2, 0]],
    ];
    test("every filter of every log narrows to the rows it names", async () => {
      for (const [log, query, days] of filterCases) {
        const page = await list(log, `from=${start}&${query}`);
        assert.deepEqual(page.items.map(dayOf), days, `${log}?${query}`);
        assert.equal(page.total, days.length, `${log}?${query} total`);
      }
    });

    /** [log, query, what the message names] */
    const refusals: Array<[LogName, string, string]> = [
      ["audit-logs", "result=success", "result"],
      ["audit-logs", "actr=agt_odd", "actr"],
      ["login-logs", "action=sms", "action"],
      ["login-logs", "result=maybe", "result"],
      ["login-logs", "target=usr_1", "target"],
      ["agent-audit-logs", "result=pending", "result"],
      ["agent-audit-logs", "actor=agt%20odd", "actor"],
      ["agent-login-logs", "action=login", "action"],
      ["pki-audit-logs", "result=success", "result"],
      ["pki-audit-logs", "action=Cert Issued", "action"],
      ["pki-audit-logs", "serial=xyz", "serial"],
      ["node-audit-logs", "target=../nod_0", "target"],
      ["node-auth-events", "target=nod_0", "target"],
      ["node-auth-events", "from=yesterday", "from"],
      ["audit-logs", "from=2026-06-03T00:00:00Z&to=2026-06-02T00:00:00Z", "from must not be after to"],
      ["login-logs", "page_size=100000", "page_size"],
    ];
    test("an unknown filter, a value out of form or a bad time range is a 400 naming it, and changes nothing", async () => {
      const before = await snapshotDb(cp.ctx);
      const counts = async () =>
        Promise.all([
          cp.ctx.controlDb
            .selectFrom("agent_login_logs")
            .select((eb) => eb.fn.countAll().as("n"))
            .executeTakeFirstOrThrow(),
          cp.ctx.controlDb
            .selectFrom("agent_audit_logs")
            .select((eb) => eb.fn.countAll().as("n"))
            .executeTakeFirstOrThrow(),
        ]);
      const countsBefore = await counts();
      for (const [log, query, names] of refusals) {
        const res = await call(app, "GET", `${PATHS[log]}?${query}`, { token });
        expectRefused(res, 400, "VALIDATION_FAILED", `${log}?${query}`, names);
      }
      assert.deepEqual(await snapshotDb(cp.ctx), before);
      assert.deepEqual(await counts(), countsBefore);
    });
  });
}
