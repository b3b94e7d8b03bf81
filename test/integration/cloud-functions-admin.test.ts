/**
 * Cloud functions on the admin API (/admin/v1/applications/:app_id/cloud-functions) in process
 * (`app.request()`), on SQLite and on PostgreSQL. Every endpoint's success path, what each change
 * leaves behind (the manifest every config pull carries and the body a node downloads, an agent
 * audit row with the script's sha256 and size but never the script, a config.pending hint), and
 * every refusal: a clear 4xx that changes nothing in either database and hints no node.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { cloudFunctionBody, cloudFunctionManifest } from "../../src/cp/services/applications/node-channel.js";
import type { HintMessage } from "../../src/cp/services/event-bus.js";
import {
  DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS,
  MAX_CLOUD_FUNCTION_SCRIPT_BYTES,
  MAX_CLOUD_FUNCTION_TIMEOUT_MS,
  MIN_CLOUD_FUNCTION_TIMEOUT_MS,
} from "../../src/shared/config/defaults.js";
import { sha256Hex } from "../../src/shared/ids.js";
import {
  type AdminApp,
  buildAdminApp,
  call,
  jsonObject as json,
  loginAs,
  expectOk as ok,
  expectRefused as refused,
  snapshotDb,
} from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

type Obj = Record<string, unknown>;
type Role = "admin" | "operator";

const V1 = "/admin/v1";
const MISSING_APP = "app_doesNotExist000000000";
const ADMIN_PASSWORD = "Cfn-Adm-Passw0rd-One";
const OPERATOR_PASSWORD = "Cfn-Op-Passw0rd-Two";
const GREET = "local who = params.name or 'world'\nreturn { greeting = 'hello ' .. who, [\"ü\"] = true }";
const GREET_V2 = `${GREET}\n-- v2`;
/** The compiler finds the missing `end` at the end of the chunk: line 4, after the last newline. */
const UNCLOSED_IF = "local x = 1\nif x then\n  return x\n";
const VIEW_KEYS = [
  "app_id",
  "created_at",
  "created_by",
  "enabled",
  "id",
  "name",
  "sha256",
  "size_bytes",
  "timeout_ms",
  "updated_at",
  "version",
];

/** A script of exactly `bytes` bytes that compiles: `return 1` padded with a comment. */
function scriptOfSize(bytes: number): string {
  const head = "return 1\n--";
  return head + "x".repeat(bytes - head.length);
}

for (const variant of dbVariants()) {
  describe(`cloud functions on the admin API on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    const tokens: Record<Role, string> = { admin: "", operator: "" };
    let adminId = "";
    const apps = { a: "", b: "", gone: "" };
    const hints: HintMessage[] = [];

    /** Request ids of every call, in order: audit rows share a manual-clock millisecond, so this is what orders them. */
    const requestIds: string[] = [];
    const fns = async (method: string, appId: string, path = "", body?: unknown, role: Role = "admin") => {
      const res = await call(app, method, `${V1}/applications/${appId}/cloud-functions${path}`, {
        token: tokens[role],
        ...(body !== undefined ? { body } : {}),
      });
      requestIds.push(res.headers.get("x-request-id") ?? "");
      return res;
    };
    const manifestOf = async (appId: string) => (await cloudFunctionManifest(cp.ctx)).filter((f) => f.app_id === appId);
    /** The audit row of the latest call that wrote one for `action`. */
    const lastAudit = async (action: string) => {
      const rows = await cp.ctx.controlDb.selectFrom("agent_audit_logs").selectAll().where("action", "=", action).execute();
      const latest = rows.sort((a, b) => requestIds.lastIndexOf(a.request_id ?? "") - requestIds.lastIndexOf(b.request_id ?? "")).at(-1);
      assert.ok(latest, `no ${action} audit row`);
      return { ...latest, detail: JSON.parse(latest.detail ?? "{}") as Obj };
    };

    /** Runs refusals and proves that neither database changed (log tables aside) and no node was hinted. */
    const unchanged = async (label: string, run: () => Promise<void>) => {
      // Authenticating records when an agent session was last used: not a function change, so done first.
      for (const token of Object.values(tokens)) ok(await call(app, "GET", `${V1}/auth/me`, { token }), 200, "warm-up");
      const before = await snapshotDb(cp.ctx);
      const hintsBefore = hints.length;
      await run();
      assert.deepEqual(await snapshotDb(cp.ctx), before, `${label}: the database changed`);
      assert.equal(hints.length, hintsBefore, `${label}: a node was hinted`);
    };

    before(async () => {
      cp = await createTestCp(variant, "cfn");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      const root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      for (const [role, password] of [
        ["admin", ADMIN_PASSWORD],
        ["operator", OPERATOR_PASSWORD],
      ] as const) {
        const res = await call(app, "POST", `${V1}/agents`, { token: root, body: { username: `cf-${role}-agent`, password, role } });
        const created = ok(res, 201, `create ${role}`);
        if (role === "admin") adminId = String(created.id);
        tokens[role] = (await loginAs(app, `cf-${role}-agent`, password)).access_token;
      }
      const newApp = async (name: string) =>
        String(ok(await call(app, "POST", `${V1}/applications`, { token: tokens.admin, body: { name } }), 201, name).app_id);
      apps.a = await newApp("Functions App A");
      apps.b = await newApp("Functions App B");
      apps.gone = await newApp("Functions App Gone");
      ok(await fns("POST", apps.b, "", { name: "greet", script: "return 'b'" }), 201, "B's greet");
      ok(await fns("POST", apps.gone, "", { name: "kept", script: "return 'gone'" }), 201, "recycled app's function");
      ok(await call(app, "DELETE", `${V1}/applications/${apps.gone}`, { token: tokens.admin }), 200, "recycle app");
      cp.ctx.events.onHint((m) => hints.push(m));
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });

    it("POST creates version 1 with the default timeout: 201 with the script, audited with sha256 and size, nodes hinted, in the manifest", async () => {
      hints.length = 0;
      cp.clock.advance(1000);
      const created = ok(await fns("POST", apps.a, "", { name: "greet", script: GREET }), 201, "create greet");
      assert.deepEqual(Object.keys(created).sort(), [...VIEW_KEYS, "script"].sort());
      assert.equal(created.script, GREET);
      assert.equal(created.name, "greet");
      assert.equal(created.app_id, apps.a);
      assert.equal(created.version, 1);
      assert.equal(created.timeout_ms, DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS);
      assert.equal(created.sha256, sha256Hex(GREET));
      assert.equal(created.size_bytes, Buffer.byteLength(GREET), "size in UTF-8 bytes (ü is two)");
      assert.equal(created.created_at, cp.clock.now());
      assert.equal(created.created_by, adminId);
      assert.match(String(created.id), /^cfn_/);
      assert.deepEqual(hints, [{ event: "config.pending", nodeId: null }]);

      assert.deepEqual(await manifestOf(apps.a), [
        { app_id: apps.a, name: "greet", version: 1, sha256: sha256Hex(GREET), timeout_ms: DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS },
      ]);
      assert.deepEqual(await cloudFunctionBody(cp.ctx, apps.a, "greet"), { script: GREET, version: 1, sha256: sha256Hex(GREET) });

      const audit = await lastAudit("cloud_function.create");
      assert.equal(audit.result, "success");
      assert.equal(audit.agent_id, adminId);
      assert.equal(audit.target_type, "cloud_function");
      assert.equal(audit.target_id, `${apps.a}:greet`);
      assert.deepEqual(audit.detail, {
        app_id: apps.a,
        name: "greet",
        function_id: created.id,
        version: 1,
        sha256: sha256Hex(GREET),
        size_bytes: Buffer.byteLength(GREET),
        timeout_ms: DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS,
        enabled: true,
      });
    });

    it("POST takes timeout_ms, and a script of exactly the size limit", async () => {
      const quick = ok(await fns("POST", apps.a, "", { name: "quick.v1", script: "return 1", timeout_ms: 250 }), 201, "quick");
      assert.equal(quick.timeout_ms, 250);
      const largest = scriptOfSize(MAX_CLOUD_FUNCTION_SCRIPT_BYTES);
      const big = ok(await fns("POST", apps.a, "", { name: "_largest", script: largest }), 201, "largest script");
      assert.equal(big.size_bytes, MAX_CLOUD_FUNCTION_SCRIPT_BYTES);
      assert.equal(big.sha256, sha256Hex(largest));
      for (const [name, timeout] of [
        ["t-min", MIN_CLOUD_FUNCTION_TIMEOUT_MS],
        ["t-max", MAX_CLOUD_FUNCTION_TIMEOUT_MS],
      ] as const) {
        assert.equal(ok(await fns("POST", apps.a, "", { name, script: "return 2", timeout_ms: timeout }), 201, name).timeout_ms, timeout);
      }
    });

    it("GET lists by name, paged, without scripts; any role may read; GET one returns the script", async () => {
      const list = ok(await fns("GET", apps.a, "", undefined, "operator"), 200, "list");
      const items = list.items as Obj[];
      assert.deepEqual(
        items.map((f) => f.name),
        ["_largest", "greet", "quick.v1", "t-max", "t-min"],
      );
      assert.equal(list.total, 5);
      for (const item of items) assert.deepEqual(Object.keys(item).sort(), VIEW_KEYS, "no script in a list");
      const page2 = ok(await fns("GET", apps.a, "?page=2&page_size=2"), 200, "page 2");
      assert.deepEqual(
        (page2.items as Obj[]).map((f) => f.name),
        ["quick.v1", "t-max"],
      );
      assert.deepEqual([page2.page, page2.page_size, page2.total], [2, 2, 5]);
      assert.deepEqual(
        (ok(await fns("GET", apps.b, ""), 200, "B's list").items as Obj[]).map((f) => f.name),
        ["greet"],
        "another application's functions are its own",
      );

      const one = ok(await fns("GET", apps.a, "/greet", undefined, "operator"), 200, "get greet");
      assert.equal(one.script, GREET);
      assert.equal(one.sha256, sha256Hex(GREET));
      assert.equal(ok(await fns("GET", apps.b, "/greet"), 200, "B's greet").script, "return 'b'");
      assert.equal(ok(await fns("GET", apps.gone, "/kept"), 200, "recycled app readable").script, "return 'gone'");
    });

    it("PATCH changes the script, then the timeout, each a new version with a hint and an audit row; the same values again change nothing", async () => {
      hints.length = 0;
      cp.clock.advance(1000);
      const v2 = ok(await fns("PATCH", apps.a, "/greet", { script: GREET_V2 }), 200, "new script");
      assert.equal(v2.version, 2);
      assert.equal(v2.script, GREET_V2);
      assert.equal(v2.sha256, sha256Hex(GREET_V2));
      assert.equal(v2.timeout_ms, DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS, "timeout kept");
      assert.equal(v2.changed, true);
      assert.equal(v2.updated_at, cp.clock.now());
      assert.ok((v2.created_at as number) < (v2.updated_at as number));
      assert.equal(hints.length, 1);
      assert.deepEqual(await cloudFunctionBody(cp.ctx, apps.a, "greet"), { script: GREET_V2, version: 2, sha256: sha256Hex(GREET_V2) });
      const scriptAudit = await lastAudit("cloud_function.update");
      assert.equal(scriptAudit.result, "success");
      assert.equal(scriptAudit.target_id, `${apps.a}:greet`);
      assert.deepEqual(scriptAudit.detail, {
        app_id: apps.a,
        name: "greet",
        changes: ["script"],
        changed: true,
        function_id: v2.id,
        version: 2,
        sha256: sha256Hex(GREET_V2),
        size_bytes: Buffer.byteLength(GREET_V2),
        timeout_ms: DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS,
        enabled: true,
      });

      const v3 = ok(await fns("PATCH", apps.a, "/greet", { timeout_ms: 5000 }), 200, "new timeout");
      assert.deepEqual([v3.version, v3.timeout_ms, v3.script], [3, 5000, GREET_V2]);
      assert.equal(hints.length, 2);
      assert.deepEqual(
        (await manifestOf(apps.a)).find((f) => f.name === "greet"),
        { app_id: apps.a, name: "greet", version: 3, sha256: sha256Hex(GREET_V2), timeout_ms: 5000 },
        "the manifest a node pulls carries the new version and timeout",
      );

      const same = ok(await fns("PATCH", apps.a, "/greet", { script: GREET_V2, timeout_ms: 5000 }), 200, "same values");
      assert.deepEqual([same.version, same.changed], [3, false]);
      assert.equal(hints.length, 2, "no hint for a no-op");
      assert.equal((await lastAudit("cloud_function.update")).detail.changed, false);
    });

    it("DELETE removes the function: gone from the manifest and from the node download, audited, nodes hinted", async () => {
      hints.length = 0;
      const deleted = ok(await fns("DELETE", apps.a, "/quick.v1"), 200, "delete");
      assert.deepEqual(Object.keys(deleted).sort(), VIEW_KEYS);
      assert.equal(deleted.name, "quick.v1");
      assert.deepEqual(hints, [{ event: "config.pending", nodeId: null }]);
      assert.ok(!(await manifestOf(apps.a)).some((f) => f.name === "quick.v1"), "not in the manifest");
      await assert.rejects(cloudFunctionBody(cp.ctx, apps.a, "quick.v1"), /not found/);
      refused(await fns("GET", apps.a, "/quick.v1"), 404, "FUNCTION_NOT_FOUND", "deleted function");
      const audit = await lastAudit("cloud_function.delete");
      assert.deepEqual([audit.result, audit.target_id], ["success", `${apps.a}:quick.v1`]);
      assert.deepEqual(audit.detail, {
        app_id: apps.a,
        name: "quick.v1",
        function_id: deleted.id,
        version: 1,
        sha256: sha256Hex("return 1"),
        size_bytes: 8,
        timeout_ms: 250,
        enabled: true,
      });
      ok(await fns("POST", apps.a, "", { name: "quick.v1", script: "return 3" }), 201, "the name is free again");
      assert.equal((await manifestOf(apps.a)).find((f) => f.name === "quick.v1")?.version, 1);
    });

    it("enabled: a disabled function is kept but leaves the manifest and the node download; switching keeps the version", async () => {
      hints.length = 0;
      const created = ok(await fns("POST", apps.a, "", { name: "switch", script: "return 'on'", enabled: false }), 201, "create disabled");
      assert.deepEqual([created.enabled, created.version], [false, 1]);
      assert.ok(!(await manifestOf(apps.a)).some((f) => f.name === "switch"), "a disabled function is not in the manifest");
      await assert.rejects(cloudFunctionBody(cp.ctx, apps.a, "switch"), /not found/);
      assert.equal(ok(await fns("GET", apps.a, "/switch"), 200, "still readable").script, "return 'on'");

      const on = ok(await fns("PATCH", apps.a, "/switch", { enabled: true }), 200, "enable");
      assert.deepEqual([on.enabled, on.version, on.changed], [true, 1, true]);
      assert.equal((await manifestOf(apps.a)).find((f) => f.name === "switch")?.version, 1, "back in the manifest");
      assert.equal((await cloudFunctionBody(cp.ctx, apps.a, "switch")).script, "return 'on'");
      assert.deepEqual((await lastAudit("cloud_function.update")).detail.enabled, true);

      const again = ok(await fns("PATCH", apps.a, "/switch", { enabled: true }), 200, "enable again");
      assert.equal(again.changed, false);
      const off = ok(await fns("PATCH", apps.a, "/switch", { enabled: false }), 200, "disable");
      assert.deepEqual([off.enabled, off.version], [false, 1]);
      assert.ok(!(await manifestOf(apps.a)).some((f) => f.name === "switch"), "gone from the manifest again");
      assert.equal(hints.length, 3, "create, enable and disable hint the nodes; the no-op does not");
      await unchanged("enabled of the wrong type", async () => {
        refused(await fns("PATCH", apps.a, "/switch", { enabled: "yes" }), 400, "VALIDATION_FAILED", "enabled as a string", "enabled");
        refused(
          await fns("POST", apps.a, "", { name: "other", script: "return 1", enabled: 1 }),
          400,
          "VALIDATION_FAILED",
          "enabled as a number",
          "enabled",
        );
      });
    });

    it("bad input: names, sizes, timeouts, unknown fields, empty patches → 400 VALIDATION_FAILED naming the field; nothing changes", async () => {
      await unchanged("bad input", async () => {
        for (const name of ["", "1starts-with-digit", "has space", "a/b", "semi;colon", "ü", "x".repeat(65), "-dash"]) {
          const body = refused(
            await fns("POST", apps.a, "", { name, script: "return 1" }),
            400,
            "VALIDATION_FAILED",
            `name ${name}`,
            "name",
          );
          assert.deepEqual(
            (body.details as Obj[]).map((d) => d.field),
            ["name"],
          );
        }
        const tooLarge = scriptOfSize(MAX_CLOUD_FUNCTION_SCRIPT_BYTES + 1);
        refused(await fns("POST", apps.a, "", { name: "big", script: tooLarge }), 400, "VALIDATION_FAILED", "too large", "script");
        refused(await fns("PATCH", apps.a, "/greet", { script: tooLarge }), 400, "VALIDATION_FAILED", "too large patch", "script");
        // Two-byte characters: under the limit in characters, over it in UTF-8 bytes.
        const wide = `--${"é".repeat(MAX_CLOUD_FUNCTION_SCRIPT_BYTES / 2)}`;
        refused(await fns("POST", apps.a, "", { name: "wide", script: wide }), 400, "VALIDATION_FAILED", "too large in bytes", "script");
        for (const script of ["", "  \n\t"]) {
          refused(await fns("POST", apps.a, "", { name: "blank", script }), 400, "VALIDATION_FAILED", "empty script", "script");
          refused(await fns("PATCH", apps.a, "/greet", { script }), 400, "VALIDATION_FAILED", "empty patch script", "script");
        }
        for (const timeout of [0, MIN_CLOUD_FUNCTION_TIMEOUT_MS - 1, MAX_CLOUD_FUNCTION_TIMEOUT_MS + 1, 1.5, -5]) {
          refused(
            await fns("POST", apps.a, "", { name: "t", script: "return 1", timeout_ms: timeout }),
            400,
            "VALIDATION_FAILED",
            `timeout ${timeout}`,
            "timeout_ms",
          );
          refused(
            await fns("PATCH", apps.a, "/greet", { timeout_ms: timeout }),
            400,
            "VALIDATION_FAILED",
            `patch timeout ${timeout}`,
            "timeout_ms",
          );
        }
        refused(
          await fns("POST", apps.a, "", { name: "t", script: "return 1", timeout_ms: "100" }),
          400,
          "VALIDATION_FAILED",
          "timeout as text",
        );
        const every = refused(
          await fns("POST", apps.a, "", { name: "bad name", script: "", timeout_ms: 1 }),
          400,
          "VALIDATION_FAILED",
          "all",
        );
        assert.deepEqual(
          (every.details as Obj[]).map((d) => d.field),
          ["name", "script", "timeout_ms"],
          "every problem at once",
        );

        refused(
          await fns("POST", apps.a, "", { name: "x", script: "return 1", owner: "me" }),
          400,
          "VALIDATION_FAILED",
          "unknown field",
          "owner",
        );
        refused(await fns("POST", apps.a, "", { script: "return 1" }), 400, "VALIDATION_FAILED", "no name", "name");
        refused(await fns("POST", apps.a, "", { name: "x" }), 400, "VALIDATION_FAILED", "no script", "script");
        refused(await fns("POST", apps.a, "", {}), 400, "VALIDATION_FAILED", "empty create");
        refused(await fns("PATCH", apps.a, "/greet", {}), 400, "VALIDATION_FAILED", "empty patch", "at least one");
        refused(await fns("PATCH", apps.a, "/greet", { name: "renamed" }), 400, "VALIDATION_FAILED", "rename", "name");
        refused(await fns("PATCH", apps.a, "/greet", { script: "return 1", extra: 1 }), 400, "VALIDATION_FAILED", "patch unknown", "extra");
        refused(await fns("DELETE", apps.a, "/greet", { force: true }), 400, "VALIDATION_FAILED", "delete with a body", "force");
        const malformed = await call(app, "POST", `${V1}/applications/${apps.a}/cloud-functions`, {
          token: tokens.admin,
          rawBody: '{"name": "x", "script": ',
          headers: { "content-type": "application/json" },
        });
        refused(malformed, 400, "MALFORMED_JSON", "malformed JSON");
        const plain = await call(app, "POST", `${V1}/applications/${apps.a}/cloud-functions`, {
          token: tokens.admin,
          rawBody: "return 1",
          headers: { "content-type": "text/plain" },
        });
        refused(plain, 415, "UNSUPPORTED_MEDIA_TYPE", "script as text/plain");
      });
    });

    it("a script that does not compile → 400 FUNCTION_SYNTAX_ERROR with the line and message; nothing is stored and nothing is run", async () => {
      await unchanged("syntax errors", async () => {
        const body = refused(
          await fns("POST", apps.a, "", { name: "broken", script: UNCLOSED_IF }),
          400,
          "FUNCTION_SYNTAX_ERROR",
          "unclosed if",
          "line 4",
        );
        const details = body.details as Obj;
        assert.equal(details.line, 4);
        assert.match(String(details.message), /'end' expected/);
        assert.ok((body.message as string).includes(String(details.message)), "the message carries the compiler's words");

        const patched = refused(
          await fns("PATCH", apps.a, "/greet", { script: "return 1\nreturn = 2" }),
          400,
          "FUNCTION_SYNTAX_ERROR",
          "patch with a syntax error",
        );
        assert.equal((patched.details as Obj).line, 2);
        ok(await fns("GET", apps.a, "/greet"), 200, "still there");
        refused(
          await fns("POST", apps.a, "", { name: "binary", script: "\x1bLua" }),
          400,
          "FUNCTION_SYNTAX_ERROR",
          "a binary chunk is not text Lua",
        );
      });
      assert.equal((await fns("GET", apps.a, "/greet").then((r) => json(r))).script, GREET_V2, "the stored script is untouched");
      assert.equal((await fns("GET", apps.a, "/broken")).status, 404);

      const audit = await lastAudit("cloud_function.create");
      assert.equal(audit.result, "failure");
      assert.equal(audit.error_code, "FUNCTION_SYNTAX_ERROR");
      assert.equal(audit.target_id, `${apps.a}:binary`);
      const update = await lastAudit("cloud_function.update");
      assert.deepEqual([update.result, update.error_code, update.target_id], ["failure", "FUNCTION_SYNTAX_ERROR", `${apps.a}:greet`]);
    });

    it("a script that would run away is stored as is: saving compiles, it never executes", async () => {
      const runaway = "while true do end";
      const saved = ok(await fns("POST", apps.a, "", { name: "spin", script: runaway, timeout_ms: 10 }), 201, "runaway saves");
      assert.equal(saved.script, runaway);
      ok(await fns("DELETE", apps.a, "/spin"), 200, "cleanup");
    });

    it("duplicate name → 409 CONFLICT; unknown application or function → 404; recycled application → 409; nothing changes", async () => {
      await unchanged("conflicts and unknowns", async () => {
        refused(await fns("POST", apps.a, "", { name: "greet", script: "return 'again'" }), 409, "CONFLICT", "duplicate", "greet");
        const dup = await lastAudit("cloud_function.create");
        assert.deepEqual([dup.result, dup.error_code, dup.target_id], ["failure", "CONFLICT", `${apps.a}:greet`]);
        refused(
          await fns("POST", MISSING_APP, "", { name: "x", script: "return 1" }),
          404,
          "NOT_FOUND",
          "create in unknown app",
          "Application",
        );
        refused(await fns("POST", MISSING_APP, "", { name: "x", script: UNCLOSED_IF }), 404, "NOT_FOUND", "unknown app before syntax");
        refused(await fns("GET", MISSING_APP, ""), 404, "NOT_FOUND", "list of unknown app");
        refused(await fns("GET", MISSING_APP, "/greet"), 404, "NOT_FOUND", "get in unknown app");
        refused(await fns("GET", "bad%27id", ""), 404, "NOT_FOUND", "app id that cannot be one");
        for (const method of ["GET", "PATCH", "DELETE"]) {
          const body = method === "PATCH" ? { timeout_ms: 100 } : undefined;
          refused(await fns(method, apps.a, "/nope", body), 404, "FUNCTION_NOT_FOUND", `${method} unknown function`);
          refused(await fns(method, apps.a, "/bad%20name", body), 404, "FUNCTION_NOT_FOUND", `${method} name that cannot be one`);
          refused(await fns(method, apps.a, "/kept", body), 404, "FUNCTION_NOT_FOUND", `${method} another app's function`);
        }
        refused(await fns("PATCH", apps.a, "/nope", { script: UNCLOSED_IF }), 404, "FUNCTION_NOT_FOUND", "unknown function before syntax");
        refused(await fns("POST", apps.gone, "", { name: "x", script: "return 1" }), 409, "APPLICATION_DELETED", "create in recycled app");
        refused(await fns("PATCH", apps.gone, "/kept", { timeout_ms: 100 }), 409, "APPLICATION_DELETED", "patch in recycled app");
        refused(await fns("DELETE", apps.gone, "/kept"), 409, "APPLICATION_DELETED", "delete in recycled app");
      });
      assert.ok(
        !(await cloudFunctionManifest(cp.ctx)).some((f) => f.app_id === apps.gone),
        "a recycled app's functions stay out of the manifest",
      );
      const recycled = await lastAudit("cloud_function.create");
      assert.deepEqual([recycled.result, recycled.error_code, recycled.target_id], ["failure", "APPLICATION_DELETED", `${apps.gone}:x`]);
    });

    it("an operator may read but not change (403, audited); no token is 401", async () => {
      await unchanged("wrong permission", async () => {
        refused(await fns("POST", apps.a, "", { name: "op", script: "return 1" }, "operator"), 403, "FORBIDDEN", "operator create");
        refused(await fns("PATCH", apps.a, "/greet", { timeout_ms: 100 }, "operator"), 403, "FORBIDDEN", "operator patch");
        refused(await fns("DELETE", apps.a, "/greet", undefined, "operator"), 403, "FORBIDDEN", "operator delete");
        for (const [method, path] of [
          ["GET", ""],
          ["POST", ""],
          ["GET", "/greet"],
          ["PATCH", "/greet"],
          ["DELETE", "/greet"],
        ] as const) {
          const res = await call(app, method, `${V1}/applications/${apps.a}/cloud-functions${path}`);
          refused(res, 401, "UNAUTHENTICATED", `${method} ${path} without a token`);
        }
      });
      const denied = await lastAudit("cloud_function.delete");
      assert.deepEqual([denied.result, denied.error_code], ["failure", "FORBIDDEN"]);
    });

    it("no audit row and no log line carries a script", async () => {
      const rows = await cp.ctx.controlDb
        .selectFrom("agent_audit_logs")
        .select(["action", "detail"])
        .where("action", "like", "cloud_function.%")
        .execute();
      assert.ok(rows.length >= 10, `expected the run's cloud_function rows, got ${rows.length}`);
      const text = JSON.stringify(rows);
      for (const script of [GREET, GREET_V2, "return 'again'", "while true do end", "local who"]) {
        assert.ok(!text.includes(JSON.stringify(script).slice(1, -1)), `a script reached the audit log: ${script}`);
        assert.ok(!cp.logLines.some((line) => line.includes(script)), `a script reached the log: ${script}`);
      }
    });
  });
}
