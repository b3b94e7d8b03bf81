/**
 * Per-user variables (getvar/setvar), on SQLite and on PostgreSQL through the real migrator: the
 * shared module the node and the CP both write through (key and value rules, the count after a
 * batch, all-or-nothing batches, switched off with a count of 0), the app_policy fields that set
 * the limits, and the admin API (/admin/v1/applications/:app_id/users/:user_id/variables) driven
 * in process — every refusal a clear 4xx that changes nothing in either database, every change
 * in both audit logs without the value, and a user's deletion taking their variables along.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { currentAppPolicy } from "../../src/cp/services/configs/app-policy.js";
import {
  applyUserVariableWrites,
  listUserVariables,
  USER_VARIABLE_KEY,
  type UserVariableLimits,
  type UserVariableWrite,
  userVariableLimits,
} from "../../src/shared/db/runtime/index.js";
import { ERROR_CATALOGUE, isAuthNexusError } from "../../src/shared/errors/index.js";
import { appPolicySchema, DEFAULT_APP_POLICY } from "../../src/shared/node-protocol/index.js";
import { type AdminApp, buildAdminApp, call, loginAs, expectOk as ok, expectRefused as refused, snapshotDb } from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

type Obj = Record<string, unknown>;
type Role = "root" | "admin" | "operator";

const V1 = "/admin/v1";
const ADMIN_PASSWORD = "Vars-Adm-Passw0rd-One";
const OPERATOR_PASSWORD = "Vars-Op-Passw0rd-Two";
const MISSING_USER = "usr_doesNotExist00000000";
const MISSING_APP = "app_doesNotExist000000000";
const LIMITS: UserVariableLimits = { maxCount: 3, maxValueBytes: 8 };

/** The error a promise rejects with, which must be the catalogued `code`. */
async function rejectsWith(run: Promise<unknown>, code: "USER_VARIABLE_INVALID" | "USER_VARIABLE_LIMIT", names?: string): Promise<void> {
  await assert.rejects(run, (error: unknown) => {
    assert.ok(isAuthNexusError(error, code), `expected ${code}, got ${String(error)}`);
    if (names) assert.ok(error.message.includes(names), `"${error.message}" does not name ${names}`);
    return true;
  });
}

describe("per-user variables: the key rule, the policy fields and the catalogue", () => {
  it("keys are 1-64 characters, a letter or _ first, then letters, digits, _ . -", () => {
    for (const key of ["a", "_", "Level", "level", "player.hp", "x-1_y.z", `a${"b".repeat(63)}`, "__proto__"])
      assert.ok(USER_VARIABLE_KEY.test(key), key);
    for (const key of ["", "1abc", ".a", "-a", "a b", "a/b", "ä", `a${"b".repeat(64)}`, "a\n", "a\u0000"])
      assert.ok(!USER_VARIABLE_KEY.test(key), JSON.stringify(key));
  });

  it("app_policy: user_variables_max_count 0..10000 (default 100), user_variable_max_bytes 1..65536 (default 4096)", () => {
    assert.deepEqual(userVariableLimits(DEFAULT_APP_POLICY), { maxCount: 100, maxValueBytes: 4096 });
    const policy = appPolicySchema.parse({ user_variables_max_count: 0, user_variable_max_bytes: 65_536 });
    assert.deepEqual(userVariableLimits(policy), { maxCount: 0, maxValueBytes: 65_536 });
    assert.equal(appPolicySchema.parse({ user_variables_max_count: 10_000, user_variable_max_bytes: 1 }).user_variable_max_bytes, 1);
    for (const bad of [
      { user_variables_max_count: -1 },
      { user_variables_max_count: 10_001 },
      { user_variables_max_count: 1.5 },
      { user_variable_max_bytes: 0 },
      { user_variable_max_bytes: 65_537 },
      { user_variable_max_bytes: "4096" },
    ])
      assert.equal(appPolicySchema.safeParse(bad).success, false, JSON.stringify(bad));
  });

  it("USER_VARIABLE_INVALID is 400 / 6109 and USER_VARIABLE_LIMIT 409 / 6110, both exposed and not retryable", () => {
    assert.deepEqual([ERROR_CATALOGUE.USER_VARIABLE_INVALID.http, ERROR_CATALOGUE.USER_VARIABLE_INVALID.wire], [400, 6109]);
    assert.deepEqual([ERROR_CATALOGUE.USER_VARIABLE_LIMIT.http, ERROR_CATALOGUE.USER_VARIABLE_LIMIT.wire], [409, 6110]);
    for (const entry of [ERROR_CATALOGUE.USER_VARIABLE_INVALID, ERROR_CATALOGUE.USER_VARIABLE_LIMIT]) {
      assert.equal(entry.expose, true);
      assert.equal(entry.retryable, false);
    }
  });
});

for (const variant of dbVariants()) {
  describe(`per-user variables on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    const tokens: Record<Role, string> = { root: "", admin: "", operator: "" };
    const agentIds: Record<Role, string> = { root: "", admin: "", operator: "" };
    const apps = { a: "", b: "", gone: "" };
    const users = { alice: "", bob: "", bUser: "", goneUser: "" };
    let owners = 0;

    const rdb = () => cp.ctx.runtimeDb;
    const now = () => cp.clock.now();
    const biz = (method: string, appId: string, path: string, body?: unknown, role: Role = "admin") =>
      call(app, method, `${V1}/applications/${appId}${path}`, { token: tokens[role], ...(body !== undefined ? { body } : {}) });
    const vars = (userId: string, rest = "") => `/users/${userId}/variables${rest}`;
    const setPolicy = async (appId: string, content: Obj) =>
      ok(await biz("PUT", appId, "/configs/app_policy", { content }), 200, `policy ${JSON.stringify(content)}`);
    /** A fresh owner for a module test: the module needs no users row. */
    const newOwner = () => ({ appId: "app_module", userId: `usr_module${String(++owners).padStart(4, "0")}` });
    const apply = (owner: { appId: string; userId: string }, writes: UserVariableWrite[], limits = LIMITS) =>
      rdb()
        .transaction()
        .execute((trx) => applyUserVariableWrites(trx, owner, writes, limits, now()));
    const userAudit = (event: string) =>
      rdb().selectFrom("user_audit_logs").selectAll().where("event", "=", event).orderBy("created_at").execute();
    const agentAudit = (action: string) =>
      cp.ctx.controlDb.selectFrom("agent_audit_logs").selectAll().where("action", "=", action).orderBy("created_at").execute();

    /** Runs refusals and proves that neither database changed (log tables aside). */
    const unchanged = async (label: string, run: () => Promise<void>) => {
      // Authenticating records when an agent session was last used: not a change, so done first.
      for (const token of Object.values(tokens)) ok(await call(app, "GET", `${V1}/auth/me`, { token }), 200, "warm-up");
      const before = await snapshotDb(cp.ctx);
      await run();
      assert.deepEqual(await snapshotDb(cp.ctx), before, `${label}: the database changed`);
    };

    before(async () => {
      cp = await createTestCp(variant, "uvars");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      tokens.root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      for (const [role, password] of [
        ["admin", ADMIN_PASSWORD],
        ["operator", OPERATOR_PASSWORD],
      ] as const) {
        const res = await call(app, "POST", `${V1}/agents`, { token: tokens.root, body: { username: `uv-${role}-agent`, password, role } });
        agentIds[role] = String(ok(res, 201, `create ${role}`).id);
        tokens[role] = (await loginAs(app, `uv-${role}-agent`, password)).access_token;
      }
      const newApp = async (name: string) =>
        String(ok(await call(app, "POST", `${V1}/applications`, { token: tokens.admin, body: { name } }), 201, name).app_id);
      const newUser = async (appId: string, username: string) =>
        String(ok(await biz("POST", appId, "/users", { username, password: "Vars-User-Pass-1" }), 201, username).id);
      apps.a = await newApp("Vars App A");
      apps.b = await newApp("Vars App B");
      apps.gone = await newApp("Vars App Gone");
      users.alice = await newUser(apps.a, "alice");
      users.bob = await newUser(apps.a, "bob");
      users.bUser = await newUser(apps.b, "alice");
      users.goneUser = await newUser(apps.gone, "alice");
      ok(await biz("PUT", apps.gone, vars(users.goneUser, "/kept"), { value: "v" }), 201, "a variable in the app to recycle");
      ok(await call(app, "DELETE", `${V1}/applications/${apps.gone}`, { token: tokens.admin }), 200, "recycle app");
    });
    after(async () => {
      await cp?.close();
      await variant.cleanup();
    });

    // ---- the shared module ------------------------------------------------------------------

    it("writes set, replace and delete; keys are case-sensitive; deleting an absent key is no error", async () => {
      const owner = newOwner();
      await apply(owner, [
        { key: "Level", value: "1" },
        { key: "level", value: "2" },
      ]);
      assert.deepEqual(await listUserVariables(rdb(), owner.userId), { Level: "1", level: "2" });
      await apply(owner, [
        { key: "Level", value: "10" },
        { key: "level", value: null },
        { key: "never", value: null },
      ]);
      assert.deepEqual(await listUserVariables(rdb(), owner.userId), { Level: "10" });
      const row = await rdb().selectFrom("user_variables").selectAll().where("user_id", "=", owner.userId).executeTakeFirstOrThrow();
      assert.equal(row.app_id, owner.appId);
      assert.equal(row.updated_at, now());
      assert.deepEqual(await listUserVariables(rdb(), newOwner().userId), {}, "a user with none has an empty store");
    });

    it("a key written twice in one batch ends with its last write and counts once", async () => {
      const owner = newOwner();
      await apply(owner, [
        { key: "a", value: "1" },
        { key: "b", value: "1" },
        { key: "c", value: "1" },
        { key: "c", value: "3" },
        { key: "b", value: null },
        { key: "b", value: "2" },
      ]);
      assert.deepEqual(await listUserVariables(rdb(), owner.userId), { a: "1", b: "2", c: "3" });
    });

    it("values: empty, multi-byte and exactly maxValueBytes are kept; a '__proto__' key is an ordinary key", async () => {
      const owner = newOwner();
      await apply(owner, [
        { key: "empty", value: "" },
        { key: "euro", value: "€€" }, // 6 bytes
        { key: "__proto__", value: "12345678" }, // 8 bytes
      ]);
      const store = await listUserVariables(rdb(), owner.userId);
      assert.deepEqual(Object.entries(store).sort(), [
        ["__proto__", "12345678"],
        ["empty", ""],
        ["euro", "€€"],
      ]);
    });

    it("a bad key or value anywhere in a batch refuses the whole batch (USER_VARIABLE_INVALID naming the key); nothing is written", async () => {
      const owner = newOwner();
      await apply(owner, [{ key: "kept", value: "old" }]);
      const cases: Array<[UserVariableWrite, string]> = [
        [{ key: "1bad", value: "x" }, "1bad"],
        [{ key: "", value: "x" }, '""'],
        [{ key: "a".repeat(65), value: null }, "aaaa"],
        [{ key: "big", value: "123456789" }, "9 bytes"],
        [{ key: "bigger", value: "€€€" }, "9 bytes"],
        [{ key: "nul", value: "a\u0000b" }, "NUL"],
        [{ key: "lone", value: "a\uD800b" }, "lone"],
      ];
      for (const [bad, names] of cases) {
        await rejectsWith(apply(owner, [{ key: "kept", value: "new" }, { key: "fresh", value: "x" }, bad]), "USER_VARIABLE_INVALID", names);
        assert.deepEqual(await listUserVariables(rdb(), owner.userId), { kept: "old" }, `after ${JSON.stringify(bad.key)}`);
      }
    });

    it("the count after the batch: up to maxCount is fine, one more is USER_VARIABLE_LIMIT and writes nothing", async () => {
      const owner = newOwner();
      await apply(owner, [
        { key: "a", value: "1" },
        { key: "b", value: "1" },
      ]);
      await rejectsWith(
        apply(owner, [
          { key: "a", value: "changed" },
          { key: "c", value: "1" },
          { key: "d", value: "1" },
        ]),
        "USER_VARIABLE_LIMIT",
        "3",
      );
      assert.deepEqual(await listUserVariables(rdb(), owner.userId), { a: "1", b: "1" }, "the refused batch left nothing");
      await apply(owner, [{ key: "c", value: "1" }]);
      await rejectsWith(apply(owner, [{ key: "d", value: "1" }]), "USER_VARIABLE_LIMIT");
      // At the cap: replacing is fine, and a delete makes room within the same batch.
      await apply(owner, [
        { key: "a", value: "2" },
        { key: "b", value: null },
        { key: "d", value: "1" },
      ]);
      assert.deepEqual(await listUserVariables(rdb(), owner.userId), { a: "2", c: "1", d: "1" });
    });

    it("a user over a lowered limit may replace and delete but never grow", async () => {
      const owner = newOwner();
      await apply(owner, [
        { key: "a", value: "1" },
        { key: "b", value: "1" },
        { key: "c", value: "1" },
      ]);
      const lowered = { ...LIMITS, maxCount: 1 };
      await apply(owner, [{ key: "a", value: "2" }], lowered);
      await apply(owner, [{ key: "b", value: null }], lowered);
      await apply(
        owner,
        [
          { key: "c", value: null },
          { key: "z", value: "1" },
        ],
        lowered,
      );
      await rejectsWith(apply(owner, [{ key: "y", value: "1" }], lowered), "USER_VARIABLE_LIMIT");
      assert.deepEqual(await listUserVariables(rdb(), owner.userId), { a: "2", z: "1" });
    });

    it("maxCount 0 switches per-user variables off: every batch is USER_VARIABLE_LIMIT, deletes and empty ones included", async () => {
      const owner = newOwner();
      await apply(owner, [{ key: "left", value: "1" }]);
      const off = { ...LIMITS, maxCount: 0 };
      for (const writes of [[{ key: "a", value: "1" }], [{ key: "left", value: null }], []] as UserVariableWrite[][])
        await rejectsWith(apply(owner, writes, off), "USER_VARIABLE_LIMIT", "disabled");
      assert.deepEqual(await listUserVariables(rdb(), owner.userId), { left: "1" });
    });

    it("concurrent batches of one user cannot pass the count together", async () => {
      const owner = newOwner();
      await apply(owner, [
        { key: "a", value: "1" },
        { key: "b", value: "1" },
      ]);
      const results = await Promise.allSettled(["x", "y", "z"].map((key) => apply(owner, [{ key, value: "1" }])));
      assert.equal(results.filter((r) => r.status === "fulfilled").length, 1, "exactly one of three fits");
      for (const r of results) if (r.status === "rejected") assert.ok(isAuthNexusError(r.reason, "USER_VARIABLE_LIMIT"), String(r.reason));
      assert.equal(Object.keys(await listUserVariables(rdb(), owner.userId)).length, LIMITS.maxCount);
    });

    it("users are separate stores: the same key for two users, each counted on its own", async () => {
      const first = newOwner();
      const second = newOwner();
      await apply(first, [
        { key: "a", value: "first" },
        { key: "b", value: "1" },
        { key: "c", value: "1" },
      ]);
      await apply(second, [{ key: "a", value: "second" }]);
      assert.equal((await listUserVariables(rdb(), first.userId)).a, "first");
      assert.deepEqual(await listUserVariables(rdb(), second.userId), { a: "second" });
    });

    // ---- the CP's view of app_policy --------------------------------------------------------

    it("the CP reads an application's current app_policy: defaults without a version, new fields defaulted in an old one", async () => {
      assert.deepEqual(userVariableLimits(await currentAppPolicy(cp.ctx, apps.b)), { maxCount: 100, maxValueBytes: 4096 });
      await setPolicy(apps.b, { max_devices_per_user: 5 });
      // As a version stored before these fields existed would read.
      await cp.ctx.controlDb
        .updateTable("config_versions")
        .set({ content: '{"max_devices_per_user":5}' })
        .where("config_type", "=", "app_policy")
        .where("scope", "=", `app:${apps.b}`)
        .execute();
      const policy = await currentAppPolicy(cp.ctx, apps.b);
      assert.equal(policy.max_devices_per_user, 5);
      assert.deepEqual(userVariableLimits(policy), { maxCount: 100, maxValueBytes: 4096 });
      await setPolicy(apps.b, { user_variables_max_count: 7, user_variable_max_bytes: 70 });
      assert.deepEqual(userVariableLimits(await currentAppPolicy(cp.ctx, apps.b)), { maxCount: 7, maxValueBytes: 70 });
    });

    // ---- the admin API ----------------------------------------------------------------------

    it("PUT creates (201) then replaces (200); GET lists every variable sorted by key with updated_at", async () => {
      const created = ok(await biz("PUT", apps.a, vars(users.alice, "/score"), { value: "10" }), 201, "create");
      assert.deepEqual(created, { key: "score", value: "10", updated_at: now(), created: true });
      cp.clock.advance(1000);
      const replaced = ok(await biz("PUT", apps.a, vars(users.alice, "/score"), { value: "20" }), 200, "replace");
      assert.deepEqual(replaced, { key: "score", value: "20", updated_at: now(), created: false });
      for (const key of ["Score", "_z", "a.b-c", "B"]) ok(await biz("PUT", apps.a, vars(users.alice, `/${key}`), { value: key }), 201, key);
      ok(await biz("PUT", apps.a, vars(users.alice, "/empty"), { value: "" }), 201, "empty value");
      const row = await rdb()
        .selectFrom("user_variables")
        .selectAll()
        .where("user_id", "=", users.alice)
        .where("key", "=", "score")
        .executeTakeFirstOrThrow();
      assert.equal(row.created_at, now() - 1000, "replacing keeps created_at");
      assert.equal(row.app_id, apps.a);

      const listed = ok(await biz("GET", apps.a, vars(users.alice), undefined, "operator"), 200, "list as operator");
      assert.deepEqual(Object.keys(listed), ["items"]);
      const items = listed.items as Obj[];
      assert.deepEqual(
        items.map((i) => i.key),
        ["B", "Score", "_z", "a.b-c", "empty", "score"],
        "code-unit order on both databases",
      );
      assert.deepEqual(items.at(-1), { key: "score", value: "20", updated_at: now() });
      assert.deepEqual(await listUserVariables(rdb(), users.alice), Object.fromEntries(items.map((i) => [i.key, i.value])));
      assert.deepEqual(ok(await biz("GET", apps.a, vars(users.bob)), 200, "bob has none"), { items: [] });
    });

    it("PUT and DELETE are audited in the user audit log with the key and size, never the value, and in the agent audit", async () => {
      const secret = "a-value-the-audit-must-not-hold";
      ok(await biz("PUT", apps.a, vars(users.bob, "/note"), { value: secret }), 201, "set");
      const set = (await userAudit("user_variable.set")).at(-1);
      assert.equal(set?.user_id, users.bob);
      assert.equal(set?.app_id, apps.a);
      assert.equal(set?.actor, agentIds.admin);
      assert.deepEqual(JSON.parse(set?.detail ?? "{}"), { user_id: users.bob, key: "note", bytes: secret.length, created: true });
      const agentSet = (await agentAudit("business.user_variable.set")).at(-1);
      assert.deepEqual([agentSet?.result, agentSet?.target_type, agentSet?.target_id], ["success", "user", users.bob]);
      ok(await biz("DELETE", apps.a, vars(users.bob, "/note")), 200, "delete");
      const deleted = (await userAudit("user_variable.deleted")).at(-1);
      assert.deepEqual(JSON.parse(deleted?.detail ?? "{}"), { user_id: users.bob, key: "note" });
      const agentDelete = (await agentAudit("business.user_variable.delete")).at(-1);
      assert.deepEqual([agentDelete?.result, agentDelete?.target_id], ["success", users.bob]);
      for (const row of [...(await userAudit("user_variable.set")), ...(await agentAudit("business.user_variable.set"))])
        assert.ok(!JSON.stringify(row).includes(secret), "the value reaches no audit row");
    });

    it("DELETE removes one variable → {user_id, key}; absent, other-case, bad or another user's key → 404; nothing else changes", async () => {
      ok(await biz("PUT", apps.a, vars(users.bob, "/gone"), { value: "x" }), 201, "seed");
      ok(await biz("PUT", apps.a, vars(users.bob, "/stays"), { value: "y" }), 201, "seed");
      assert.deepEqual(ok(await biz("DELETE", apps.a, vars(users.bob, "/gone")), 200, "delete"), { user_id: users.bob, key: "gone" });
      assert.deepEqual(await listUserVariables(rdb(), users.bob), { stays: "y" });
      await unchanged("delete refusals", async () => {
        refused(await biz("DELETE", apps.a, vars(users.bob, "/gone")), 404, "NOT_FOUND", "again");
        refused(await biz("DELETE", apps.a, vars(users.bob, "/STAYS")), 404, "NOT_FOUND", "other case");
        refused(await biz("DELETE", apps.a, vars(users.bob, "/1bad")), 404, "NOT_FOUND", "a key no write could store");
        refused(await biz("DELETE", apps.a, vars(users.alice, "/stays")), 404, "NOT_FOUND", "another user's key");
        refused(await biz("DELETE", apps.a, vars(users.bob, "/stays"), { force: true }), 400, "VALIDATION_FAILED", "a body");
      });
    });

    it("PUT refusals: bad keys and values (400 USER_VARIABLE_INVALID naming the key), bad bodies (400 VALIDATION_FAILED); nothing changes", async () => {
      await unchanged("put refusals", async () => {
        for (const key of ["1bad", "a%20b", "-x", "caf%C3%A9", "a".repeat(65)])
          refused(
            await biz("PUT", apps.a, vars(users.bob, `/${key}`), { value: "v" }),
            400,
            "USER_VARIABLE_INVALID",
            `key ${key}`,
            decodeURIComponent(key).slice(0, 10),
          );
        refused(
          await biz("PUT", apps.a, vars(users.bob, "/big"), { value: "x".repeat(4097) }),
          400,
          "USER_VARIABLE_INVALID",
          "over the default 4096 bytes",
          "big",
        );
        refused(await biz("PUT", apps.a, vars(users.bob, "/nul"), { value: "a\u0000b" }), 400, "USER_VARIABLE_INVALID", "NUL", "NUL");
        for (const body of [{}, { value: 1 }, { value: null }, { value: "v", extra: true }, ["v"]])
          refused(await biz("PUT", apps.a, vars(users.bob, "/ok"), body), 400, "VALIDATION_FAILED", `body ${JSON.stringify(body)}`);
        const raw = await call(app, "PUT", `${V1}/applications/${apps.a}${vars(users.bob, "/ok")}`, {
          token: tokens.admin,
          rawBody: "{not json",
          headers: { "content-type": "application/json" },
        });
        refused(raw, 400, "MALFORMED_JSON", "not JSON");
      });
      const agent = (await agentAudit("business.user_variable.set")).at(-1);
      assert.deepEqual([agent?.result, agent?.error_code], ["failure", "MALFORMED_JSON"], "refusals are audited as failures");
    });

    it("PUT follows the application's app_policy: value size, count (409 USER_VARIABLE_LIMIT) and 0 switching them off", async () => {
      await setPolicy(apps.a, { user_variables_max_count: 7, user_variable_max_bytes: 5 });
      // alice has 6 variables from the first admin test; bob has 1.
      ok(await biz("PUT", apps.a, vars(users.alice, "/seventh"), { value: "€" }), 201, "the seventh, 3 bytes");
      ok(await biz("PUT", apps.a, vars(users.alice, "/score"), { value: "12345" }), 200, "replace at the cap, exactly 5 bytes");
      await unchanged("policy refusals", async () => {
        refused(await biz("PUT", apps.a, vars(users.alice, "/eighth"), { value: "1" }), 409, "USER_VARIABLE_LIMIT", "count", "7");
        refused(await biz("PUT", apps.a, vars(users.alice, "/score"), { value: "€€" }), 400, "USER_VARIABLE_INVALID", "6 bytes", "score");
      });
      await setPolicy(apps.a, { user_variables_max_count: 0 });
      await unchanged("switched off", async () => {
        refused(await biz("PUT", apps.a, vars(users.bob, "/new"), { value: "1" }), 409, "USER_VARIABLE_LIMIT", "off", "disabled");
        refused(await biz("PUT", apps.a, vars(users.bob, "/stays"), { value: "1" }), 409, "USER_VARIABLE_LIMIT", "off, existing");
      });
      ok(await biz("GET", apps.a, vars(users.bob)), 200, "reads still answer while switched off");
      assert.deepEqual(ok(await biz("DELETE", apps.a, vars(users.bob, "/stays")), 200, "an admin may still clear what is left"), {
        user_id: users.bob,
        key: "stays",
      });
      await setPolicy(apps.a, {});
    });

    it("unknown or foreign users and applications → 404, the recycle bin → 409 APPLICATION_DELETED, an operator → 403; nothing changes", async () => {
      await unchanged("who and where", async () => {
        for (const [method, body] of [
          ["GET", undefined],
          ["PUT", { value: "v" }],
          ["DELETE", undefined],
        ] as const) {
          const path = (userId: string) => (method === "GET" ? vars(userId) : vars(userId, "/kept"));
          refused(await biz(method, apps.a, path(MISSING_USER), body), 404, "NOT_FOUND", `${method} unknown user`);
          refused(await biz(method, apps.a, path(users.bUser), body), 404, "NOT_FOUND", `${method} B's user via A`);
          refused(await biz(method, apps.a, path("bad%27id"), body), 404, "NOT_FOUND", `${method} an id that cannot be ours`);
          refused(await biz(method, MISSING_APP, path(users.alice), body), 404, "NOT_FOUND", `${method} unknown app`);
          if (method !== "GET") {
            refused(await biz(method, apps.gone, path(users.goneUser), body), 409, "APPLICATION_DELETED", `${method} recycled`);
            refused(await biz(method, apps.a, path(users.alice), body, "operator"), 403, "FORBIDDEN", `${method} operator`);
          }
          refused(
            await call(app, method, `${V1}/applications/${apps.a}${path(users.alice)}`, body ? { body } : {}),
            401,
            "UNAUTHENTICATED",
            `${method} anonymous`,
          );
        }
      });
      const recycled = ok(await biz("GET", apps.gone, vars(users.goneUser), undefined, "operator"), 200, "a recycled app still reads");
      assert.deepEqual(
        (recycled.items as Obj[]).map((i) => [i.key, i.value]),
        [["kept", "v"]],
      );
    });

    it("deleting a user deletes their variables in the same transaction (counted in the audit); others keep theirs", async () => {
      const carol = String(ok(await biz("POST", apps.a, "/users", { username: "carol", password: "Vars-User-Pass-1" }), 201, "carol").id);
      for (const key of ["a", "b", "c"]) ok(await biz("PUT", apps.a, vars(carol, `/${key}`), { value: key }), 201, key);
      const aliceBefore = await listUserVariables(rdb(), users.alice);
      ok(await biz("DELETE", apps.a, `/users/${carol}`), 200, "delete carol");
      assert.equal((await rdb().selectFrom("user_variables").select("key").where("user_id", "=", carol).execute()).length, 0);
      assert.deepEqual(await listUserVariables(rdb(), users.alice), aliceBefore, "other users keep theirs");
      const audit = (await userAudit("user.deleted")).at(-1);
      assert.equal(audit?.user_id, carol);
      assert.equal((JSON.parse(audit?.detail ?? "{}") as Obj).deleted_variables, 3);
      refused(await biz("GET", apps.a, vars(carol)), 404, "NOT_FOUND", "the deleted user's variables");
    });
  });
}
