/**
 * The agent trails as an operator reads them: GET /admin/v1/agent-login-logs and
 * /admin/v1/agent-audit-logs, with time-range and field filters, newest first, paginated.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createAdminApp } from "../../src/cp/admin/app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

for (const variant of dbVariants()) {
  describe(`agent logs on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: ReturnType<typeof createAdminApp>;
    let token: string;
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await app.request(path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return {
        status: res.status,
        json: (await res.json()) as Record<string, unknown> & { items: Array<Record<string, unknown>>; total: number },
      };
    };

    before(async () => {
      cp = await createTestCp(variant, "logs");
      await completeSetup(cp.ctx);
      app = createAdminApp(cp.ctx, { isSetupComplete: () => true, onSetupComplete: async () => {} });
      const login = async (password: string) =>
        app.request("/admin/v1/auth/login", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ username: "root", password }),
        });
      assert.equal((await login("wrong password here")).status, 401);
      cp.clock.advance(60_000);
      token = ((await (await login(ROOT_PASSWORD)).json()) as { access_token: string }).access_token;
      cp.clock.advance(60_000);
      assert.equal((await call("POST", "/admin/v1/applications", { name: "Game One" })).status, 201);
      assert.equal((await call("POST", "/admin/v1/applications", { name: "Game Two" })).status, 201);
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });

    test("login attempts are listed newest first with result and reason", async () => {
      const { status, json } = await call("GET", "/admin/v1/agent-login-logs");
      assert.equal(status, 200);
      assert.equal(json.total, 2);
      assert.deepEqual(
        json.items.map((i) => i.result),
        ["success", "failure"],
      );
      assert.equal(json.items[1]?.reason, "bad_credentials");
      const failures = await call("GET", "/admin/v1/agent-login-logs?result=failure&username=ROOT");
      assert.equal(failures.json.total, 1);
    });

    test("audit entries filter by action and time range", async () => {
      const all = await call("GET", "/admin/v1/agent-audit-logs?action=application.create");
      assert.equal(all.json.total, 2);
      assert.ok(all.json.items.every((i) => i.result === "success" && typeof i.target_id === "string" && i.agent_id));
      const created = all.json.items.map((i) => i.created_at as number);
      const none = await call("GET", `/admin/v1/agent-audit-logs?action=application.create&to=${Math.min(...created) - 1}`);
      assert.equal(none.json.total, 0);
      const setup = await call("GET", "/admin/v1/agent-audit-logs?action=setup.initialize");
      assert.equal(setup.json.total, 1, "setup itself is in the trail");
      const paged = await call("GET", "/admin/v1/agent-audit-logs?action=application.create&page=2&page_size=1");
      assert.equal(paged.json.items.length, 1);
      assert.equal(paged.json.total, 2);
    });

    test("bad filters are 400, not 500", async () => {
      for (const query of ["from=yesterday", "result=maybe", "agent_id=%27%20OR%201%3D1", "page=0", "from=5&to=1"]) {
        const { status, json } = await call("GET", `/admin/v1/agent-audit-logs?${query}`);
        assert.equal(status, 400, query);
        assert.equal(json.error, "VALIDATION_FAILED");
      }
    });
  });
}
