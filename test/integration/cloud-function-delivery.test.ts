/**
 * Cloud function delivery when a body does not compile, on SQLite and PostgreSQL: the node's
 * config sync (its real CpClient over mTLS) against a real in-process CP node API, with the admin
 * view read through the admin app. The CP compiles scripts saved through the admin API, so a
 * script that does not compile is written straight into the Control DB — as a corrupt row or one
 * written for a newer Lua would be.
 *
 * A good v1 is served; a v2 that does not compile leaves v1 in force, is logged and shown as
 * that node's error on the CP, and is neither fetched nor reported again while the manifest
 * names it; a good v3 is served and the error is gone. A function that never compiled is not
 * served at all.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ConfigSync } from "../../src/node/agent/config-sync.js";
import { CpClient } from "../../src/node/agent/cp-client.js";
import { AppliedConfigStore } from "../../src/node/state/config-store.js";
import { newId } from "../../src/shared/ids.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import type { ConfigsErrorsRequest } from "../../src/shared/node-protocol/index.js";
import { systemClock, systemScheduler } from "../../src/shared/time/index.js";
import { type AdminApp, buildAdminApp, call, loginAs } from "../helpers/admin-app.js";
import { ROOT_PASSWORD, ROOT_USERNAME } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { type NodeIdentity, startTestNodeApi, type TestNodeApi } from "../helpers/node-api.js";

type Obj = Record<string, unknown>;

const V1 = "return params.a + params.b";
const V2_BROKEN = "return params.a +";
const V3 = "return params.a * params.b";

for (const variant of dbVariants()) {
  describe(`cloud function delivery on ${variant.name}`, { skip: variant.skip }, () => {
    let api: TestNodeApi;
    let admin: AdminApp;
    let token = "";
    let appId = "";
    let node: NodeIdentity;
    let client: CpClient;
    const store = new AppliedConfigStore();
    const memory = createMemoryLogger("CP Agent");
    const reports: ConfigsErrorsRequest[] = [];
    const fetches: string[] = [];
    let sync: ConfigSync;

    /** This node's cloud function errors as the admin API shows them. */
    const shownErrors = async (): Promise<Obj[]> => {
      const res = await call(admin, "GET", `/admin/v1/nodes/${node.nodeId}/configs`, { token });
      assert.equal(res.status, 200, res.text);
      return (res.json as { cloud_function_errors: Obj[] }).cloud_function_errors;
    };
    /** Stores a script as a corrupt row would be: straight into the Control DB, compiled by nobody. */
    const save = async (name: string, script: string): Promise<{ version: number }> => {
      api.cp.clock.advance(1000);
      const now = api.cp.clock.now();
      const db = api.cp.ctx.controlDb;
      const current = await db
        .selectFrom("cloud_functions")
        .select(["id", "version"])
        .where("app_id", "=", appId)
        .where("name", "=", name)
        .executeTakeFirst();
      if (current) {
        const version = Number(current.version) + 1;
        await db.updateTable("cloud_functions").set({ script, version, updated_at: now }).where("id", "=", current.id).execute();
        return { version };
      }
      await db
        .insertInto("cloud_functions")
        .values({
          id: newId("cfn"),
          app_id: appId,
          name,
          script,
          version: 1,
          timeout_ms: 1000,
          created_at: now,
          updated_at: now,
          created_by: null,
        })
        .execute();
      return { version: 1 };
    };
    const served = (name: string) => store.cloudFunction(appId, name);

    before(async () => {
      api = await startTestNodeApi(variant, "cfn_delivery");
      admin = (await buildAdminApp(api.cp)).app;
      token = (await loginAs(admin, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      const created = await call(admin, "POST", "/admin/v1/applications", { token, body: { name: "Functions App" } });
      appId = String((created.json as Obj).app_id);
      node = await api.mintNode({ name: "functions-node" });
      client = new CpClient({
        cpUrl: api.url,
        nodeId: node.nodeId,
        tls: { caPem: api.cpCaPem, certPem: node.certPem, keyPem: node.keyPem },
        requestTimeoutMs: () => 10_000,
        scheduler: systemScheduler,
      });
      // The real client, with the calls this suite counts recorded on the way through.
      const recording = {
        pullConfigs: client.pullConfigs.bind(client),
        ackConfigs: client.ackConfigs.bind(client),
        reportConfigErrors: (body: ConfigsErrorsRequest) => {
          reports.push(body);
          return client.reportConfigErrors(body);
        },
        fetchCloudFunction: (name: string, app: string) => {
          fetches.push(name);
          return client.fetchCloudFunction(name, app);
        },
      };
      sync = new ConfigSync({ client: recording, store, clock: systemClock, log: memory.logger });
    });
    after(async () => {
      await client?.close();
      await api?.close();
      await variant.cleanup();
    });

    test("a good v1 is fetched and served", async () => {
      await save("add", V1);
      const result = await sync.run();
      assert.deepEqual(result.cloudFunctions, { fetched: 1, failed: 0, rejected: 0 });
      assert.equal(served("add")?.manifest.version, 1);
      assert.equal(served("add")?.body.toString(), V1);
      assert.deepEqual(await shownErrors(), []);
    });

    test("a v2 that does not compile: v1 stays in force, the node logs it and the CP shows it for that node", async () => {
      const v2 = await save("add", V2_BROKEN);
      assert.equal(v2.version, 2, "stored without compiling, as a corrupt row would be");
      await save("never", "local x = ");
      const result = await sync.run();
      assert.deepEqual(result.cloudFunctions, { fetched: 0, failed: 0, rejected: 2 });
      assert.equal(served("add")?.manifest.version, 1);
      assert.equal(served("add")?.body.toString(), V1, "the previous body is the one served");
      assert.equal(served("never"), undefined, "a function that never compiled is not served");

      const warning = memory.events().find((e) => e.msg === "cloud_function.rejected" && e.name === "add");
      assert.ok(warning, "logged when refused");
      assert.equal(warning.level, "warn");
      assert.equal(warning.category, "CP Agent");
      assert.equal(warning.app_id, appId);
      assert.equal(warning.version, 2);
      assert.equal(warning.line, 1);
      assert.match(String(warning.message), /near <eof>/);

      assert.equal(reports.length, 1, "both refusals reported in one batch");
      const shown = await shownErrors();
      assert.deepEqual(
        shown.map(({ error_at, ...rest }) => rest),
        [
          { app_id: appId, name: "add", version: 2, applied_version: 1, error_message: "line 1: unexpected symbol near <eof>" },
          { app_id: appId, name: "never", version: 1, applied_version: null, error_message: "line 1: unexpected symbol near <eof>" },
        ],
      );
      assert.equal(shown[0]?.error_at, api.cp.clock.now());
      const states = await call(admin, "GET", `/admin/v1/nodes/${node.nodeId}/configs`, { token });
      assert.equal(((states.json as Obj).summary as Obj).error, 0, "config item counts are not mixed with function errors");
    });

    test("the next pull neither fetches nor reports the refused bodies again", async () => {
      const before = { fetches: fetches.length, reports: reports.length };
      api.cp.clock.advance(1000);
      const result = await sync.run();
      assert.deepEqual(result.cloudFunctions, { fetched: 0, failed: 0, rejected: 2 });
      assert.equal(fetches.length, before.fetches, "no download");
      assert.equal(reports.length, before.reports, "no report");
      assert.equal(served("add")?.manifest.version, 1);
      assert.equal(sync.rejectedCloudFunctions, 2);
      assert.equal((await shownErrors()).length, 2, "still shown");
    });

    test("a good v3 is served and the error is cleared", async () => {
      await save("add", V3);
      const result = await sync.run();
      assert.deepEqual(result.cloudFunctions, { fetched: 1, failed: 0, rejected: 1 });
      assert.equal(served("add")?.manifest.version, 3);
      assert.equal(served("add")?.body.toString(), V3);
      assert.deepEqual(
        (await shownErrors()).map((e) => e.name),
        ["never"],
        "only the function still refused is shown",
      );
      assert.equal(sync.rejectedCloudFunctions, 1);
    });

    test("the CP refuses a report naming a function or version it does not have, storing nothing", async () => {
      const bad = (name: string, version: number) =>
        client.reportConfigErrors({
          errors: [{ type: "cloud_function", scope: `app:${appId}`, name, version, applied_version: null, message: "x" }],
        });
      await assert.rejects(bad("missing", 1), /no cloud function missing/);
      await assert.rejects(bad("add", 4), /has no version 4/);
      assert.deepEqual(
        (await shownErrors()).map((e) => e.name),
        ["never"],
      );
    });
  });
}
