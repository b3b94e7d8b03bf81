/**
 * Business administration (/admin/v1/applications/:app_id/{users,card-keys,invite-codes,sessions})
 * in process (`app.request()`), on SQLite and on PostgreSQL. Every endpoint's success path and
 * its refusals — bad input, unknown ids, another application's ids, a role too low, an
 * application in the recycle bin — each refusal a clear 4xx that changes nothing in either
 * database. What ends sessions is checked where it lands: the Control DB's auth-epoch change
 * log, the Runtime DB's sessions, the force_logout commands queued for every node. Codes are
 * returned once and stored only as hashes; passwords, codes and tokens reach no table and no log.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type Kysely, sql } from "kysely";
import type { HintMessage } from "../../src/cp/services/event-bus.js";
import { loadPasswordHashKey } from "../../src/cp/services/setup/setup.js";
import {
  CARD_KEY_GROUPS,
  canonicalCode,
  codeHash,
  codeHint,
  INVITE_CODE_GROUPS,
  PASSWORD_HASH_PREFIX,
  verifyPassword,
} from "../../src/shared/credentials/index.js";
import { insertSession } from "../../src/shared/db/runtime/index.js";
import { newId, sha256Hex } from "../../src/shared/ids.js";
import {
  type AdminApp,
  buildAdminApp,
  type CallResult,
  call as callAdmin,
  jsonObject as json,
  loginAs,
  expectRefused as refused,
  snapshotDb,
} from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";

/** Request ids of every admin call, in order: audit rows of one manual-clock millisecond come back in no defined order. */
const requestIds: string[] = [];
const call: typeof callAdmin = async (...args) => {
  const res = await callAdmin(...args);
  requestIds.push(res.headers.get("x-request-id") ?? "");
  return res;
};

import { dbVariants } from "../helpers/databases.js";

type Obj = Record<string, unknown>;
type Role = "root" | "admin" | "operator";

const V1 = "/admin/v1";
const SECOND = 1000;
const MINUTE = 60 * SECOND;
const DAY = 24 * 60 * MINUTE;
const TEN_YEARS_S = 10 * 365 * 86_400;

const ADMIN_PASSWORD = "Biz-Adm-Passw0rd-One";
const OPERATOR_PASSWORD = "Biz-Op-Passw0rd-Two";
/** End-user passwords: each must end up only as a hash, nowhere else. */
const PW = {
  alice: "Alice-Initial-Pass-1",
  aliceNew: "Alice-Reset-Pass-2",
  bob: "Bob's pass; DROP TABLE users; --",
  carol: "Carol-Pass-3 with spaces",
  dave: "Dave-Pass-4\u0000nul",
  erin: "Erin-Pass-5-€uro",
  other: "Other-App-Pass-6",
  gone: "Gone-App-Pass-7",
  eight: "8charsOK",
  max: `${"M".repeat(255)}!`,
  never: "Never-Stored-Pass-9",
};
const CARD_CODE = /^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){4}$/;
const INVITE_CODE = /^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}$/;
const MISSING_APP = "app_doesNotExist000000000";
const BAD_IDS = ["bad%27id", "a".repeat(65), "caf%C3%A9", "%00", "..%2F..", "%22%3B%20DROP%20TABLE%20users%3B%20--"];

function ok(res: CallResult, status: number, label: string): Obj {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  return res.headers.get("content-type")?.startsWith("application/json") ? json(res) : {};
}

function items(body: Obj): Obj[] {
  return body.items as Obj[];
}

/** Every cell of every table of one database, as text (to prove a secret is stored nowhere). */
async function dumpDb(db: Kysely<unknown>): Promise<string> {
  const tables = (await db.introspection.getTables()).map((t) => t.name);
  const parts: string[] = [];
  for (const name of tables) {
    const { rows } = await sql<Obj>`select * from ${sql.table(name)}`.execute(db);
    parts.push(JSON.stringify(rows, (_k, v) => (typeof v === "bigint" ? v.toString() : Buffer.isBuffer(v) ? v.toString("latin1") : v)));
  }
  return parts.join("\n");
}

for (const variant of dbVariants()) {
  describe(`business administration on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    const tokens: Record<Role, string> = { root: "", admin: "", operator: "" };
    const agentIds: Record<Role, string> = { root: "", admin: "", operator: "" };
    const apps = { a: "", b: "", gone: "" };
    /** Ids in the recycled application, and in B (for "wrong application" checks). */
    const goneIds = { user: "", card: "", invite: "", session: "", batch: "" };
    const bIds = { user: "", card: "", invite: "", session: "", batch: "" };
    const users = { alice: "", bob: "", carol: "", dave: "", eight: "", max: "" };
    /** Every password and code handed out: none may be stored or logged. */
    const secrets = new Set<string>(Object.values(PW));
    const hints: HintMessage[] = [];
    const tokenHashes: string[] = [];

    const biz = (method: string, appId: string, path: string, body?: unknown, role: Role = "admin") =>
      call(app, method, `${V1}/applications/${appId}${path}`, { token: tokens[role], ...(body !== undefined ? { body } : {}) });
    const rdb = () => cp.ctx.runtimeDb;
    const cdb = () => cp.ctx.controlDb;
    const now = () => cp.clock.now();

    /** Runs refusals and proves that neither database changed (log tables aside). */
    const unchanged = async (label: string, run: () => Promise<void>) => {
      // Authenticating records when an agent session was last used: not a business change, so done first.
      for (const token of Object.values(tokens)) ok(await call(app, "GET", `${V1}/auth/me`, { token }), 200, "warm-up");
      const before = await snapshotDb(cp.ctx);
      await run();
      assert.deepEqual(await snapshotDb(cp.ctx), before, `${label}: the database changed`);
    };

    const createUser = async (appId: string, username: string, password: string, email?: string): Promise<Obj> => {
      cp.clock.advance(1); // distinct creation times: lists are newest first
      const res = await biz("POST", appId, "/users", { username, password, ...(email !== undefined ? { email } : {}) });
      return ok(res, 201, `create user ${username}`);
    };

    interface SeedSession {
      appId?: string;
      userId?: string | null;
      cardKeyId?: string | null;
      deviceId?: string;
      createdAt?: number;
      heartbeatAt?: number;
      expiresAt?: number;
      revokedAt?: number | null;
    }
    const seedSession = async (s: SeedSession = {}): Promise<string> => {
      const id = newId("rss");
      const tokenHash = sha256Hex(randomBytes(32));
      tokenHashes.push(tokenHash);
      const t = now();
      await insertSession(rdb(), {
        id,
        token_hash: tokenHash,
        app_id: s.appId ?? apps.a,
        user_id: s.userId === undefined ? null : s.userId,
        card_key_id: s.cardKeyId ?? null,
        device_id: s.deviceId ?? "dev-default",
        auth_epoch: 0,
        node_id: "nod_seeded",
        ip: "203.0.113.7",
        created_at: s.createdAt ?? t,
        expires_at: s.expiresAt ?? t + DAY,
        last_heartbeat_at: s.heartbeatAt ?? t,
        revoked_at: s.revokedAt ?? null,
        revoke_reason: s.revokedAt ? "seeded" : null,
      });
      return id;
    };
    const seedDevice = async (appId: string, userId: string, deviceId: string, lastSeen = now()) => {
      await rdb()
        .insertInto("device_bindings")
        .values({ app_id: appId, user_id: userId, device_id: deviceId, created_at: lastSeen - MINUTE, last_seen_at: lastSeen })
        .execute();
    };
    const sessionRow = (id: string) => rdb().selectFrom("sessions").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const epochChanges = (userId: string) =>
      cdb().selectFrom("auth_epoch_changes").selectAll().where("user_id", "=", userId).orderBy("id").execute();
    const forceLogouts = async () =>
      (await cdb().selectFrom("commands").selectAll().where("kind", "=", "force_logout").orderBy("seq").execute()).map((c) => ({
        ...c,
        payload: JSON.parse(c.payload) as Obj,
      }));
    const userAudit = (event: string) =>
      rdb().selectFrom("user_audit_logs").selectAll().where("event", "=", event).orderBy("created_at").execute();
    const agentAudit = (action: string) =>
      cdb().selectFrom("agent_audit_logs").selectAll().where("action", "=", action).orderBy("created_at").execute();
    const lastAgentAudit = async (action: string) =>
      (await agentAudit(action))
        .sort((a, b) => requestIds.lastIndexOf(a.request_id ?? "") - requestIds.lastIndexOf(b.request_id ?? ""))
        .at(-1);

    before(async () => {
      cp = await createTestCp(variant, "biz");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      tokens.root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      for (const [role, password] of [
        ["admin", ADMIN_PASSWORD],
        ["operator", OPERATOR_PASSWORD],
      ] as const) {
        const res = await call(app, "POST", `${V1}/agents`, { token: tokens.root, body: { username: `bz-${role}-agent`, password, role } });
        agentIds[role] = String(ok(res, 201, `create ${role}`).id);
        tokens[role] = (await loginAs(app, `bz-${role}-agent`, password)).access_token;
      }
      agentIds.root = String(json(await call(app, "GET", `${V1}/auth/me`, { token: tokens.root })).id);
      const newApp = async (name: string) =>
        String(ok(await call(app, "POST", `${V1}/applications`, { token: tokens.admin, body: { name } }), 201, name).app_id);
      apps.a = await newApp("Biz App A");
      apps.b = await newApp("Biz App B");
      apps.gone = await newApp("Biz App Gone");

      // Things in B (for "another application's id" checks) and in the app about to be recycled.
      for (const [appId, ids, password] of [
        [apps.b, bIds, PW.other],
        [apps.gone, goneIds, PW.gone],
      ] as const) {
        ids.user = String((await createUser(appId, "alice.smith", password)).id);
        const batch = ok(await biz("POST", appId, "/card-keys", { count: 1, duration_seconds: 3600 }), 201, "card in other app");
        ids.batch = String(batch.batch_id);
        const card = (batch.cards as Obj[])[0] as Obj;
        ids.card = String(card.id);
        secrets.add(String(card.code));
        const invites = ok(await biz("POST", appId, "/invite-codes", { count: 1, max_uses: 1 }), 201, "invite in other app");
        const invite = (invites.codes as Obj[])[0] as Obj;
        ids.invite = String(invite.id);
        secrets.add(String(invite.code));
        ids.session = await seedSession({ appId, userId: ids.user, deviceId: "dev-other" });
        await seedDevice(appId, ids.user, "dev-other");
      }
      ok(await call(app, "DELETE", `${V1}/applications/${apps.gone}`, { token: tokens.admin }), 200, "recycle app");
      cp.ctx.events.onHint((m) => hints.push(m));
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });

    // ---- users ------------------------------------------------------------------------------

    it("POST /users creates an active user: 201 without any hash, the stored hash verifies under the server key, audited twice", async () => {
      const created = await createUser(apps.a, "Alice.Smith", PW.alice, "alice@example.com");
      users.alice = String(created.id);
      assert.deepEqual(Object.keys(created).sort(), [
        "app_id",
        "auth_epoch",
        "created_at",
        "email",
        "id",
        "invite_code_id",
        "last_login_at",
        "status",
        "updated_at",
        "username",
      ]);
      assert.equal(created.username, "Alice.Smith", "the chosen spelling is kept for display");
      assert.equal(created.status, "active");
      assert.equal(created.auth_epoch, 0);
      assert.equal(created.app_id, apps.a);
      assert.match(users.alice, /^usr_/);

      const row = await rdb().selectFrom("users").selectAll().where("id", "=", users.alice).executeTakeFirstOrThrow();
      assert.equal(row.username_normalized, "alice.smith");
      assert.ok(row.password_hash.startsWith(PASSWORD_HASH_PREFIX));
      const key = await loadPasswordHashKey(cp.ctx);
      assert.ok(verifyPassword(PW.alice, row.password_hash, key), "the hash verifies with the server secret");
      assert.ok(!verifyPassword(PW.aliceNew, row.password_hash, key));

      const audit = (await userAudit("user.created")).find((r) => r.user_id === users.alice);
      assert.ok(audit, "user audit user.created");
      assert.equal(audit.app_id, apps.a);
      assert.equal(audit.actor, agentIds.admin);
      assert.equal((JSON.parse(audit.detail ?? "{}") as Obj).user_id, users.alice);
      const agent = await lastAgentAudit("business.user.create");
      assert.equal(agent?.result, "success");
      assert.equal(agent?.target_type, "user");
      assert.equal(agent?.target_id, users.alice);
      assert.equal(agent?.agent_id, agentIds.admin);

      users.bob = String((await createUser(apps.a, "bob", PW.bob, "bob@example.com")).id);
      users.carol = String((await createUser(apps.a, "carol", PW.carol, "Carol@Corp.Example")).id);
      users.dave = String((await createUser(apps.a, "dave_x", PW.dave)).id);
      users.eight = String((await createUser(apps.a, "eight", PW.eight)).id);
      users.max = String((await createUser(apps.a, "maxed", PW.max)).id);
      const dave = json(await biz("GET", apps.a, `/users/${users.dave}`));
      assert.equal(dave.email, null, "email is optional");
      assert.ok(
        verifyPassword(
          PW.dave,
          (await rdb().selectFrom("users").select("password_hash").where("id", "=", users.dave).executeTakeFirstOrThrow()).password_hash,
          key,
        ),
        "a password with NUL works like any",
      );
    });

    it("POST /users refusals: a taken name (any case, NFKC), bad username/password/email, unknown fields, wrong types, not JSON → 4xx; nothing changes", async () => {
      await unchanged("create refusals", async () => {
        refused(await biz("POST", apps.a, "/users", { username: "ALICE.smith", password: PW.never }), 409, "CONFLICT", "taken, other case");
        refused(await biz("POST", apps.a, "/users", { username: "ＡＬＩＣＥ.smith", password: PW.never }), 409, "CONFLICT", "taken, NFKC");
        for (const username of ["ab", "a b c", " alice2", "alice2 ", "x".repeat(33), "bad'name", "semi;colon", ".dot", "名".repeat(30), ""])
          refused(
            await biz("POST", apps.a, "/users", { username, password: PW.never }),
            400,
            "VALIDATION_FAILED",
            `username ${JSON.stringify(username)}`,
            "username",
          );
        for (const password of ["short12", "", "x".repeat(257), "€".repeat(100)])
          refused(
            await biz("POST", apps.a, "/users", { username: "newbie", password }),
            400,
            "VALIDATION_FAILED",
            `password of ${password.length}`,
            "password",
          );
        for (const email of ["not-an-email", "a@b", "a\u0000b@example.com", `${"x".repeat(250)}@example.com`])
          refused(
            await biz("POST", apps.a, "/users", { username: "newbie", password: PW.never, email }),
            400,
            "VALIDATION_FAILED",
            `email ${email.slice(0, 20)}`,
            "email",
          );
        const both = refused(
          await biz("POST", apps.a, "/users", { username: "x", password: "y" }),
          400,
          "VALIDATION_FAILED",
          "two problems",
        );
        assert.deepEqual(
          (both.details as Obj[]).map((d) => d.field),
          ["username", "password"],
          "every problem is named",
        );
        refused(await biz("POST", apps.a, "/users", { username: "newbie" }), 400, "VALIDATION_FAILED", "no password", "password");
        refused(
          await biz("POST", apps.a, "/users", { username: "newbie", password: PW.never, role: "root" }),
          400,
          "VALIDATION_FAILED",
          "extra",
          "role",
        );
        refused(
          await biz("POST", apps.a, "/users", { username: 123, password: PW.never }),
          400,
          "VALIDATION_FAILED",
          "number name",
          "username",
        );
        refused(
          await biz("POST", apps.a, "/users", { username: "newbie", password: PW.never, email: null }),
          400,
          "VALIDATION_FAILED",
          "null email",
          "email",
        );
        refused(await biz("POST", apps.a, "/users", []), 400, "VALIDATION_FAILED", "array body");
        refused(
          await call(app, "POST", `${V1}/applications/${apps.a}/users`, {
            token: tokens.admin,
            rawBody: "{",
            headers: { "content-type": "application/json" },
          }),
          400,
          "MALFORMED_JSON",
          "malformed",
        );
        refused(
          await call(app, "POST", `${V1}/applications/${apps.a}/users`, {
            token: tokens.admin,
            rawBody: JSON.stringify({ username: "newbie", password: PW.never }),
            headers: { "content-type": "text/plain" },
          }),
          415,
          "UNSUPPORTED_MEDIA_TYPE",
          "text/plain",
        );
      });
      const failed = await lastAgentAudit("business.user.create");
      assert.equal(failed?.result, "failure", "refusals are audited as failures");
      assert.equal(failed?.error_code, "UNSUPPORTED_MEDIA_TYPE");
      // The same name in another application is another user.
      assert.equal((await rdb().selectFrom("users").select("id").where("username_normalized", "=", "alice.smith").execute()).length, 3);
    });

    it("GET /users: newest first, paged, `q` matches username or email (wildcards literal), `status` filters; never a hash", async () => {
      const all = json(await biz("GET", apps.a, "/users?page_size=200", undefined, "operator"));
      assert.equal(all.total, 6);
      assert.deepEqual(
        items(all).map((u) => u.username),
        ["maxed", "eight", "dave_x", "carol", "bob", "Alice.Smith"],
      );
      const ids = items(all).map((u) => u.id);
      assert.ok(!ids.includes(bIds.user), "B's alice is not listed under A");
      const created = items(all).map((u) => u.created_at as number);
      assert.deepEqual(
        created,
        [...created].sort((x, y) => y - x),
        "newest first",
      );
      const seen: unknown[] = [];
      for (let page = 1; page <= 3; page++) {
        const body = json(await biz("GET", apps.a, `/users?page=${page}&page_size=2`));
        assert.equal(body.total, 6);
        assert.equal(body.page_size, 2);
        seen.push(...items(body).map((u) => u.id));
      }
      assert.deepEqual(seen, ids, "pages cover every user once, in order");
      const names = async (q: string) => items(json(await biz("GET", apps.a, `/users?${q}`))).map((u) => u.username);
      assert.deepEqual(await names("q=ALI"), ["Alice.Smith"]);
      assert.deepEqual(await names("q=corp.EX"), ["carol"], "email, case-insensitive");
      assert.deepEqual(await names("q=example.com"), ["bob", "Alice.Smith"]);
      assert.deepEqual(await names("q=_"), ["dave_x"], "_ is not a wildcard");
      assert.deepEqual(await names("q=%25"), [], "% is not a wildcard");
      assert.deepEqual(await names("q=%EF%BC%A1LICE"), ["Alice.Smith"], "q is NFKC-normalised for usernames");
      assert.deepEqual(await names("status=banned"), []);
      assert.equal((await names("status=active&q=")).length, 6, "an empty q is no filter");
      assert.ok(!JSON.stringify(all).includes("password"), "no password field of any kind");
      for (const bad of ["status=bogus", "q=a%00b", `q=${"x".repeat(101)}`, "page_size=0", "page=abc", "page_size=201"])
        refused(await biz("GET", apps.a, `/users?${bad}`), 400, "VALIDATION_FAILED", `?${bad}`);
      // Reads work on an application in the recycle bin.
      assert.equal(json(await biz("GET", apps.gone, "/users")).total, 1);
    });

    it("GET /users/:id shows device bindings and live-session counts; …/devices and …/sessions page them; other apps' and unknown ids → 404", async () => {
      const t = now();
      await seedDevice(apps.a, users.alice, "d1", t - MINUTE);
      await seedDevice(apps.a, users.alice, "d2", t - 2 * MINUTE);
      await seedSession({ userId: users.alice, deviceId: "d1", createdAt: t - 5 * MINUTE });
      await seedSession({ userId: users.alice, deviceId: "d1", createdAt: t - 4 * MINUTE });
      await seedSession({ userId: users.alice, deviceId: "d1", createdAt: t - 3 * MINUTE, revokedAt: t - MINUTE });
      await seedSession({ userId: users.alice, deviceId: "d2", createdAt: t - 2 * MINUTE, expiresAt: t - SECOND });
      await seedSession({ userId: users.alice, deviceId: "d2", createdAt: t - MINUTE, heartbeatAt: t - 10 * MINUTE });

      const detail = json(await biz("GET", apps.a, `/users/${users.alice}`, undefined, "operator"));
      assert.equal(detail.username, "Alice.Smith");
      assert.equal(detail.live_sessions, 3);
      assert.equal(detail.device_count, 2);
      assert.deepEqual(detail.devices, [
        { device_id: "d1", created_at: t - 2 * MINUTE, last_seen_at: t - MINUTE, live_sessions: 2 },
        { device_id: "d2", created_at: t - 3 * MINUTE, last_seen_at: t - 2 * MINUTE, live_sessions: 1 },
      ]);
      assert.ok(!("password_hash" in detail));

      const devices = json(await biz("GET", apps.a, `/users/${users.alice}/devices?page_size=1&page=2`, undefined, "operator"));
      assert.equal(devices.total, 2);
      assert.deepEqual(items(devices), [{ device_id: "d2", created_at: t - 3 * MINUTE, last_seen_at: t - 2 * MINUTE, live_sessions: 1 }]);

      const sessions = json(await biz("GET", apps.a, `/users/${users.alice}/sessions`, undefined, "operator"));
      assert.equal(sessions.total, 5);
      assert.deepEqual(
        items(sessions).map((s) => s.state),
        ["offline", "expired", "revoked", "online", "online"],
        "newest first, each with its state",
      );
      for (const s of items(sessions)) assert.ok(!("token_hash" in s) && !("token" in s));
      const online = json(await biz("GET", apps.a, `/users/${users.alice}/sessions?online=true`));
      assert.equal(online.total, 2);
      refused(await biz("GET", apps.a, `/users/${users.alice}/sessions?online=maybe`), 400, "VALIDATION_FAILED", "online=maybe");

      for (const path of ["", "/devices", "/sessions"]) {
        refused(await biz("GET", apps.a, `/users/${bIds.user}${path}`), 404, "NOT_FOUND", `B's user via A${path}`);
        refused(await biz("GET", apps.a, `/users/usr_doesNotExist00000000${path}`), 404, "NOT_FOUND", `unknown user${path}`);
        refused(await biz("GET", MISSING_APP, `/users/${users.alice}${path}`), 404, "NOT_FOUND", `unknown app${path}`);
        for (const bad of BAD_IDS)
          refused(await biz("GET", apps.a, `/users/${bad}${path}`), 404, "NOT_FOUND", `bad id ${bad.slice(0, 12)}${path}`);
      }
    });

    it("POST /users/:id/password: new hash, auth epoch bumped in auth_epoch_changes, every session revoked; audited without the password", async () => {
      const bobLive = await seedSession({ userId: users.bob, deviceId: "bob-pc" });
      const liveBefore = (
        await rdb().selectFrom("sessions").select("id").where("user_id", "=", users.alice).where("revoked_at", "is", null).execute()
      ).length;
      assert.equal(liveBefore, 4, "three live sessions and one expired-but-unrevoked");
      hints.length = 0;
      cp.clock.advance(SECOND);
      const res = ok(await biz("POST", apps.a, `/users/${users.alice}/password`, { password: PW.aliceNew }), 200, "reset");
      assert.equal(res.revoked_sessions, liveBefore);
      assert.equal(res.auth_epoch, 1);
      assert.ok(!JSON.stringify(res).includes(PW.aliceNew));

      const key = await loadPasswordHashKey(cp.ctx);
      const row = await rdb().selectFrom("users").selectAll().where("id", "=", users.alice).executeTakeFirstOrThrow();
      assert.ok(verifyPassword(PW.aliceNew, row.password_hash, key), "new password works");
      assert.ok(!verifyPassword(PW.alice, row.password_hash, key), "old password no longer does");
      assert.equal(Number(row.auth_epoch), 1, "Runtime DB user raised");

      const changes = await epochChanges(users.alice);
      assert.equal(changes.length, 1);
      assert.equal(changes[0]?.app_id, apps.a);
      assert.equal(Number(changes[0]?.epoch), 1);
      assert.equal(changes[0]?.reason, "password reset");
      assert.equal(changes[0]?.created_by, agentIds.admin);
      assert.ok(
        hints.some((h) => h.event === "epoch.bumped"),
        "nodes are hinted",
      );

      const aliceSessions = await rdb().selectFrom("sessions").selectAll().where("user_id", "=", users.alice).execute();
      for (const s of aliceSessions) assert.notEqual(s.revoked_at, null, `session ${s.id} revoked`);
      assert.equal(aliceSessions.filter((s) => s.revoke_reason === "password reset").length, liveBefore);
      assert.equal((await sessionRow(bobLive)).revoked_at, null, "another user's session is untouched");

      const audit = (await userAudit("user.password_reset")).at(-1);
      assert.equal(audit?.user_id, users.alice);
      assert.equal(audit?.actor, agentIds.admin);
      const detail = JSON.parse(audit?.detail ?? "{}") as Obj;
      assert.equal(detail.revoked_sessions, liveBefore);
      assert.equal(detail.auth_epoch, 1);
      assert.equal((await lastAgentAudit("business.user.password_reset"))?.target_id, users.alice);

      await unchanged("password refusals", async () => {
        refused(
          await biz("POST", apps.a, `/users/${users.alice}/password`, { password: "short" }),
          400,
          "VALIDATION_FAILED",
          "short",
          "password",
        );
        refused(
          await biz("POST", apps.a, `/users/${users.alice}/password`, { password: "p".repeat(257) }),
          400,
          "VALIDATION_FAILED",
          "long",
        );
        refused(await biz("POST", apps.a, `/users/${users.alice}/password`, {}), 400, "VALIDATION_FAILED", "missing", "password");
        refused(
          await biz("POST", apps.a, `/users/${users.alice}/password`, { password: PW.never, x: 1 }),
          400,
          "VALIDATION_FAILED",
          "extra",
          "x",
        );
        refused(await biz("POST", apps.a, `/users/${bIds.user}/password`, { password: PW.never }), 404, "NOT_FOUND", "B's user via A");
        refused(await biz("POST", apps.a, "/users/usr_doesNotExist00000000/password", { password: PW.never }), 404, "NOT_FOUND", "unknown");
        refused(await biz("POST", MISSING_APP, `/users/${users.alice}/password`, { password: PW.never }), 404, "NOT_FOUND", "unknown app");
      });
    });

    it("POST /users/:id/ban and /unban: banned ends every session (epoch bump, revoked); both refuse a no-op with 409 and change nothing", async () => {
      const s1 = await seedSession({ userId: users.bob, deviceId: "bob-phone" });
      cp.clock.advance(SECOND);
      const banned = ok(await biz("POST", apps.a, `/users/${users.bob}/ban`, { reason: "chargeback fraud" }), 200, "ban");
      assert.equal(banned.status, "banned");
      assert.equal(banned.revoked_sessions, 2);
      assert.equal(banned.auth_epoch, 1);
      for (const s of await rdb().selectFrom("sessions").selectAll().where("user_id", "=", users.bob).execute()) {
        assert.notEqual(s.revoked_at, null);
        assert.equal(s.revoke_reason, "banned");
      }
      assert.equal((await sessionRow(s1)).revoke_reason, "banned");
      const changes = await epochChanges(users.bob);
      assert.deepEqual(
        changes.map((c) => [Number(c.epoch), c.reason, c.app_id]),
        [[1, "banned", apps.a]],
      );
      const audit = (await userAudit("user.banned")).at(-1);
      assert.equal(audit?.user_id, users.bob);
      assert.equal((JSON.parse(audit?.detail ?? "{}") as Obj).reason, "chargeback fraud");
      assert.deepEqual(
        items(json(await biz("GET", apps.a, "/users?status=banned"))).map((u) => u.id),
        [users.bob],
      );

      await unchanged("ban refusals", async () => {
        refused(await biz("POST", apps.a, `/users/${users.bob}/ban`, {}), 409, "CONFLICT", "already banned");
        refused(
          await biz("POST", apps.a, `/users/${users.carol}/ban`, { reason: "x'; DROP TABLE users; --" }),
          400,
          "VALIDATION_FAILED",
          "metachar reason",
          "reason",
        );
        refused(await biz("POST", apps.a, `/users/${users.carol}/ban`, { reason: 7 }), 400, "VALIDATION_FAILED", "number reason", "reason");
        refused(await biz("POST", apps.a, `/users/${users.carol}/ban`, { why: "x" }), 400, "VALIDATION_FAILED", "unknown field", "why");
        refused(await biz("POST", apps.a, `/users/${users.carol}/unban`), 409, "CONFLICT", "not banned");
        refused(await biz("POST", apps.a, `/users/${users.bob}/unban`, { reason: "x" }), 400, "VALIDATION_FAILED", "unban takes no body");
        refused(await biz("POST", apps.a, `/users/${bIds.user}/ban`), 404, "NOT_FOUND", "B's user via A");
        refused(await biz("POST", apps.a, `/users/${bIds.user}/unban`), 404, "NOT_FOUND", "B's user via A");
      });
      assert.equal((await lastAgentAudit("business.user.ban"))?.result, "failure");

      const unbanned = ok(await biz("POST", apps.a, `/users/${users.bob}/unban`), 200, "unban");
      assert.equal(unbanned.status, "active");
      assert.equal(unbanned.auth_epoch, 1, "unban moves no epoch");
      assert.equal((await epochChanges(users.bob)).length, 1);
      assert.equal((await userAudit("user.unbanned")).at(-1)?.user_id, users.bob);
      assert.equal((await lastAgentAudit("business.user.unban"))?.result, "success");
      // A ban without a reason works too.
      ok(await biz("POST", apps.a, `/users/${users.eight}/ban`), 200, "ban without body");
      assert.equal(JSON.parse((await userAudit("user.banned")).find((row) => row.user_id === users.eight)?.detail ?? "{}").reason, null);
    });

    it("DELETE /users/:id/devices/:device_id removes the binding, revokes that device's sessions only and queues a force_logout for user+device", async () => {
      await seedDevice(apps.a, users.carol, "pc-1");
      await seedDevice(apps.a, users.carol, "phone 2.local");
      const onPc = await seedSession({ userId: users.carol, deviceId: "pc-1" });
      const onPhone = await seedSession({ userId: users.carol, deviceId: "phone 2.local" });
      const before = (await forceLogouts()).length;

      const removed = ok(await biz("DELETE", apps.a, `/users/${users.carol}/devices/pc-1`), 200, "remove device");
      assert.equal(removed.user_id, users.carol);
      assert.equal(removed.device_id, "pc-1");
      assert.equal(removed.revoked_sessions, 1);
      assert.equal((await sessionRow(onPc)).revoke_reason, "device removed");
      assert.equal((await sessionRow(onPhone)).revoked_at, null, "the other device's session lives");
      const commands = await forceLogouts();
      assert.equal(commands.length, before + 1);
      const command = commands.at(-1);
      assert.equal(command?.id, removed.command_id);
      assert.equal(command?.target_node_id, null, "broadcast to every node");
      assert.equal(command?.created_by, agentIds.admin);
      assert.deepEqual(command?.payload, { app_id: apps.a, user_id: users.carol, device_id: "pc-1", reason: "device removed" });
      assert.deepEqual(
        items(json(await biz("GET", apps.a, `/users/${users.carol}/devices`))).map((d) => d.device_id),
        ["phone 2.local"],
      );
      const audit = (await userAudit("device.removed")).at(-1);
      assert.equal(audit?.user_id, users.carol);
      assert.deepEqual(JSON.parse(audit?.detail ?? "{}"), { user_id: users.carol, device_id: "pc-1", revoked_sessions: 1 });

      // A device id outside the id alphabet (clients choose them) is addressed URL-encoded.
      ok(await biz("DELETE", apps.a, `/users/${users.carol}/devices/${encodeURIComponent("phone 2.local")}`), 200, "encoded device id");
      assert.equal((await sessionRow(onPhone)).revoke_reason, "device removed");

      await unchanged("device refusals", async () => {
        refused(await biz("DELETE", apps.a, `/users/${users.carol}/devices/pc-1`), 404, "NOT_FOUND", "already removed");
        refused(await biz("DELETE", apps.a, `/users/${users.carol}/devices/never-bound`), 404, "NOT_FOUND", "never bound");
        refused(await biz("DELETE", apps.a, `/users/${users.carol}/devices/a%00b`), 404, "NOT_FOUND", "NUL in device id");
        refused(await biz("DELETE", apps.a, `/users/${users.carol}/devices/${"d".repeat(129)}`), 404, "NOT_FOUND", "129 bytes");
        refused(await biz("DELETE", apps.a, `/users/${bIds.user}/devices/dev-other`), 404, "NOT_FOUND", "B's user via A");
        refused(await biz("DELETE", apps.b, `/users/${bIds.user}/devices/dev-other`, { x: 1 }), 400, "VALIDATION_FAILED", "a body");
      });
    });

    it("POST /users/:id/sessions/revoke revokes every live session and queues a force_logout for the user; no epoch bump", async () => {
      const t = now();
      const live = [await seedSession({ userId: users.dave, deviceId: "a" }), await seedSession({ userId: users.dave, deviceId: "b" })];
      const old = await seedSession({ userId: users.dave, deviceId: "c", revokedAt: t - MINUTE });
      const revoked = ok(await biz("POST", apps.a, `/users/${users.dave}/sessions/revoke`), 200, "revoke all");
      assert.equal(revoked.revoked_sessions, 2);
      for (const id of live) assert.equal((await sessionRow(id)).revoke_reason, "revoked by admin");
      assert.equal((await sessionRow(old)).revoke_reason, "seeded", "an already revoked session keeps its reason");
      const command = (await forceLogouts()).at(-1);
      assert.equal(command?.id, revoked.command_id);
      assert.deepEqual(command?.payload, { app_id: apps.a, user_id: users.dave, reason: "revoked by admin" });
      assert.equal((await epochChanges(users.dave)).length, 0, "the password is still good: no epoch bump");
      assert.deepEqual(JSON.parse((await userAudit("sessions.revoked")).at(-1)?.detail ?? "{}"), {
        user_id: users.dave,
        revoked_sessions: 2,
      });
      await unchanged("revoke refusals", async () => {
        refused(await biz("POST", apps.a, `/users/${users.dave}/sessions/revoke`, { all: true }), 400, "VALIDATION_FAILED", "a body");
        refused(await biz("POST", apps.a, `/users/${bIds.user}/sessions/revoke`), 404, "NOT_FOUND", "B's user via A");
        refused(await biz("POST", apps.a, "/users/usr_doesNotExist00000000/sessions/revoke"), 404, "NOT_FOUND", "unknown");
      });
    });

    it("DELETE /users/:id bumps the epoch, then deletes the user with its bindings and sessions; a second delete is 404", async () => {
      const erin = String((await createUser(apps.a, "erin", PW.erin)).id);
      await seedDevice(apps.a, erin, "erin-pc");
      await seedSession({ userId: erin, deviceId: "erin-pc" });
      await seedSession({ userId: erin, deviceId: "erin-pc", revokedAt: now() });
      const bobBefore = await rdb().selectFrom("sessions").selectAll().where("user_id", "=", users.bob).execute();
      const deleted = ok(await biz("DELETE", apps.a, `/users/${erin}`), 200, "delete");
      assert.deepEqual(deleted, { user_id: erin, deleted_sessions: 2, removed_devices: 1, auth_epoch: 1 });
      assert.equal(await rdb().selectFrom("users").select("id").where("id", "=", erin).executeTakeFirst(), undefined);
      assert.equal((await rdb().selectFrom("sessions").select("id").where("user_id", "=", erin).execute()).length, 0);
      assert.equal((await rdb().selectFrom("device_bindings").select("device_id").where("user_id", "=", erin).execute()).length, 0);
      assert.deepEqual(
        (await epochChanges(erin)).map((c) => [Number(c.epoch), c.reason, c.app_id]),
        [[1, "user deleted", apps.a]],
      );
      assert.deepEqual(
        await rdb().selectFrom("sessions").selectAll().where("user_id", "=", users.bob).execute(),
        bobBefore,
        "others untouched",
      );
      const audit = (await userAudit("user.deleted")).at(-1);
      assert.equal(audit?.user_id, erin, "the audit row outlives the user");
      assert.equal((JSON.parse(audit?.detail ?? "{}") as Obj).deleted_sessions, 2);
      await unchanged("delete refusals", async () => {
        refused(await biz("DELETE", apps.a, `/users/${erin}`), 404, "NOT_FOUND", "again");
        refused(await biz("DELETE", apps.a, `/users/${bIds.user}`), 404, "NOT_FOUND", "B's user via A");
        refused(await biz("DELETE", apps.a, `/users/${users.carol}`, { force: true }), 400, "VALIDATION_FAILED", "a body");
      });
    });

    // ---- card keys ----------------------------------------------------------------------------

    const batch1: { id: string; cards: Obj[] } = { id: "", cards: [] };

    it("POST /card-keys returns the codes once; only their hashes and hints are stored; status unused; audited twice", async () => {
      const res = await biz("POST", apps.a, "/card-keys", { count: 3, duration_seconds: 86_400, note: "Promo batch #1" });
      const body = ok(res, 201, "generate");
      assert.deepEqual(Object.keys(body).sort(), ["batch_id", "cards", "created_at", "duration_seconds", "note"]);
      assert.equal(body.duration_seconds, 86_400);
      assert.equal(body.note, "Promo batch #1");
      assert.equal(body.created_at, now());
      batch1.id = String(body.batch_id);
      batch1.cards = body.cards as Obj[];
      assert.equal(batch1.cards.length, 3);
      for (const card of batch1.cards) {
        assert.deepEqual(Object.keys(card).sort(), ["code", "hint", "id"]);
        const code = String(card.code);
        secrets.add(code);
        assert.match(code, CARD_CODE);
        const canonical = canonicalCode(code, CARD_KEY_GROUPS) as string;
        secrets.add(canonical);
        assert.equal(card.hint, codeHint(canonical));
        const row = await rdb().selectFrom("card_keys").selectAll().where("id", "=", String(card.id)).executeTakeFirstOrThrow();
        assert.equal(row.code_hash, codeHash(canonical), "stored as the hash of the canonical code");
        assert.equal(row.code_hint, card.hint);
        assert.equal(row.status, "unused");
        assert.equal(row.batch_id, batch1.id);
        assert.equal(row.app_id, apps.a);
        assert.equal(row.created_by, agentIds.admin);
        assert.equal(Number(row.duration_seconds), 86_400);
      }
      assert.equal(new Set(batch1.cards.map((c) => c.code)).size, 3);
      const listed = await biz("GET", apps.a, `/card-keys?batch_id=${batch1.id}`, undefined, "operator");
      for (const card of batch1.cards) {
        assert.ok(!listed.text.includes(String(card.code)), "a list never shows a code");
        assert.ok(!listed.text.includes(codeHash(canonicalCode(String(card.code), CARD_KEY_GROUPS) as string)), "nor its hash");
      }
      const audit = (await userAudit("card_keys.generated")).at(-1);
      assert.equal(audit?.user_id, null);
      assert.deepEqual(JSON.parse(audit?.detail ?? "{}"), { batch_id: batch1.id, count: 3, duration_seconds: 86_400 });
      const agent = await lastAgentAudit("business.card_keys.generate");
      assert.equal(agent?.target_id, batch1.id);
      assert.equal(agent?.target_type, "card_key_batch");

      // The limits: 1000 cards of ten years; 60 seconds.
      const big = ok(await biz("POST", apps.a, "/card-keys", { count: 1000, duration_seconds: TEN_YEARS_S }), 201, "1000 cards");
      const bigCards = big.cards as Obj[];
      assert.equal(bigCards.length, 1000);
      assert.equal(new Set(bigCards.map((c) => c.code)).size, 1000);
      for (const c of bigCards) secrets.add(String(c.code));
      assert.equal(big.note, null);
      const shortest = ok(await biz("POST", apps.a, "/card-keys", { count: 1, duration_seconds: 60, note: null }), 201, "60 seconds");
      for (const c of shortest.cards as Obj[]) secrets.add(String(c.code));

      await unchanged("generate refusals", async () => {
        for (const [label, bodyValue, field] of [
          ["count 0", { count: 0, duration_seconds: 3600 }, "count"],
          ["count 1001", { count: 1001, duration_seconds: 3600 }, "count"],
          ["count 1.5", { count: 1.5, duration_seconds: 3600 }, "count"],
          ["count string", { count: "3", duration_seconds: 3600 }, "count"],
          ["no count", { duration_seconds: 3600 }, "count"],
          ["duration 59", { count: 1, duration_seconds: 59 }, "duration_seconds"],
          ["duration over ten years", { count: 1, duration_seconds: TEN_YEARS_S + 1 }, "duration_seconds"],
          ["no duration", { count: 1 }, "duration_seconds"],
          ["note metacharacters", { count: 1, duration_seconds: 3600, note: "x'; DROP TABLE card_keys; --" }, "note"],
          ["note too long", { count: 1, duration_seconds: 3600, note: "n".repeat(201) }, "note"],
          ["unknown field", { count: 1, duration_seconds: 3600, code: "AAAAA" }, "code"],
        ] as const)
          refused(await biz("POST", apps.a, "/card-keys", bodyValue), 400, "VALIDATION_FAILED", label, field);
      });
    });

    it("GET /card-keys filters by status (expired derived from expires_at) and batch; the batch export is CSV without codes", async () => {
      const t = now();
      const [c0, c1, c2] = batch1.cards.map((c) => String(c.id)) as [string, string, string];
      await rdb()
        .updateTable("card_keys")
        .set({ status: "active", activated_at: t - DAY, expires_at: t + DAY, bound_device_id: "dev-1", user_id: users.carol })
        .where("id", "=", c0)
        .execute();
      await rdb()
        .updateTable("card_keys")
        .set({ status: "active", activated_at: t - 2 * DAY, expires_at: t - DAY, bound_device_id: "dev,2" })
        .where("id", "=", c1)
        .execute();
      await rdb().updateTable("card_keys").set({ bound_device_id: '=HYPERLINK("http://evil.example")' }).where("id", "=", c2).execute();

      const list = async (q: string) => json(await biz("GET", apps.a, `/card-keys?${q}`, undefined, "operator"));
      const inBatch = await list(`batch_id=${batch1.id}`);
      assert.equal(inBatch.total, 3);
      assert.deepEqual(Object.keys(items(inBatch)[0] as Obj).sort(), [
        "activated_at",
        "batch_id",
        "bound_device_id",
        "created_at",
        "created_by",
        "duration_seconds",
        "expires_at",
        "hint",
        "id",
        "note",
        "status",
        "user_id",
      ]);
      const statusOf = new Map(items(inBatch).map((c) => [c.id, c.status]));
      assert.deepEqual([statusOf.get(c0), statusOf.get(c1), statusOf.get(c2)], ["active", "expired", "unused"]);
      assert.deepEqual(
        items(await list("status=active")).map((c) => c.id),
        [c0],
      );
      assert.deepEqual(
        items(await list("status=expired")).map((c) => c.id),
        [c1],
      );
      assert.equal((await list("status=unused")).total, 1 + 1000 + 1);
      assert.equal((await list(`status=unused&batch_id=${batch1.id}`)).total, 1);
      assert.equal((await list("status=disabled")).total, 0);
      assert.equal((await list("batch_id=cbt_doesNotExist0000000")).total, 0);
      assert.equal((await list(`batch_id=${bIds.batch}`)).total, 0, "B's batch is not A's");
      for (const bad of ["status=bogus", "batch_id=bad'id", "status=ACTIVE", "page=0"])
        refused(await biz("GET", apps.a, `/card-keys?${bad}`), 400, "VALIDATION_FAILED", `?${bad}`);

      const exported = await biz("GET", apps.a, `/card-keys/batches/${batch1.id}/export`, undefined, "operator");
      assert.equal(exported.status, 200, exported.text);
      assert.match(exported.headers.get("content-type") ?? "", /^text\/csv/);
      assert.match(exported.headers.get("content-disposition") ?? "", new RegExp(`attachment; filename="card-keys-${batch1.id}\\.csv"`));
      const lines = exported.text.split("\r\n");
      assert.equal(lines.at(-1), "", "ends with a line break");
      assert.equal(lines[0], "id,hint,status,created_at,activated_at,expires_at,bound_device_id,note");
      assert.equal(lines.length, 5);
      const iso = (ms: number) => new Date(ms).toISOString();
      const created = iso(Number(items(inBatch)[0]?.created_at));
      const byId = new Map(lines.slice(1, -1).map((l) => [l.split(",")[0], l]));
      const hint = (i: number) => String(batch1.cards[i]?.hint);
      assert.equal(byId.get(c0), `${c0},${hint(0)},active,${created},${iso(t - DAY)},${iso(t + DAY)},dev-1,Promo batch #1`);
      assert.equal(byId.get(c1), `${c1},${hint(1)},expired,${created},${iso(t - 2 * DAY)},${iso(t - DAY)},"dev,2",Promo batch #1`);
      assert.equal(
        byId.get(c2),
        `${c2},${hint(2)},unused,${created},,,"'=HYPERLINK(""http://evil.example"")",Promo batch #1`,
        "formula defused",
      );
      for (const card of batch1.cards) assert.ok(!exported.text.includes(String(card.code)), "no code in the export");

      refused(await biz("GET", apps.a, "/card-keys/batches/cbt_doesNotExist0000000/export"), 404, "NOT_FOUND", "unknown batch");
      refused(await biz("GET", apps.a, `/card-keys/batches/${bIds.batch}/export`), 404, "NOT_FOUND", "B's batch via A");
      refused(await biz("GET", apps.a, "/card-keys/batches/bad%27id/export"), 404, "NOT_FOUND", "bad batch id");
      assert.equal((await biz("GET", apps.gone, `/card-keys/batches/${goneIds.batch}/export`)).status, 200, "readable in the recycle bin");
    });

    it("POST /card-keys/:id/disable and DELETE /card-keys/:id end the card's sessions and queue a force_logout with card_key_id", async () => {
      const [c0, c1, c2] = batch1.cards.map((c) => String(c.id)) as [string, string, string];
      const cardSession = await seedSession({ userId: null, cardKeyId: c0, deviceId: "dev-1" });
      const otherSession = await seedSession({ userId: null, cardKeyId: c2, deviceId: "dev-3" });
      const commandsBefore = (await forceLogouts()).length;

      const disabled = ok(await biz("POST", apps.a, `/card-keys/${c0}/disable`), 200, "disable");
      assert.equal(disabled.id, c0);
      assert.equal(disabled.status, "disabled");
      assert.equal(disabled.revoked_sessions, 1);
      assert.ok(!("code" in disabled) && !("code_hash" in disabled));
      assert.equal((await sessionRow(cardSession)).revoke_reason, "card key disabled");
      assert.equal((await sessionRow(otherSession)).revoked_at, null);
      const command = (await forceLogouts()).at(-1);
      assert.equal(command?.id, disabled.command_id);
      assert.deepEqual(command?.payload, { app_id: apps.a, card_key_id: c0, reason: "card key disabled" });
      const audit = (await userAudit("card_key.disabled")).at(-1);
      assert.equal(audit?.user_id, users.carol, "the card's user, when it has one");
      assert.equal((JSON.parse(audit?.detail ?? "{}") as Obj).card_key_id, c0);
      assert.equal(items(json(await biz("GET", apps.a, "/card-keys?status=disabled"))).length, 1);

      await unchanged("disable refusals", async () => {
        refused(await biz("POST", apps.a, `/card-keys/${c0}/disable`), 409, "CONFLICT", "already disabled");
        refused(await biz("POST", apps.a, `/card-keys/${bIds.card}/disable`), 404, "NOT_FOUND", "B's card via A");
        refused(await biz("POST", apps.a, "/card-keys/crd_doesNotExist0000000/disable"), 404, "NOT_FOUND", "unknown");
        refused(await biz("POST", apps.a, `/card-keys/${c2}/disable`, { reason: "x" }), 400, "VALIDATION_FAILED", "a body");
        refused(await biz("DELETE", apps.a, `/card-keys/${bIds.card}`), 404, "NOT_FOUND", "delete B's card via A");
        refused(await biz("DELETE", apps.a, "/card-keys/crd_doesNotExist0000000"), 404, "NOT_FOUND", "delete unknown");
      });

      // An unused card cannot have a session: disabling it queues nothing.
      const unusedId = (
        await rdb()
          .selectFrom("card_keys")
          .select("id")
          .where("app_id", "=", apps.a)
          .where("status", "=", "unused")
          .where("batch_id", "!=", batch1.id)
          .executeTakeFirstOrThrow()
      ).id;
      const unused = ok(await biz("POST", apps.a, `/card-keys/${unusedId}/disable`), 200, "disable unused");
      assert.equal(unused.command_id, null);
      assert.equal(unused.revoked_sessions, 0);
      assert.equal((await forceLogouts()).length, commandsBefore + 1);

      const deleted = ok(await biz("DELETE", apps.a, `/card-keys/${c2}`), 200, "delete with a live session");
      assert.equal(deleted.card_id, c2);
      assert.equal(deleted.revoked_sessions, 1);
      assert.equal((await sessionRow(otherSession)).revoke_reason, "card key deleted");
      assert.deepEqual((await forceLogouts()).at(-1)?.payload, { app_id: apps.a, card_key_id: c2, reason: "card key deleted" });
      assert.equal(await rdb().selectFrom("card_keys").select("id").where("id", "=", c2).executeTakeFirst(), undefined);
      const expiredDeleted = ok(await biz("DELETE", apps.a, `/card-keys/${c1}`), 200, "delete an expired (once activated) card");
      assert.notEqual(expiredDeleted.command_id, null, "it was activated: a connection may remain");
      assert.deepEqual(JSON.parse((await userAudit("card_key.deleted")).at(-1)?.detail ?? "{}"), {
        card_key_id: c1,
        batch_id: batch1.id,
        previous_status: "active",
        revoked_sessions: 0,
      });
      await unchanged("delete again", async () => {
        refused(await biz("DELETE", apps.a, `/card-keys/${c2}`), 404, "NOT_FOUND", "deleted already");
      });
    });

    // ---- invite codes -------------------------------------------------------------------------

    it("POST /invite-codes returns the codes once (stored hashed); GET lists uses and expiry without codes; DELETE removes one", async () => {
      const expiresIso = new Date(now() + DAY).toISOString();
      const made = ok(await biz("POST", apps.a, "/invite-codes", { count: 2, max_uses: 5, expires_at: expiresIso }), 201, "generate");
      assert.deepEqual(Object.keys(made).sort(), ["codes", "created_at", "expires_at", "max_uses"]);
      assert.equal(made.expires_at, now() + DAY);
      assert.equal(made.max_uses, 5);
      const codes = made.codes as Obj[];
      assert.equal(codes.length, 2);
      for (const c of codes) {
        const code = String(c.code);
        secrets.add(code);
        assert.match(code, INVITE_CODE);
        const canonical = canonicalCode(code, INVITE_CODE_GROUPS) as string;
        secrets.add(canonical);
        const row = await rdb().selectFrom("invite_codes").selectAll().where("id", "=", String(c.id)).executeTakeFirstOrThrow();
        assert.equal(row.code_hash, codeHash(canonical));
        assert.equal(Number(row.max_uses), 5);
        assert.equal(Number(row.used_count), 0);
        assert.equal(row.created_by, agentIds.admin);
      }
      const ms = ok(
        await biz("POST", apps.a, "/invite-codes", { count: 1, max_uses: 100_000, expires_at: now() + MINUTE }),
        201,
        "epoch ms",
      );
      assert.equal(ms.expires_at, now() + MINUTE);
      const forever = ok(await biz("POST", apps.a, "/invite-codes", { count: 1, max_uses: 1, expires_at: null }), 201, "never expires");
      assert.equal(forever.expires_at, null);
      for (const c of [...(ms.codes as Obj[]), ...(forever.codes as Obj[])]) secrets.add(String(c.code));
      const audit = (await userAudit("invite_codes.generated")).at(-1);
      assert.equal((JSON.parse(audit?.detail ?? "{}") as Obj).count, 1);

      const foreverId = String((forever.codes as Obj[])[0]?.id);
      await rdb().updateTable("invite_codes").set({ used_count: 1 }).where("id", "=", foreverId).execute();
      cp.clock.advance(2 * MINUTE);
      const listed = await biz("GET", apps.a, "/invite-codes", undefined, "operator");
      const body = json(listed);
      assert.equal(body.total, 4);
      for (const c of [...codes, ...(ms.codes as Obj[])]) assert.ok(!listed.text.includes(String(c.code)));
      assert.deepEqual(Object.keys(items(body)[0] as Obj).sort(), [
        "created_at",
        "created_by",
        "expires_at",
        "id",
        "max_uses",
        "state",
        "used_count",
      ]);
      const state = new Map(items(body).map((i) => [i.id, [i.state, i.used_count, i.max_uses]]));
      assert.deepEqual(state.get(foreverId), ["used_up", 1, 1]);
      assert.deepEqual(state.get(String((ms.codes as Obj[])[0]?.id)), ["expired", 0, 100_000]);
      assert.deepEqual(state.get(String(codes[0]?.id)), ["active", 0, 5]);

      await unchanged("invite refusals", async () => {
        for (const [label, b, field] of [
          ["past ms", { count: 1, max_uses: 1, expires_at: now() - 1 }, "expires_at"],
          ["now", { count: 1, max_uses: 1, expires_at: now() }, "expires_at"],
          ["past ISO", { count: 1, max_uses: 1, expires_at: "2020-01-01T00:00:00Z" }, "expires_at"],
          ["ISO without zone", { count: 1, max_uses: 1, expires_at: "2030-01-01T00:00:00" }, "expires_at"],
          ["garbage", { count: 1, max_uses: 1, expires_at: "tomorrow" }, "expires_at"],
          ["beyond ten years", { count: 1, max_uses: 1, expires_at: now() + 11 * 365 * DAY }, "expires_at"],
          ["count 0", { count: 0, max_uses: 1 }, "count"],
          ["count 1001", { count: 1001, max_uses: 1 }, "count"],
          ["max_uses 0", { count: 1, max_uses: 0 }, "max_uses"],
          ["max_uses 100001", { count: 1, max_uses: 100_001 }, "max_uses"],
          ["no max_uses", { count: 1 }, "max_uses"],
          ["unknown field", { count: 1, max_uses: 1, code: "X" }, "code"],
        ] as const)
          refused(await biz("POST", apps.a, "/invite-codes", b), 400, "VALIDATION_FAILED", label, field);
      });

      const victim = String(codes[1]?.id);
      assert.deepEqual(ok(await biz("DELETE", apps.a, `/invite-codes/${victim}`), 200, "delete"), { invite_id: victim });
      assert.equal(await rdb().selectFrom("invite_codes").select("id").where("id", "=", victim).executeTakeFirst(), undefined);
      assert.equal((JSON.parse((await userAudit("invite_code.deleted")).at(-1)?.detail ?? "{}") as Obj).invite_id, victim);
      assert.equal((await lastAgentAudit("business.invite_code.delete"))?.target_id, victim);
      await unchanged("invite delete refusals", async () => {
        refused(await biz("DELETE", apps.a, `/invite-codes/${victim}`), 404, "NOT_FOUND", "again");
        refused(await biz("DELETE", apps.a, `/invite-codes/${bIds.invite}`), 404, "NOT_FOUND", "B's invite via A");
        refused(await biz("DELETE", apps.a, "/invite-codes/bad%27id"), 404, "NOT_FOUND", "bad id");
      });
    });

    // ---- sessions -----------------------------------------------------------------------------

    it("GET /sessions: online = live with a heartbeat in the last 2 minutes, newest first, user filter; never a token hash", async () => {
      cp.clock.advance(10 * MINUTE); // every earlier session is now quiet
      const t = now();
      const on1 = await seedSession({ userId: users.carol, deviceId: "c-1", createdAt: t - 3 * MINUTE, heartbeatAt: t - 2 * MINUTE });
      const on2 = await seedSession({ userId: users.dave, deviceId: "d-1", createdAt: t - 2 * MINUTE, heartbeatAt: t - 30 * SECOND });
      const quiet = await seedSession({ userId: users.carol, deviceId: "c-2", heartbeatAt: t - 2 * MINUTE - 1 });
      await seedSession({ userId: users.carol, deviceId: "c-3", revokedAt: t - SECOND });
      await seedSession({ userId: users.carol, deviceId: "c-4", expiresAt: t });
      await seedSession({ appId: apps.b, userId: bIds.user, deviceId: "b-1" });

      const online = json(await biz("GET", apps.a, "/sessions?online=true", undefined, "operator"));
      assert.deepEqual(
        items(online).map((s) => s.id),
        [on2, on1],
      );
      assert.deepEqual(
        items(online).map((s) => s.state),
        ["online", "online"],
      );
      assert.deepEqual(Object.keys(items(online)[0] as Obj).sort(), [
        "app_id",
        "auth_epoch",
        "card_key_id",
        "created_at",
        "device_id",
        "expires_at",
        "id",
        "ip",
        "last_heartbeat_at",
        "node_id",
        "revoke_reason",
        "revoked_at",
        "state",
        "user_id",
      ]);
      assert.deepEqual(
        items(json(await biz("GET", apps.a, `/sessions?online=1&user_id=${users.carol}`))).map((s) => s.id),
        [on1],
      );
      const all = await biz("GET", apps.a, "/sessions?page_size=200");
      const allBody = json(all);
      const aTotal = Number(
        (
          await rdb()
            .selectFrom("sessions")
            .select((eb) => eb.fn.countAll<number>().as("n"))
            .where("app_id", "=", apps.a)
            .executeTakeFirstOrThrow()
        ).n,
      );
      assert.equal(allBody.total, aTotal);
      const created = items(allBody).map((s) => s.created_at as number);
      assert.deepEqual(
        created,
        [...created].sort((x, y) => y - x),
        "newest first",
      );
      const offline = json(await biz("GET", apps.a, "/sessions?online=false&page_size=200"));
      assert.equal(offline.total, aTotal - 2);
      assert.ok(items(offline).some((s) => s.id === quiet && s.state === "offline"));
      for (const hash of tokenHashes) assert.ok(!all.text.includes(hash), "no token hash in any answer");
      assert.ok(!all.text.includes("token"));
      for (const bad of ["online=maybe", "user_id=bad'id", "page_size=500"])
        refused(await biz("GET", apps.a, `/sessions?${bad}`), 400, "VALIDATION_FAILED", `?${bad}`);
    });

    it("DELETE /sessions/:id kicks: revoked, and a force_logout for that session is queued; a second kick is 409", async () => {
      const t = now();
      const target = await seedSession({ userId: users.carol, deviceId: "kick-me", heartbeatAt: t });
      const kicked = ok(await biz("DELETE", apps.a, `/sessions/${target}`), 200, "kick");
      assert.equal(kicked.session_id, target);
      assert.equal(kicked.user_id, users.carol);
      const row = await sessionRow(target);
      assert.equal(row.revoked_at, t);
      assert.equal(row.revoke_reason, "kicked by admin");
      const command = (await forceLogouts()).at(-1);
      assert.equal(command?.id, kicked.command_id);
      assert.deepEqual(command?.payload, { app_id: apps.a, session_id: target, reason: "kicked by admin" });
      const audit = (await userAudit("session.kicked")).at(-1);
      assert.equal(audit?.user_id, users.carol);
      assert.equal((JSON.parse(audit?.detail ?? "{}") as Obj).session_id, target);
      assert.equal((await lastAgentAudit("business.session.kick"))?.target_id, target);
      await unchanged("kick refusals", async () => {
        refused(await biz("DELETE", apps.a, `/sessions/${target}`), 409, "CONFLICT", "again");
        refused(await biz("DELETE", apps.a, `/sessions/${bIds.session}`), 404, "NOT_FOUND", "B's session via A");
        refused(await biz("DELETE", apps.a, "/sessions/rss_doesNotExist0000000"), 404, "NOT_FOUND", "unknown");
        refused(await biz("DELETE", apps.b, `/sessions/${bIds.session}`, { now: true }), 400, "VALIDATION_FAILED", "a body");
        for (const bad of BAD_IDS) refused(await biz("DELETE", apps.a, `/sessions/${bad}`), 404, "NOT_FOUND", `bad id ${bad.slice(0, 12)}`);
      });
    });

    // ---- every route: roles, the recycle bin, unknown applications ----------------------------

    interface RouteCase {
      method: string;
      template: string;
      path(appId: string): string;
      body?: unknown;
      write: boolean;
    }
    const routeTable = (): RouteCase[] => {
      const u = users.carol;
      const writeBody: Record<string, unknown> = {
        "POST /users": { username: "never-made", password: PW.never },
        "POST /users/:user_id/password": { password: PW.never },
        "POST /card-keys": { count: 1, duration_seconds: 3600 },
        "POST /invite-codes": { count: 1, max_uses: 1 },
        "PUT /users/:user_id/variables/:key": { value: "never-set" },
      };
      const rows: Array<[string, string, (appId: string) => string, boolean]> = [
        ["GET", "/users", () => "/users", false],
        ["POST", "/users", () => "/users", true],
        ["GET", "/users/:user_id", () => `/users/${u}`, false],
        ["DELETE", "/users/:user_id", () => `/users/${u}`, true],
        ["POST", "/users/:user_id/password", () => `/users/${u}/password`, true],
        ["POST", "/users/:user_id/ban", () => `/users/${u}/ban`, true],
        ["POST", "/users/:user_id/unban", () => `/users/${u}/unban`, true],
        ["GET", "/users/:user_id/devices", () => `/users/${u}/devices`, false],
        ["DELETE", "/users/:user_id/devices/:device_id", () => `/users/${u}/devices/phone`, true],
        ["GET", "/users/:user_id/sessions", () => `/users/${u}/sessions`, false],
        ["POST", "/users/:user_id/sessions/revoke", () => `/users/${u}/sessions/revoke`, true],
        ["GET", "/users/:user_id/variables", () => `/users/${u}/variables`, false],
        ["PUT", "/users/:user_id/variables/:key", () => `/users/${u}/variables/score`, true],
        ["DELETE", "/users/:user_id/variables/:key", () => `/users/${u}/variables/score`, true],
        ["POST", "/card-keys", () => "/card-keys", true],
        ["GET", "/card-keys", () => "/card-keys", false],
        ["GET", "/card-keys/batches/:batch_id/export", () => `/card-keys/batches/${batch1.id}/export`, false],
        ["POST", "/card-keys/:card_id/disable", () => `/card-keys/${String(batch1.cards[0]?.id)}/disable`, true],
        ["DELETE", "/card-keys/:card_id", () => `/card-keys/${String(batch1.cards[0]?.id)}`, true],
        ["POST", "/invite-codes", () => "/invite-codes", true],
        ["GET", "/invite-codes", () => "/invite-codes", false],
        ["DELETE", "/invite-codes/:invite_id", () => "/invite-codes/inv_doesNotExist0000000", true],
        ["GET", "/sessions", () => "/sessions", false],
        ["DELETE", "/sessions/:session_id", () => "/sessions/rss_doesNotExist0000000", true],
      ];
      return rows.map(([method, template, path, write]) => {
        const body = writeBody[`${method} ${template}`];
        return { method, template, path, write, ...(body !== undefined ? { body } : {}) };
      });
    };

    it("the route table covers every business route the app registers", () => {
      const registered = new Set(
        app.routes
          .filter((r) => r.method !== "ALL" && /^\/admin\/v1\/applications\/:app_id\/(users|card-keys|invite-codes|sessions)/.test(r.path))
          .map((r) => `${r.method} ${r.path}`),
      );
      const tabled = new Set(routeTable().map((r) => `${r.method} ${V1}/applications/:app_id${r.template}`));
      assert.deepEqual(
        [...registered].filter((r) => !tabled.has(r)),
        [],
        "routes missing from the table",
      );
      assert.deepEqual(
        [...tabled].filter((r) => !registered.has(r)),
        [],
        "table rows without a route",
      );
    });

    it("an operator may read every business route and change nothing (403 FORBIDDEN, audited as a failure)", async () => {
      await unchanged("operator writes", async () => {
        for (const route of routeTable()) {
          const label = `operator ${route.method} ${route.template}`;
          const res = await biz(route.method, apps.a, route.path(apps.a), route.body, "operator");
          if (route.write) refused(res, 403, "FORBIDDEN", label);
          else assert.equal(res.status, 200, `${label}: ${res.text.slice(0, 200)}`);
        }
      });
      const forbidden = await cdb()
        .selectFrom("agent_audit_logs")
        .select(["action", "result", "error_code"])
        .where("agent_id", "=", agentIds.operator)
        .where("action", "like", "business.%")
        .execute();
      assert.equal(forbidden.length, routeTable().filter((r) => r.write).length, "one audit row per refused write");
      for (const row of forbidden) assert.deepEqual([row.result, row.error_code], ["failure", "FORBIDDEN"]);
      await unchanged("anonymous", async () => {
        for (const route of routeTable()) {
          const res = await call(app, route.method, `${V1}/applications/${apps.a}${route.path(apps.a)}`, {
            ...(route.body !== undefined ? { body: route.body } : {}),
          });
          refused(res, 401, "UNAUTHENTICATED", `anonymous ${route.method} ${route.template}`);
        }
      });
    });

    it("an application in the recycle bin: every change → 409 APPLICATION_DELETED and nothing changes; reads still answer", async () => {
      const gonePath = (route: RouteCase) =>
        route
          .path(apps.gone)
          .replace(users.carol, goneIds.user)
          .replace(String(batch1.cards[0]?.id), goneIds.card)
          .replace(batch1.id, goneIds.batch)
          .replace("inv_doesNotExist0000000", goneIds.invite)
          .replace("rss_doesNotExist0000000", goneIds.session)
          .replace("/devices/phone", "/devices/dev-other");
      await unchanged("recycle bin", async () => {
        for (const route of routeTable()) {
          const label = `recycled ${route.method} ${route.template}`;
          const res = await biz(route.method, apps.gone, gonePath(route), route.body, "root");
          if (route.write) refused(res, 409, "APPLICATION_DELETED", label);
          else assert.equal(res.status, 200, `${label}: ${res.text.slice(0, 200)}`);
        }
      });
      assert.equal(json(await biz("GET", apps.gone, `/users/${goneIds.user}`)).device_count, 1);
    });

    it("an unknown application, or an app id that cannot be ours → 404 NOT_FOUND on every route; nothing changes", async () => {
      await unchanged("unknown apps", async () => {
        for (const route of routeTable()) {
          for (const appId of [MISSING_APP, "bad%27id", "a".repeat(65)]) {
            const res = await biz(route.method, appId, route.path(appId), route.body, "root");
            refused(res, 404, "NOT_FOUND", `${appId.slice(0, 12)} ${route.method} ${route.template}`);
          }
        }
      });
    });

    it("the user audit log has every event, with JSON detail and the agent as actor; no password, code or token is stored or logged anywhere", async () => {
      const events = new Set((await rdb().selectFrom("user_audit_logs").select("event").execute()).map((r) => r.event));
      for (const event of [
        "user.created",
        "user.password_reset",
        "user.banned",
        "user.unbanned",
        "user.deleted",
        "device.removed",
        "sessions.revoked",
        "card_keys.generated",
        "card_key.disabled",
        "card_key.deleted",
        "invite_codes.generated",
        "invite_code.deleted",
        "session.kicked",
      ])
        assert.ok(events.has(event), `user audit has ${event}`);
      for (const row of await rdb().selectFrom("user_audit_logs").selectAll().execute()) {
        assert.ok([agentIds.admin, agentIds.root].includes(row.actor), `actor of ${row.event}`);
        assert.equal(typeof JSON.parse(row.detail ?? "null"), "object", `detail of ${row.event} is JSON`);
      }
      const stored = `${await dumpDb(cdb() as Kysely<unknown>)}\n${await dumpDb(rdb() as Kysely<unknown>)}`;
      const logged = cp.logLines.join("\n");
      assert.ok(secrets.size > 1000, "the secrets list covers every password and code");
      let checked = 0;
      for (const secret of secrets) {
        const forms = new Set([secret, JSON.stringify(secret).slice(1, -1)]);
        for (const form of forms) {
          assert.ok(!stored.includes(form), `a secret (${JSON.stringify(secret.slice(0, 6))}…) is stored`);
          assert.ok(!logged.includes(form), `a secret (${JSON.stringify(secret.slice(0, 6))}…) is logged`);
        }
        checked += 1;
      }
      assert.equal(checked, secrets.size);
      const audits = `${JSON.stringify(await cdb().selectFrom("agent_audit_logs").selectAll().execute())}${JSON.stringify(await rdb().selectFrom("user_audit_logs").selectAll().execute())}`;
      for (const hash of tokenHashes) assert.ok(!audits.includes(hash), "no token hash in an audit row");
    });
  });
}
