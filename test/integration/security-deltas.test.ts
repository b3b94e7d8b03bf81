/**
 * Channel 3 end to end on SQLite and PostgreSQL: the admin writes (blacklist entries, epoch
 * bumps) append to the change logs and publish their hints; nodes pull pages after a cursor over
 * real mTLS; compaction keeps only what a replay from 0 needs, never passes the slowest node,
 * and a node whose cursor fell into the pruned range is told so (410) instead of silently
 * skipping a change. Every refusal leaves both databases untouched.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { HintMessage } from "../../src/cp/services/event-bus.js";
import { cursorExpired } from "../../src/cp/services/security/deltas.js";
import { compactChangeLogs } from "../../src/cp/services/security/retention.js";
import { newId } from "../../src/shared/ids.js";
import {
  type AuthEpochChange,
  authEpochDeltaResponse,
  type BlacklistChange,
  blacklistDeltaResponse,
  cursorExpiredBody,
  type DeltaStream,
  MAX_DELTA_PAGE,
  nodePaths,
} from "../../src/shared/node-protocol/index.js";
import { type AdminApp, buildAdminApp, type CallResult, call, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { createTestCp, ROOT_PASSWORD, ROOT_USERNAME } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { type NodeApiClient, type NodeIdentity, startTestNodeApi, type TestNodeApi } from "../helpers/node-api.js";

type Obj = Record<string, unknown>;
const V1 = "/admin/v1/security";
const OPERATOR_PASSWORD = "Operator-Passw0rd-Sec";

function obj(res: CallResult | { json: unknown; status: number; text: string }): Obj {
  assert.ok(res.json && typeof res.json === "object", `expected JSON, got ${res.status} ${res.text.slice(0, 300)}`);
  return res.json as Obj;
}

/** What a node ends up with after applying changes in id order (idempotent, like the node's apply). */
interface ReplayedState {
  blacklist: Map<string, string>;
  epochs: Map<string, number>;
}

function applyChanges(state: ReplayedState, stream: DeltaStream, changes: Array<AuthEpochChange | BlacklistChange>): void {
  for (const change of changes) {
    if (stream === "blacklist") {
      const c = change as BlacklistChange;
      if (c.op === "add") state.blacklist.set(c.entry_id, `${c.kind}:${c.value}`);
      else state.blacklist.delete(c.entry_id);
    } else {
      const c = change as AuthEpochChange;
      state.epochs.set(c.user_id, Math.max(state.epochs.get(c.user_id) ?? 0, c.epoch));
    }
  }
}

for (const variant of dbVariants()) {
  describe(`security change logs on ${variant.name}`, { skip: variant.skip }, () => {
    let api: TestNodeApi;
    let admin: AdminApp;
    let root = "";
    let operator = "";
    let alpha: NodeIdentity;
    let alphaClient: NodeApiClient;
    let appId = "";
    const hints: HintMessage[] = [];

    before(async () => {
      api = await startTestNodeApi(variant, "secdelta");
      admin = (await buildAdminApp(api.cp)).app;
      root = (await loginAs(admin, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      const created = await call(admin, "POST", "/admin/v1/agents", {
        token: root,
        body: { username: "sec-operator", password: OPERATOR_PASSWORD, role: "operator" },
      });
      assert.equal(created.status, 201, created.text);
      operator = (await loginAs(admin, "sec-operator", OPERATOR_PASSWORD)).access_token;
      const app = await call(admin, "POST", "/admin/v1/applications", { token: root, body: { name: "Security App" } });
      assert.equal(app.status, 201, app.text);
      appId = String(obj(app).app_id);
      alpha = await api.mintNode({ name: "alpha" });
      alphaClient = api.client(alpha);
      api.cp.ctx.events.onHint((hint) => hints.push(hint));
    });
    after(async () => {
      await api.close();
      await variant.cleanup();
    });

    const ctx = () => api.cp.ctx;
    const db = () => ctx().controlDb;
    const post = (path: string, body: unknown, token = root) => call(admin, "POST", `${V1}${path}`, { token, body });
    const blacklistChanges = () => db().selectFrom("server_blacklist_changes").selectAll().orderBy("id").execute();
    const epochChanges = () => db().selectFrom("auth_epoch_changes").selectAll().orderBy("id").execute();
    const audits = (action: string) =>
      db().selectFrom("agent_audit_logs").selectAll().where("action", "=", action).orderBy("created_at").execute();
    const addRuntimeUser = async (id: string, app: string, epoch: number) => {
      const now = api.cp.clock.now();
      await ctx()
        .runtimeDb.insertInto("users")
        .values({
          id,
          app_id: app,
          username: id,
          username_normalized: id,
          email: null,
          password_hash: "x",
          auth_epoch: epoch,
          status: "active",
          invite_code_id: null,
          created_at: now,
          updated_at: now,
          last_login_at: null,
        })
        .execute();
    };
    const pull = async (who: NodeApiClient, node: NodeIdentity, stream: DeltaStream, since: number, limit?: number) => {
      const res = await who.request("GET", nodePaths.delta(node.nodeId, stream, since, limit));
      return res;
    };
    const pullPage = async (who: NodeApiClient, node: NodeIdentity, stream: DeltaStream, since: number, limit?: number) => {
      const res = await pull(who, node, stream, since, limit);
      assert.equal(res.status, 200, res.text);
      return stream === "blacklist" ? blacklistDeltaResponse.parse(res.json) : authEpochDeltaResponse.parse(res.json);
    };
    /** Follows next_since until has_more is false, as a node does; fails on any non-200. */
    const pullAll = async (who: NodeApiClient, node: NodeIdentity, stream: DeltaStream, since = 0, limit?: number) => {
      const changes: Array<AuthEpochChange | BlacklistChange> = [];
      let cursor = since;
      for (let guard = 0; guard < 10_000; guard++) {
        const page = await pullPage(who, node, stream, cursor, limit);
        changes.push(...page.changes);
        cursor = page.next_since;
        if (!page.has_more) return { changes, cursor, head: page.head };
      }
      throw new Error("pull did not finish");
    };
    const recordedCursor = async (nodeId: string, stream: DeltaStream) =>
      (
        await db()
          .selectFrom("node_delta_cursors")
          .select("cursor")
          .where("node_id", "=", nodeId)
          .where("stream", "=", stream)
          .executeTakeFirst()
      )?.cursor;

    // ---- blacklist (admin) ----------------------------------------------------------------

    it("POST /blacklist stores the canonical value, appends an add change, publishes blacklist.changed to every node and is audited", async () => {
      const cases: Array<[string, string, string]> = [
        ["ip", "2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
        ["ip", "::ffff:10.1.2.3", "10.1.2.3"],
        ["ip", "192.0.2.7", "192.0.2.7"],
        ["device", "dev-{A1B2}", "dev-{A1B2}"],
        ["user", "usr_banned_1", "usr_banned_1"],
      ];
      for (const [kind, value, stored] of cases) {
        const before = hints.length;
        const res = await post("/blacklist", { kind, value, reason: "abuse report 42" });
        assert.equal(res.status, 201, res.text);
        const entry = obj(res);
        assert.equal(entry.value, stored);
        assert.equal(entry.kind, kind);
        assert.equal(entry.state, "active");
        assert.equal(entry.removed_at, null);
        const change = (await blacklistChanges()).at(-1);
        assert.deepEqual(
          { entry_id: change?.entry_id, op: change?.op, kind: change?.kind, value: change?.value, reason: change?.reason },
          { entry_id: entry.id, op: "add", kind, value: stored, reason: "abuse report 42" },
        );
        assert.deepEqual(hints.slice(before), [{ event: "blacklist.changed", nodeId: null }]);
      }
      const audit = await audits("security.blacklist.add");
      assert.equal(audit.length, cases.length);
      assert.ok(audit.every((a) => a.result === "success" && a.target_type === "blacklist_entry" && a.target_id?.startsWith("ble_")));
    });

    it("expires_at accepts epoch ms and ISO-8601 with a zone, in the future", async () => {
      const now = api.cp.clock.now();
      const ms = await post("/blacklist", { kind: "ip", value: "198.51.100.1", expires_at: now + 3_600_000 });
      assert.equal(ms.status, 201, ms.text);
      assert.equal(obj(ms).expires_at, now + 3_600_000);
      const iso = new Date(now + 86_400_000).toISOString();
      const isoRes = await post("/blacklist", { kind: "device", value: "dev-iso", expires_at: iso });
      assert.equal(isoRes.status, 201, isoRes.text);
      assert.equal(obj(isoRes).expires_at, Date.parse(iso));
      assert.equal((await blacklistChanges()).at(-1)?.expires_at, Date.parse(iso), "the change carries the expiry to nodes");
    });

    it("a live duplicate (same kind and canonical value) → 409 CONFLICT, nothing stored", async () => {
      const baseline = await snapshotDb(ctx());
      for (const value of ["2001:db8::1", "2001:0db8::0:1", "::FFFF:10.1.2.3"]) {
        const res = await post("/blacklist", { kind: "ip", value });
        assert.equal(res.status, 409, `${value}: ${res.text}`);
        assert.equal(obj(res).error, "CONFLICT");
      }
      assert.deepEqual(await snapshotDb(ctx()), baseline);
      const ok = await post("/blacklist", { kind: "device", value: "2001:db8::1" });
      assert.equal(ok.status, 201, "the same value under another kind is another entry");
    });

    it("an expired entry does not block a new one: it is retired (remove change) and the new one added", async () => {
      const now = api.cp.clock.now();
      const first = obj(await post("/blacklist", { kind: "user", value: "usr_expiring", expires_at: now + 1000 }));
      api.cp.clock.advance(2000);
      const res = await post("/blacklist", { kind: "user", value: "usr_expiring" });
      assert.equal(res.status, 201, res.text);
      const changes = (await blacklistChanges()).slice(-2);
      assert.deepEqual(
        changes.map((c) => [c.entry_id, c.op]),
        [
          [first.id, "remove"],
          [obj(res).id, "add"],
        ],
      );
      const old = obj(await call(admin, "GET", `${V1}/blacklist/${String(first.id)}`, { token: root }));
      assert.equal(old.state, "removed");
    });

    it("bad blacklist input → clear 4xx, nothing stored", async () => {
      const now = api.cp.clock.now();
      const cases: Array<[string, { body?: unknown; raw?: string; type?: string }, number, string]> = [
        ["empty object", { body: {} }, 400, "VALIDATION_FAILED"],
        ["empty body", { raw: "" }, 400, "VALIDATION_FAILED"],
        ["malformed JSON", { raw: '{"kind":' }, 400, "MALFORMED_JSON"],
        ["text/plain", { raw: '{"kind":"ip","value":"1.2.3.4"}', type: "text/plain" }, 415, "UNSUPPORTED_MEDIA_TYPE"],
        ["unknown field", { body: { kind: "ip", value: "203.0.113.9", scope: "all" } }, 400, "VALIDATION_FAILED"],
        ["unknown kind", { body: { kind: "cidr", value: "10.0.0.0/8" } }, 400, "VALIDATION_FAILED"],
        ["value not a string", { body: { kind: "ip", value: 16909060 } }, 400, "VALIDATION_FAILED"],
        ["empty value", { body: { kind: "user", value: "" } }, 400, "VALIDATION_FAILED"],
        ["ip out of range", { body: { kind: "ip", value: "1.2.3.256" } }, 400, "VALIDATION_FAILED"],
        ["ip with leading zero", { body: { kind: "ip", value: "01.2.3.4" } }, 400, "VALIDATION_FAILED"],
        ["ip prefix", { body: { kind: "ip", value: "10.0.0.0/8" } }, 400, "VALIDATION_FAILED"],
        ["ip with zone", { body: { kind: "ip", value: "fe80::1%eth0" } }, 400, "VALIDATION_FAILED"],
        ["ip with space", { body: { kind: "ip", value: " 1.2.3.4" } }, 400, "VALIDATION_FAILED"],
        ["hostname as ip", { body: { kind: "ip", value: "evil.example" } }, 400, "VALIDATION_FAILED"],
        ["device with space", { body: { kind: "device", value: "dev 1" } }, 400, "VALIDATION_FAILED"],
        ["device with control char", { body: { kind: "device", value: "dev\u0000" } }, 400, "VALIDATION_FAILED"],
        ["device too long", { body: { kind: "device", value: "d".repeat(129) } }, 400, "VALIDATION_FAILED"],
        ["user non-ascii", { body: { kind: "user", value: "usér" } }, 400, "VALIDATION_FAILED"],
        [
          "reason with quotes",
          { body: { kind: "ip", value: "203.0.113.9", reason: "x'; DROP TABLE nodes; --" } },
          400,
          "VALIDATION_FAILED",
        ],
        ["reason too long", { body: { kind: "ip", value: "203.0.113.9", reason: "r".repeat(501) } }, 400, "VALIDATION_FAILED"],
        ["expires_at in the past (ms)", { body: { kind: "ip", value: "203.0.113.9", expires_at: now - 1 } }, 400, "VALIDATION_FAILED"],
        ["expires_at now", { body: { kind: "ip", value: "203.0.113.9", expires_at: now } }, 400, "VALIDATION_FAILED"],
        [
          "expires_at in the past (ISO)",
          { body: { kind: "ip", value: "203.0.113.9", expires_at: "2001-01-01T00:00:00Z" } },
          400,
          "VALIDATION_FAILED",
        ],
        [
          "expires_at ISO without zone",
          { body: { kind: "ip", value: "203.0.113.9", expires_at: "2099-01-01T00:00:00" } },
          400,
          "VALIDATION_FAILED",
        ],
        ["expires_at prose", { body: { kind: "ip", value: "203.0.113.9", expires_at: "tomorrow" } }, 400, "VALIDATION_FAILED"],
        ["expires_at fractional", { body: { kind: "ip", value: "203.0.113.9", expires_at: now + 1.5 } }, 400, "VALIDATION_FAILED"],
        ["expires_at absurd", { body: { kind: "ip", value: "203.0.113.9", expires_at: 8.64e15 } }, 400, "VALIDATION_FAILED"],
        ["expires_at boolean", { body: { kind: "ip", value: "203.0.113.9", expires_at: true } }, 400, "VALIDATION_FAILED"],
      ];
      const baseline = await snapshotDb(ctx());
      const hintsBefore = hints.length;
      for (const [label, input, status, code] of cases) {
        const res =
          input.raw !== undefined
            ? await call(admin, "POST", `${V1}/blacklist`, {
                token: root,
                rawBody: input.raw,
                headers: { "content-type": input.type ?? "application/json" },
              })
            : await post("/blacklist", input.body);
        assert.equal(res.status, status, `${label}: ${res.status} ${res.text.slice(0, 300)}`);
        assert.equal(obj(res).error, code, label);
      }
      assert.deepEqual(await snapshotDb(ctx()), baseline, "nothing stored");
      assert.equal(hints.length, hintsBefore, "no hint for a refused write");
      const failures = (await audits("security.blacklist.add")).filter((a) => a.result === "failure");
      assert.ok(failures.length >= cases.length, "refusals are audited");
    });

    it("GET /blacklist lists live entries newest first, filters by kind, shows removed ones on request, pages", async () => {
      const all = obj(await call(admin, "GET", `${V1}/blacklist?page_size=200`, { token: operator }));
      const items = all.items as Obj[];
      assert.equal(all.total, items.length);
      assert.ok(items.every((e) => e.removed_at === null));
      const created = items.map((e) => Number(e.created_at));
      assert.deepEqual(
        created,
        [...created].sort((a, b) => b - a),
      );
      const ips = obj(await call(admin, "GET", `${V1}/blacklist?kind=ip`, { token: root }));
      assert.ok((ips.items as Obj[]).length > 0 && (ips.items as Obj[]).every((e) => e.kind === "ip"));
      const withRemoved = obj(await call(admin, "GET", `${V1}/blacklist?include_removed=true&page_size=200`, { token: root }));
      assert.equal(withRemoved.total, Number(all.total) + 1, "the retired usr_expiring entry");
      const page = obj(await call(admin, "GET", `${V1}/blacklist?page=2&page_size=2`, { token: root }));
      assert.deepEqual(
        (page.items as Obj[]).map((e) => e.id),
        items.slice(2, 4).map((e) => e.id),
      );
      for (const q of ["kind=cidr", "include_removed=yes", "page=0", "page_size=1000"]) {
        const res = await call(admin, "GET", `${V1}/blacklist?${q}`, { token: root });
        assert.equal(res.status, 400, `${q}: ${res.text}`);
      }
    });

    it("DELETE /blacklist/:id marks it removed and appends a remove change; again → 409; unknown → 404; nothing stored on refusal", async () => {
      const entry = obj(await post("/blacklist", { kind: "ip", value: "203.0.113.50", reason: "temp" }));
      const before = hints.length;
      const res = await call(admin, "DELETE", `${V1}/blacklist/${String(entry.id)}`, { token: root });
      assert.equal(res.status, 200, res.text);
      assert.equal(obj(res).state, "removed");
      assert.equal(obj(res).removed_at, api.cp.clock.now());
      const change = (await blacklistChanges()).at(-1);
      assert.deepEqual([change?.entry_id, change?.op, change?.kind, change?.value], [entry.id, "remove", "ip", "203.0.113.50"]);
      assert.deepEqual(hints.slice(before), [{ event: "blacklist.changed", nodeId: null }]);
      assert.ok((await audits("security.blacklist.remove")).some((a) => a.target_id === entry.id && a.result === "success"));

      const baseline = await snapshotDb(ctx());
      const again = await call(admin, "DELETE", `${V1}/blacklist/${String(entry.id)}`, { token: root });
      assert.equal(again.status, 409);
      assert.equal(obj(again).error, "BLACKLIST_ENTRY_REMOVED");
      for (const id of ["ble_doesNotExist0000000000", "not%20an%20id", "x".repeat(80)]) {
        const missing = await call(admin, "DELETE", `${V1}/blacklist/${id}`, { token: root });
        assert.equal(missing.status, 404, `${id}: ${missing.text}`);
      }
      assert.equal((await call(admin, "GET", `${V1}/blacklist/ble_doesNotExist0000000000`, { token: root })).status, 404);
      assert.deepEqual(await snapshotDb(ctx()), baseline);
      const added = await post("/blacklist", { kind: "ip", value: "203.0.113.50" });
      assert.equal(added.status, 201, "a removed entry no longer blocks the value");
    });

    it("roles: the operator reads but cannot write; no token → 401; refusals store nothing", async () => {
      const baseline = await snapshotDb(ctx());
      const entryId = String((obj(await call(admin, "GET", `${V1}/blacklist`, { token: root })).items as Obj[])[0]?.id);
      for (const [method, path, body] of [
        ["POST", "/blacklist", { kind: "ip", value: "203.0.113.77" }],
        ["DELETE", `/blacklist/${entryId}`, undefined],
        ["POST", "/auth-epochs", { user_id: "usr_role_test" }],
      ] as const) {
        const forbidden = await call(admin, method, `${V1}${path}`, { token: operator, ...(body ? { body } : {}) });
        assert.equal(forbidden.status, 403, `${method} ${path}: ${forbidden.text}`);
        const anonymous = await call(admin, method, `${V1}${path}`, body ? { body } : {});
        assert.equal(anonymous.status, 401);
      }
      for (const path of ["/blacklist", `/blacklist/${entryId}`, "/auth-epochs"]) {
        assert.equal((await call(admin, "GET", `${V1}${path}`, { token: operator })).status, 200, path);
        assert.equal((await call(admin, "GET", `${V1}${path}`)).status, 401, path);
      }
      assert.deepEqual(await snapshotDb(ctx()), baseline);
    });

    // ---- auth epochs (admin) --------------------------------------------------------------

    it("POST /auth-epochs bumps past the log and the Runtime DB, raises users.auth_epoch, publishes epoch.bumped", async () => {
      const before = hints.length;
      const first = await post("/auth-epochs", { user_id: "usr_not_in_runtime", reason: "password reset" });
      assert.equal(first.status, 201, first.text);
      assert.equal(obj(first).epoch, 1);
      assert.equal(obj(first).runtime_user_updated, false);
      assert.equal(obj(await post("/auth-epochs", { user_id: "usr_not_in_runtime" })).epoch, 2);
      assert.deepEqual(hints.slice(before), [
        { event: "epoch.bumped", nodeId: null },
        { event: "epoch.bumped", nodeId: null },
      ]);

      await addRuntimeUser("usr_runtime_7", appId, 7);
      const bumped = await post("/auth-epochs", { user_id: "usr_runtime_7", app_id: appId });
      assert.equal(bumped.status, 201, bumped.text);
      assert.equal(obj(bumped).epoch, 8, "past the Runtime DB's epoch");
      assert.equal(obj(bumped).app_id, appId);
      const user = await ctx()
        .runtimeDb.selectFrom("users")
        .select("auth_epoch")
        .where("id", "=", "usr_runtime_7")
        .executeTakeFirstOrThrow();
      assert.equal(Number(user.auth_epoch), 8);
      assert.equal(obj(await post("/auth-epochs", { user_id: "usr_runtime_7" })).epoch, 9, "past the log, whatever the app scope");
      const last = (await epochChanges()).at(-1);
      assert.deepEqual([last?.user_id, last?.epoch, last?.app_id], ["usr_runtime_7", 9, null]);
      // The ManualClock stands still, so audit rows are told apart by target, not by time.
      const audit = (await audits("security.epoch.bump")).filter((a) => a.target_id === "usr_runtime_7");
      assert.deepEqual(
        audit.map((a) => [a.result, a.target_type]),
        [
          ["success", "user"],
          ["success", "user"],
        ],
      );
    });

    it("bad epoch input → clear 4xx, nothing stored in either database", async () => {
      await addRuntimeUser("usr_other_app", "app_someOtherApp000000000", 0);
      const cases: Array<[string, { body?: unknown; raw?: string }, number, string]> = [
        ["empty object", { body: {} }, 400, "VALIDATION_FAILED"],
        ["empty body", { raw: "" }, 400, "VALIDATION_FAILED"],
        ["malformed JSON", { raw: "{" }, 400, "MALFORMED_JSON"],
        ["unknown field", { body: { user_id: "usr_x", epoch: 99 } }, 400, "VALIDATION_FAILED"],
        ["user_id number", { body: { user_id: 5 } }, 400, "VALIDATION_FAILED"],
        ["user_id with quote", { body: { user_id: "usr'x" } }, 400, "VALIDATION_FAILED"],
        ["user_id too long", { body: { user_id: "u".repeat(65) } }, 400, "VALIDATION_FAILED"],
        ["unknown app", { body: { user_id: "usr_x", app_id: "app_doesNotExist00000000" } }, 404, "NOT_FOUND"],
        ["user of another app", { body: { user_id: "usr_other_app", app_id: appId } }, 400, "VALIDATION_FAILED"],
        ["bad reason", { body: { user_id: "usr_x", reason: "<script>" } }, 400, "VALIDATION_FAILED"],
      ];
      const baseline = await snapshotDb(ctx());
      const hintsBefore = hints.length;
      for (const [label, input, status, code] of cases) {
        const res =
          input.raw !== undefined
            ? await call(admin, "POST", `${V1}/auth-epochs`, {
                token: root,
                rawBody: input.raw,
                headers: { "content-type": "application/json" },
              })
            : await post("/auth-epochs", input.body);
        assert.equal(res.status, status, `${label}: ${res.status} ${res.text.slice(0, 300)}`);
        assert.equal(obj(res).error, code, label);
      }
      assert.deepEqual(await snapshotDb(ctx()), baseline);
      assert.equal(hints.length, hintsBefore);
    });

    it("GET /auth-epochs pages the history newest first and filters by user", async () => {
      const all = obj(await call(admin, "GET", `${V1}/auth-epochs?page_size=200`, { token: operator }));
      const ids = (all.items as Obj[]).map((c) => Number(c.id));
      assert.deepEqual(
        ids,
        [...ids].sort((a, b) => b - a),
      );
      const mine = obj(await call(admin, "GET", `${V1}/auth-epochs?user_id=usr_runtime_7`, { token: root }));
      assert.deepEqual(
        (mine.items as Obj[]).map((c) => c.epoch),
        [9, 8],
      );
      assert.equal((await call(admin, "GET", `${V1}/auth-epochs?user_id=bad'id`, { token: root })).status, 400);
    });

    // ---- node delta pulls -----------------------------------------------------------------

    it("a pull returns the changes after since in id order, pages with next_since/has_more, and records the node's cursor", async () => {
      for (const stream of ["blacklist", "auth-epochs"] as const) {
        const expected = stream === "blacklist" ? await blacklistChanges() : await epochChanges();
        const head = Number(expected.at(-1)?.id);
        const whole = await pullPage(alphaClient, alpha, stream, 0);
        assert.deepEqual(
          whole.changes.map((c) => c.id),
          expected.map((c) => Number(c.id)),
        );
        assert.deepEqual([whole.head, whole.next_since, whole.has_more], [head, head, false]);

        const first = await pullPage(alphaClient, alpha, stream, 0, 2);
        assert.deepEqual([first.changes.length, first.has_more, first.next_since], [2, true, first.changes[1]?.id]);
        const paged = await pullAll(alphaClient, alpha, stream, 0, 3);
        assert.deepEqual(
          paged.changes.map((c) => c.id),
          whole.changes.map((c) => c.id),
        );
        assert.equal(paged.cursor, head);

        const atHead = await pullPage(alphaClient, alpha, stream, head);
        assert.deepEqual([atHead.changes, atHead.next_since, atHead.has_more, atHead.head], [[], head, false, head]);
        assert.equal(await recordedCursor(alpha.nodeId, stream), head, "cursor = since of the last pull");
      }
      const sample = (await pullPage(alphaClient, alpha, "blacklist", 0, 1)).changes[0] as BlacklistChange;
      assert.deepEqual(Object.keys(sample).sort(), ["created_at", "entry_id", "expires_at", "id", "kind", "op", "reason", "value"]);
      const epochSample = (await pullPage(alphaClient, alpha, "auth-epochs", 0, 1)).changes[0] as AuthEpochChange;
      assert.deepEqual(Object.keys(epochSample).sort(), ["app_id", "created_at", "epoch", "id", "user_id"]);
    });

    it("bad since / limit → 400 (nothing recorded); since ahead of the log → 410; unknown stream → 404; another node's path → 403", async () => {
      const head = Number((await blacklistChanges()).at(-1)?.id);
      const base = `/cp/v2/nodes/${alpha.nodeId}/deltas/blacklist`;
      const bad = [
        "since=-1",
        "since=1.5",
        "since=abc",
        "since=1e30",
        "since=",
        "since=%201",
        "since=0x10",
        "since=99999999999999999",
        "",
        "limit=5",
        "since=0&limit=0",
        `since=0&limit=${MAX_DELTA_PAGE + 1}`,
        "since=0&limit=100000",
        "since=0&limit=abc",
        "since=0&limit=-5",
        "since=0&limit=2.5",
      ];
      const beta = await api.mintNode({ name: "beta-intruder-target" });
      const baseline = await snapshotDb(ctx());
      for (const q of bad) {
        const res = await alphaClient.request("GET", `${base}?${q}`);
        assert.equal(res.status, 400, `${q}: ${res.status} ${res.text}`);
        assert.equal(obj(res).error, "VALIDATION_FAILED", q);
      }
      // A cursor ahead of the log comes from another history (a Control DB restored from an
      // older backup): told explicitly to replay from 0, never a plain refusal it cannot leave.
      const ahead = await alphaClient.request("GET", `${base}?since=${head + 1}`);
      assert.equal(ahead.status, 410, ahead.text);
      assert.equal(obj(ahead).error, "DELTA_CURSOR_EXPIRED");
      assert.equal((obj(ahead).details as Record<string, unknown>).head, head);
      const unknown = await alphaClient.request("GET", `/cp/v2/nodes/${alpha.nodeId}/deltas/sessions?since=0`);
      assert.equal(unknown.status, 404);
      const foreign = await alphaClient.request("GET", nodePaths.delta(beta.nodeId, "blacklist", 0));
      assert.equal(foreign.status, 403);
      const after = await snapshotDb(ctx());
      // The 403 is recorded as a node authentication event; nothing else may change.
      delete (after as Record<string, unknown>)["control.node_auth_events"];
      delete (baseline as Record<string, unknown>)["control.node_auth_events"];
      assert.deepEqual(after, baseline, "no cursor recorded by a refused pull");
      // A node that never pulls would hold retention at 0 for the tests below.
      await db().deleteFrom("nodes").where("id", "=", beta.nodeId).execute();
    });

    // ---- retention ------------------------------------------------------------------------

    it("compaction never passes the slowest node's cursor", async () => {
      const bl = await blacklistChanges();
      // The first remove change: at least one add+remove pair lies at or below it.
      const mid = Number(bl.find((c) => c.op === "remove")?.id);
      await pullPage(alphaClient, alpha, "blacklist", mid);
      await pullPage(alphaClient, alpha, "auth-epochs", 0);
      const [epochs, blacklist] = await compactChangeLogs(ctx());
      assert.deepEqual([epochs?.floor, epochs?.pruned], [0, 0], "a node at 0 holds the whole epoch log");
      assert.equal(blacklist?.floor, mid);
      const left = await blacklistChanges();
      const gone = bl.filter((c) => !left.some((l) => l.id === c.id));
      assert.ok(
        gone.every((c) => Number(c.id) <= mid),
        "nothing above the floor pruned",
      );
      assert.ok(gone.length > 0, "the removed pairs below the floor went");
    });

    it("a node without a cursor row counts as 0 and holds retention; with no nodes nothing is pruned", async () => {
      const lazy = await api.mintNode({ name: "lazy" });
      const user = `usr_${newId("t").slice(-8)}`;
      await post("/auth-epochs", { user_id: user });
      await post("/auth-epochs", { user_id: user });
      const head = Number((await epochChanges()).at(-1)?.id);
      await pullPage(alphaClient, alpha, "auth-epochs", head);
      const [epochs] = await compactChangeLogs(ctx());
      assert.deepEqual([epochs?.floor, epochs?.pruned], [0, 0]);
      await db().deleteFrom("nodes").where("id", "=", lazy.nodeId).execute();

      const lonely = await createTestCp(variant, "secdelta_nonodes");
      try {
        await lonely.ctx.controlDb
          .insertInto("auth_epoch_changes")
          .values([1, 2].map((epoch) => ({ user_id: "u", app_id: null, epoch, reason: null, created_at: 0, created_by: null })))
          .execute();
        const reports = await compactChangeLogs(lonely.ctx);
        assert.deepEqual(
          reports.map((r) => [r.floor, r.pruned]),
          [
            [null, 0],
            [null, 0],
          ],
        );
      } finally {
        await lonely.close();
      }
    });

    it("with every node at the head, superseded changes go; replaying the retained log from 0 rebuilds exactly the full log's state", async () => {
      // More history: a user bumped many times, an entry added and removed, one left live.
      for (let i = 0; i < 4; i++) await post("/auth-epochs", { user_id: "usr_many_bumps" });
      await post("/auth-epochs", { user_id: "usr_runtime_7", app_id: appId });
      const tmp = obj(await post("/blacklist", { kind: "device", value: "dev-temporary" }));
      await call(admin, "DELETE", `${V1}/blacklist/${String(tmp.id)}`, { token: root });
      await post("/blacklist", { kind: "device", value: "dev-stays" });
      const now = api.cp.clock.now();
      await post("/blacklist", { kind: "ip", value: "198.51.100.99", expires_at: now + 500 });
      api.cp.clock.advance(1000);

      const full: ReplayedState = { blacklist: new Map(), epochs: new Map() };
      for (const stream of ["auth-epochs", "blacklist"] as const)
        applyChanges(full, stream, (await pullAll(alphaClient, alpha, stream)).changes);
      const before = { bl: await blacklistChanges(), ep: await epochChanges() };
      const hintsBefore = hints.length;

      // The retention pass first retires the expired entry (a remove change, a hint) ...
      await compactChangeLogs(ctx());
      assert.ok(
        hints.slice(hintsBefore).some((h) => h.event === "blacklist.changed"),
        "retiring an expired entry is a change",
      );
      applyChanges(full, "blacklist", (await pullAll(alphaClient, alpha, "blacklist", before.bl.at(-1)?.id)).changes);
      assert.ok(![...full.blacklist.values()].includes("ip:198.51.100.99"));
      // ... then, with alpha at both heads, compacts.
      const heads = { ep: Number((await epochChanges()).at(-1)?.id), bl: Number((await blacklistChanges()).at(-1)?.id) };
      await pullPage(alphaClient, alpha, "auth-epochs", heads.ep);
      await pullPage(alphaClient, alpha, "blacklist", heads.bl);
      const reports = await compactChangeLogs(ctx());
      assert.ok(
        reports.every((r) => r.pruned > 0),
        `both logs compacted: ${JSON.stringify(reports)}`,
      );

      const keptEpochs = await epochChanges();
      const pairs = keptEpochs.map((c) => `${c.user_id}|${c.app_id ?? ""}`);
      assert.equal(new Set(pairs).size, pairs.length, "one change per user+app survives: the newest");
      const keptBlacklist = await blacklistChanges();
      const live = await db()
        .selectFrom("server_blacklist_entries")
        .select(["id", "kind", "value"])
        .where("removed_at", "is", null)
        .execute();
      assert.deepEqual(new Set(keptBlacklist.map((c) => c.entry_id)), new Set(live.map((e) => e.id)), "only live entries keep changes");
      assert.ok(keptBlacklist.every((c) => c.op === "add"));

      const retention = await db().selectFrom("delta_retention").selectAll().orderBy("stream").execute();
      const prunedThrough = Object.fromEntries(retention.map((r) => [r.stream, Number(r.pruned_through)]));
      const prunedIds = (all: Array<{ id: number }>, kept: Array<{ id: number }>) =>
        all.filter((c) => !kept.some((k) => k.id === c.id)).map((c) => Number(c.id));
      assert.equal(prunedThrough["auth-epochs"], Math.max(...prunedIds(before.ep, keptEpochs)));
      assert.ok(Number(prunedThrough.blacklist) >= Math.max(...prunedIds(before.bl, keptBlacklist)));

      // A node that joins now replays from 0, a page at a time, straight through the pruned range.
      const fresh = await api.mintNode({ name: "fresh" });
      const freshClient = api.client(fresh);
      const replayed: ReplayedState = { blacklist: new Map(), epochs: new Map() };
      for (const stream of ["auth-epochs", "blacklist"] as const) {
        const result = await pullAll(freshClient, fresh, stream, 0, 1);
        applyChanges(replayed, stream, result.changes);
        assert.equal(
          result.cursor,
          stream === "blacklist" ? heads.bl : heads.ep,
          "the replay ends at the head even when the tail was pruned",
        );
      }
      assert.deepEqual(replayed, full, "the compacted log rebuilds the same state");
      assert.deepEqual(
        new Set(replayed.blacklist.values()),
        new Set(live.map((e) => `${e.kind}:${e.value}`)),
        "and it is the CP's live blacklist",
      );
    });

    it("a cursor inside the pruned range that the node did not reach by replaying → 410 DELTA_CURSOR_EXPIRED with the exact body; since=0 always works", async () => {
      const retention = Object.fromEntries(
        (await db().selectFrom("delta_retention").selectAll().execute()).map((r) => [r.stream, Number(r.pruned_through)]),
      );
      for (const stream of ["blacklist", "auth-epochs"] as const) {
        const prunedThrough = Number(retention[stream]);
        assert.ok(prunedThrough > 1, `${stream} has a pruned range`);
        const stale = prunedThrough - 1;
        const recorded = await recordedCursor(alpha.nodeId, stream);
        const res = await pull(alphaClient, alpha, stream, stale);
        assert.equal(res.status, 410, res.text);
        const body = cursorExpiredBody.strict().parse(res.json);
        const head = stream === "blacklist" ? Number((await blacklistChanges()).at(-1)?.id) : Number((await epochChanges()).at(-1)?.id);
        assert.deepEqual(body.details, { since: stale, oldest_available: prunedThrough, head: Math.max(head, prunedThrough) });
        assert.deepEqual(Object.keys(body.details).sort(), ["head", "oldest_available", "since"]);
        assert.equal(await recordedCursor(alpha.nodeId, stream), recorded, "a refused pull records nothing");

        const stranger = await api.mintNode({ name: `stranger-${stream}` });
        const strangerRes = await pull(api.client(stranger), stranger, stream, stale);
        assert.equal(strangerRes.status, 410, "no recorded cursor: its history is unknown");

        const replay = await pull(alphaClient, alpha, stream, 0);
        assert.equal(replay.status, 200, replay.text);
        assert.equal(await recordedCursor(alpha.nodeId, stream), 0, "since=0 resets the cursor, so the replay's own pages are trusted");
        await db().deleteFrom("nodes").where("id", "=", stranger.nodeId).execute();
      }
      assert.ok(api.cp.logLines.some((l) => l.includes("delta.cursor_expired")));
    });

    it("cursorExpired: the rule in one table", () => {
      const table: Array<[number, number, number | null, boolean]> = [
        [0, 10, null, false],
        [0, 10, 50, false],
        [10, 10, 50, false],
        [11, 10, null, false],
        [5, 10, null, true],
        [5, 10, 7, true],
        [5, 10, 5, false],
        [7, 10, 5, false],
      ];
      for (const [since, pruned, recorded, expired] of table)
        assert.equal(cursorExpired(since, pruned, recorded), expired, `${since}/${pruned}/${recorded}`);
    });
  });
}
