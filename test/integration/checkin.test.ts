/**
 * Channel 1 checkin over real mTLS, on SQLite and PostgreSQL: what the CP records of a node's
 * health (the fields the admin node views read), what it answers (heads, config_pending, node
 * status), the online transition logged once, the cursor bookkeeping retention relies on, and
 * hostile bodies refused with nothing stored.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { bumpAuthEpoch } from "../../src/cp/services/security/auth-epochs.js";
import { CHECKIN_CACHE_TTL_MS } from "../../src/shared/config/defaults.js";
import { newId } from "../../src/shared/ids.js";
import {
  type CheckinRequest,
  checkinResponse,
  MAX_BATCH_ITEMS,
  NODE_API_MAX_BODY_BYTES,
  nodePaths,
} from "../../src/shared/node-protocol/index.js";
import { snapshotDb } from "../helpers/admin-app.js";
import { dbVariants } from "../helpers/databases.js";
import { type NodeApiClient, type NodeIdentity, startTestNodeApi, type TestNodeApi } from "../helpers/node-api.js";

const MINUTE = 60_000;
const ACTOR = { agentId: null, username: "test", ip: null, requestId: null };

function report(overrides: Partial<CheckinRequest> = {}): CheckinRequest {
  return {
    software_version: "0.1.0-test",
    node_metadata: { hostname: "edge-1.example.test", os: "linux x64", uptime_s: 42, started_at: 1_780_000_000_000, pid: 4242 },
    metrics: { connections: 17, online_users: 9, requests_per_s: 12.5, errors_per_s: 0.25, rss_bytes: 123_456_789, cpu_percent: 3.5 },
    app_versions: [],
    cursors: { commands: 0, "auth-epochs": 0, blacklist: 0 },
    sse_connected: true,
    ocsp: { status: "good", fetched_at: 1_780_000_100_000, next_update: 1_780_003_700_000 },
    presence: { app_demo: 9 },
    ...overrides,
  };
}

for (const variant of dbVariants()) {
  describe(`node checkin on ${variant.name}`, { skip: variant.skip }, () => {
    let api: TestNodeApi;
    let alpha: NodeIdentity;
    let client: NodeApiClient;
    before(async () => {
      api = await startTestNodeApi(variant, "checkin");
      alpha = await api.mintNode({ name: "alpha" });
      client = api.client(alpha);
    });
    after(async () => {
      await api.close();
      await variant.cleanup();
    });

    const ctx = () => api.cp.ctx;
    const nodeRow = (id: string) => ctx().controlDb.selectFrom("nodes").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const cursors = (id: string) =>
      ctx().controlDb.selectFrom("node_delta_cursors").select(["stream", "cursor"]).where("node_id", "=", id).orderBy("stream").execute();
    const onlineLines = (id: string) => api.cp.logLines.filter((l) => l.includes('"node.online"') && l.includes(id)).length;
    const checkin = (body: unknown, who: NodeApiClient = client, nodeId = alpha.nodeId) =>
      who.request("POST", nodePaths.checkin(nodeId), body);

    it("records the node's health in its row and answers with server time, status, heads and config_pending", async () => {
      const res = await checkin(report());
      assert.equal(res.status, 200, res.text);
      const answer = checkinResponse.strict().parse(res.json);
      assert.deepEqual(answer, {
        server_time: api.cp.clock.now(),
        node_status: "active",
        heads: { commands: 0, "auth-epochs": 0, blacklist: 0 },
        config_pending: false,
      });

      const row = await nodeRow(alpha.nodeId);
      assert.equal(row.last_checkin_at, api.cp.clock.now());
      assert.equal(row.software_version, "0.1.0-test");
      assert.equal(row.online_users, 9);
      assert.equal(row.ocsp_last_applied_at, 1_780_000_100_000);
      assert.deepEqual(JSON.parse(row.metadata ?? "null"), {
        hostname: "edge-1.example.test",
        os: "linux x64",
        uptime_s: 42,
        started_at: 1_780_000_000_000,
        pid: 4242,
        ocsp: { status: "good", fetched_at: 1_780_000_100_000, next_update: 1_780_003_700_000 },
        cursors: { commands: 0, "auth-epochs": 0, blacklist: 0 },
        sse_connected_reported: true,
      });
      assert.deepEqual(JSON.parse(row.metrics ?? "null"), { ...report().metrics, presence: { app_demo: 9 } });
      assert.deepEqual(JSON.parse(row.app_versions ?? "null"), []);
      assert.equal(row.sse_connected, 0, "the SSE column belongs to the hub, not to what the node claims");
      assert.deepEqual(await cursors(alpha.nodeId), [
        { stream: "auth-epochs", cursor: 0 },
        { stream: "blacklist", cursor: 0 },
      ]);
    });

    it("logs node.online on the first checkin after being offline, not on every checkin", async () => {
      const beta = await api.mintNode({ name: "beta" });
      const betaClient = api.client(beta);
      assert.equal(onlineLines(beta.nodeId), 0);
      assert.equal((await checkin(report(), betaClient, beta.nodeId)).status, 200);
      assert.equal(onlineLines(beta.nodeId), 1, "first checkin ever");
      api.cp.clock.advance(MINUTE);
      assert.equal((await checkin(report(), betaClient, beta.nodeId)).status, 200);
      assert.equal(onlineLines(beta.nodeId), 1, "still online: no line");
      api.cp.clock.advance(3 * MINUTE);
      assert.equal((await checkin(report({ software_version: "0.2.0" }), betaClient, beta.nodeId)).status, 200);
      assert.equal(onlineLines(beta.nodeId), 2, "back after more than two minutes of silence");
      const row = await nodeRow(beta.nodeId);
      assert.equal(row.last_checkin_at, api.cp.clock.now(), "the second update of a transition writes the values too");
      assert.equal(row.software_version, "0.2.0");
    });

    it("an OCSP report without fetched_at (or none at all) keeps the last applied time", async () => {
      const before = (await nodeRow(alpha.nodeId)).ocsp_last_applied_at;
      assert.ok(before);
      const { ocsp: _drop, ...withoutOcsp } = report();
      assert.equal((await checkin(withoutOcsp)).status, 200);
      assert.equal((await checkin(report({ ocsp: { status: "none", fetched_at: null, next_update: null } }))).status, 200);
      const row = await nodeRow(alpha.nodeId);
      assert.equal(row.ocsp_last_applied_at, before);
      assert.equal(JSON.parse(row.metadata ?? "{}").ocsp.status, "none");
    });

    it("heads are the newest command seq and change ids; cursors are recorded, clamped to the head, and never lowered by a checkin", async () => {
      const now = api.cp.clock.now();
      await ctx()
        .controlDb.insertInto("commands")
        .values(
          [1, 2, 3].map(() => ({
            id: newId("cmd"),
            kind: "reload_configs",
            payload: "{}",
            target_node_id: null,
            created_at: now,
            created_by: null,
            expires_at: null,
          })),
        )
        .execute();
      ctx().events.publish("command.pending", null); // as the commands service does after queuing
      const seqs = await ctx().controlDb.selectFrom("commands").select("seq").orderBy("seq", "desc").execute();
      const epoch = await bumpAuthEpoch(ctx(), ACTOR, { user_id: "usr_checkin_heads" });
      await bumpAuthEpoch(ctx(), ACTOR, { user_id: "usr_checkin_heads" });

      const res = await checkin(report({ cursors: { commands: 1, "auth-epochs": epoch.id, blacklist: 999 } }));
      assert.equal(res.status, 200, res.text);
      const answer = checkinResponse.parse(res.json);
      assert.equal(answer.heads.commands, Number(seqs[0]?.seq));
      assert.equal(answer.heads["auth-epochs"], epoch.id + 1);
      assert.equal(answer.heads.blacklist, 0);
      assert.deepEqual(
        await cursors(alpha.nodeId),
        [
          { stream: "auth-epochs", cursor: epoch.id },
          { stream: "blacklist", cursor: 0 },
        ],
        "a cursor beyond the head is clamped to it",
      );

      assert.equal((await checkin(report({ cursors: { commands: 0, "auth-epochs": 0, blacklist: 0 } }))).status, 200);
      assert.equal(
        (await cursors(alpha.nodeId))[0]?.cursor,
        epoch.id,
        "a lower report does not lower the cursor (only a pull with since may)",
      );
      assert.equal((await checkin(report({ cursors: { commands: 0, "auth-epochs": epoch.id + 1, blacklist: 0 } }))).status, 200);
      assert.equal((await cursors(alpha.nodeId))[0]?.cursor, epoch.id + 1);
    });

    it("heads written by another CP process (no local hint) show up within the cache lifetime", async () => {
      const before = checkinResponse.parse((await checkin(report())).json).heads.commands;
      const now = api.cp.clock.now();
      await ctx()
        .controlDb.insertInto("commands")
        .values({
          id: newId("cmd"),
          kind: "reload_configs",
          payload: "{}",
          target_node_id: null,
          created_at: now,
          created_by: null,
          expires_at: null,
        })
        .execute();
      assert.equal(checkinResponse.parse((await checkin(report())).json).heads.commands, before, "served from the cache for now");
      api.cp.clock.advance(CHECKIN_CACHE_TTL_MS);
      assert.equal(checkinResponse.parse((await checkin(report())).json).heads.commands, before + 1);
    });

    it("a delta pull that lowers the recorded cursor is not undone by an unchanged checkin report, and a changed one raises it", async () => {
      const reported = report({ cursors: { commands: 0, "auth-epochs": 1, blacklist: 0 } });
      assert.equal((await checkin(reported)).status, 200);
      await ctx().controlDb.updateTable("node_delta_cursors").set({ cursor: 0 }).where("node_id", "=", alpha.nodeId).execute(); // what a since=0 pull records
      assert.equal((await checkin(reported)).status, 200);
      assert.equal((await cursors(alpha.nodeId))[0]?.cursor, 0, "same report: no write (a lower cursor is the safe side)");
      assert.equal((await checkin(report({ cursors: { commands: 0, "auth-epochs": 2, blacklist: 0 } }))).status, 200);
      assert.equal((await cursors(alpha.nodeId))[0]?.cursor, 2);
    });

    it("config_pending compares the latest version of every config item with the node's applied snapshot", async () => {
      const now = api.cp.clock.now();
      const addVersion = (type: string, scope: string, version: number) =>
        ctx()
          .controlDb.insertInto("config_versions")
          .values({ id: newId("cfv"), config_type: type, scope, version, content: "{}", created_at: now, created_by: null })
          .execute();
      await ctx()
        .controlDb.insertInto("applications")
        .values({
          id: "app_demo",
          name: "Demo",
          description: null,
          secret_hash: "x".repeat(64),
          status: "active",
          created_at: now,
          updated_at: now,
          created_by: null,
          deleted_at: null,
          deleted_by: null,
        })
        .execute();
      await addVersion("server_runtime_settings", "global", 1);
      await addVersion("server_runtime_settings", "global", 2);
      await addVersion("app_policy", "app:app_demo", 1);
      ctx().events.publish("config.pending", null);
      const pending = async (applied: CheckinRequest["app_versions"]) => {
        const res = await checkin(report({ app_versions: applied }));
        assert.equal(res.status, 200, res.text);
        return checkinResponse.parse(res.json).config_pending;
      };
      assert.equal(await pending([]), true, "nothing applied");
      assert.equal(await pending([{ type: "server_runtime_settings", scope: "global", version: 2 }]), true, "the app item is missing");
      assert.equal(
        await pending([
          { type: "server_runtime_settings", scope: "global", version: 1 },
          { type: "app_policy", scope: "app:app_demo", version: 1 },
        ]),
        true,
        "global item behind",
      );
      const current = [
        { type: "server_runtime_settings", scope: "global", version: 2 },
        { type: "app_policy", scope: "app:app_demo", version: 1 },
      ] as const;
      assert.equal(await pending([...current]), false, "in sync");
      assert.deepEqual(JSON.parse((await nodeRow(alpha.nodeId)).app_versions ?? "[]"), current);

      // A version written without a hint (another CP process) shows up once the table expires.
      await addVersion("app_policy", "app:app_demo", 2);
      api.cp.clock.advance(CHECKIN_CACHE_TTL_MS);
      assert.equal(await pending([...current]), true);

      // A pull never delivers items of an application in the recycle bin: they are not pending.
      await ctx().controlDb.updateTable("applications").set({ deleted_at: now }).where("id", "=", "app_demo").execute();
      api.cp.clock.advance(CHECKIN_CACHE_TTL_MS);
      assert.equal(
        await pending([{ type: "server_runtime_settings", scope: "global", version: 2 }]),
        false,
        "recycle-bin items do not count",
      );
    });

    it("a disabled node still checks in and is told it is disabled", async () => {
      const off = await api.mintNode({ name: "disabled-one", status: "disabled" });
      const res = await checkin(report(), api.client(off), off.nodeId);
      assert.equal(res.status, 200, res.text);
      assert.equal(checkinResponse.parse(res.json).node_status, "disabled");
      assert.equal((await nodeRow(off.nodeId)).last_checkin_at, api.cp.clock.now());
    });

    it("hostile or malformed bodies get a clear 4xx and change nothing", async () => {
      const big = "x".repeat(NODE_API_MAX_BODY_BYTES + 1024);
      const tooManyVersions = Array.from({ length: MAX_BATCH_ITEMS + 1 }, (_, i) => ({
        type: "app_policy",
        scope: `app:a${i}`,
        version: 1,
      }));
      const good = report();
      const cases: Array<[string, { body?: unknown; raw?: string; type?: string }, number, string]> = [
        ["empty body", { raw: "" }, 400, "VALIDATION_FAILED"],
        ["empty object", { body: {} }, 400, "VALIDATION_FAILED"],
        ["malformed JSON", { raw: '{"software_version": ' }, 400, "MALFORMED_JSON"],
        ["not JSON content type", { raw: JSON.stringify(good), type: "text/plain" }, 415, "UNSUPPORTED_MEDIA_TYPE"],
        ["an array", { body: [good] }, 400, "VALIDATION_FAILED"],
        ["unknown top-level field", { body: { ...good, admin: true } }, 400, "VALIDATION_FAILED"],
        ["unknown nested field", { body: { ...good, metrics: { ...good.metrics, extra: 1 } } }, 400, "VALIDATION_FAILED"],
        ["wrong type", { body: { ...good, software_version: 7 } }, 400, "VALIDATION_FAILED"],
        ["negative metric", { body: { ...good, metrics: { ...good.metrics, online_users: -1 } } }, 400, "VALIDATION_FAILED"],
        ["fractional counter", { body: { ...good, metrics: { ...good.metrics, connections: 1.5 } } }, 400, "VALIDATION_FAILED"],
        ["huge cursor", { body: { ...good, cursors: { ...good.cursors, blacklist: 1e30 } } }, 400, "VALIDATION_FAILED"],
        ["missing cursors", { body: { ...good, cursors: undefined } }, 400, "VALIDATION_FAILED"],
        [
          "unknown config type",
          { body: { ...good, app_versions: [{ type: "root_password", scope: "global", version: 1 }] } },
          400,
          "VALIDATION_FAILED",
        ],
        [
          "bad scope",
          { body: { ...good, app_versions: [{ type: "app_policy", scope: "app:../x", version: 1 }] } },
          400,
          "VALIDATION_FAILED",
        ],
        ["version 0", { body: { ...good, app_versions: [{ type: "app_policy", scope: "app:a", version: 0 }] } }, 400, "VALIDATION_FAILED"],
        ["oversized batch", { body: { ...good, app_versions: tooManyVersions } }, 400, "VALIDATION_FAILED"],
        ["oversized body", { body: { ...good, software_version: big } }, 413, "BODY_TOO_LARGE"],
      ];
      api.cp.clock.advance(MINUTE);
      const baseline = await snapshotDb(ctx());
      for (const [label, input, status, code] of cases) {
        const res =
          input.raw !== undefined
            ? await client.request("POST", nodePaths.checkin(alpha.nodeId), undefined, {
                rawBody: input.raw,
                headers: { "content-type": input.type ?? "application/json" },
              })
            : await checkin(input.body);
        assert.equal(res.status, status, `${label}: ${res.status} ${res.text.slice(0, 200)}`);
        assert.equal((res.json as { error?: string }).error, code, label);
      }
      assert.deepEqual(await snapshotDb(ctx()), baseline, "nothing stored");
    });

    it("a node cannot check in for another node", async () => {
      const gamma = await api.mintNode({ name: "gamma" });
      const before = await nodeRow(gamma.nodeId);
      // A fresh connection: the 413 above may have left the old one closing.
      const res = await checkin(report(), api.client(alpha), gamma.nodeId);
      assert.equal(res.status, 403);
      assert.equal((res.json as { error: string }).error, "NODE_IDENTITY_MISMATCH");
      assert.deepEqual(await nodeRow(gamma.nodeId), before);
    });
  });
}
