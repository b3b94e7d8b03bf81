/**
 * Config delivery end to end, on SQLite and PostgreSQL: the admin side in process
 * (`app.request()`), the node side over real mTLS (undici with a node client certificate).
 * Covers versioning (next number, no gaps under concurrent writers, identical content a no-op),
 * the SYNCED / PENDING / ERROR / NOT_SENT state machine through pull → ack / error, app-scoped
 * items and the recycle bin, the config.pending hint, cloud-function manifests and downloads,
 * and bad input on every endpoint (clear 4xx, database unchanged).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createCloudFunction, updateCloudFunction } from "../../src/cp/services/applications/cloud-functions.js";
import type { HintMessage } from "../../src/cp/services/event-bus.js";
import { MAX_BATCH_ITEMS, nodePaths } from "../../src/shared/node-protocol/index.js";
import { type AdminApp, buildAdminApp, type CallResult, call, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { ROOT_PASSWORD, ROOT_USERNAME } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import type { NodeApiClient, NodeApiResponse, NodeIdentity, TestNodeApi } from "../helpers/node-api.js";
import { startTestNodeApi } from "../helpers/node-api.js";

type Obj = Record<string, unknown>;
const V1 = "/admin/v1";
const OPERATOR_PASSWORD = "Operator-Passw0rd-Configs";
const PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

function expectError(res: CallResult | NodeApiResponse, status: number, code: string, label: string): Obj {
  const shown = `${label}: got ${res.status} ${res.text.slice(0, 300)}`;
  assert.equal(res.status, status, shown);
  const json = res.json as Obj;
  assert.equal(json?.error, code, shown);
  assert.equal(typeof json.message, "string", shown);
  return json;
}

function ok(res: CallResult | NodeApiResponse, status: number, label: string): Obj {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 300)}`);
  return res.json as Obj;
}

interface StateRow {
  type: string;
  scope: string;
  state: string;
  latest_version: number;
  sent_version: number | null;
  applied_version: number | null;
  error_version: number | null;
  error_message: string | null;
  applied_at: number | null;
  sent_at: number | null;
  error_at: number | null;
}

for (const variant of dbVariants()) {
  describe(`configs on ${variant.name}`, { skip: variant.skip }, () => {
    let api: TestNodeApi;
    let app: AdminApp;
    let root = "";
    let operator = "";
    let appId = "";
    let hints: HintMessage[] = [];

    const admin = (method: string, path: string, body?: unknown, token = root) =>
      call(app, method, `${V1}${path}`, { token, ...(body !== undefined ? { body } : {}) });
    const setGlobal = async (type: string, content: Obj) => ok(await admin("PUT", `/configs/${type}`, { content }), 200, `PUT ${type}`);
    const setApp = async (id: string, type: string, content: Obj) =>
      ok(await admin("PUT", `/applications/${id}/configs/${type}`, { content }), 200, `PUT ${type} for ${id}`);
    const createApp = async (name: string) => String(ok(await admin("POST", "/applications", { name }), 201, `create ${name}`).app_id);
    const nodeStates = async (nodeId: string): Promise<StateRow[]> =>
      ok(await admin("GET", `/nodes/${nodeId}/configs?page_size=200`), 200, "node states").items as StateRow[];
    const stateOf = async (nodeId: string, type: string, scope = "global") => {
      const row = (await nodeStates(nodeId)).find((r) => r.type === type && r.scope === scope);
      assert.ok(row, `no state row for ${type} ${scope}`);
      return row;
    };
    const newNode = async (name: string): Promise<{ id: NodeIdentity; client: NodeApiClient }> => {
      const id = await api.mintNode({ name });
      return { id, client: api.client(id) };
    };
    const pull = async (client: NodeApiClient, nodeId: string, applied: Obj[] = []) =>
      ok(await client.request("POST", nodePaths.configsPull(nodeId), { applied }), 200, "pull");
    const ack = async (client: NodeApiClient, nodeId: string, acks: Obj[]) =>
      ok(await client.request("POST", nodePaths.configsAcks(nodeId), { acks }), 200, "ack");

    before(async () => {
      api = await startTestNodeApi(variant, "configs");
      app = (await buildAdminApp(api.cp)).app;
      root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      ok(
        await admin("POST", "/agents", { username: "cfg-operator", password: OPERATOR_PASSWORD, role: "operator" }),
        201,
        "create operator",
      );
      operator = (await loginAs(app, "cfg-operator", OPERATOR_PASSWORD)).access_token;
      appId = await createApp("Config App");
      api.cp.ctx.events.onHint((m) => hints.push(m));
    });
    after(async () => {
      await api.close();
      await variant.cleanup();
    });

    it("setting a global config appends version 1, 2…; identical content is a no-op; each change hints config.pending to every node", async () => {
      hints = [];
      const first = await setGlobal("cp_agent_runtime", { checkin_interval_ms: 1000 });
      assert.equal(first.version, 1);
      assert.equal(first.changed, true);
      assert.equal(first.scope, "global");
      assert.equal((first.content as Obj).epoch_poll_ms, 5000, "stored with the schema's defaults filled in");
      assert.deepEqual(hints, [{ event: "config.pending", nodeId: null }]);
      const audit = await api.cp.ctx.controlDb
        .selectFrom("agent_audit_logs")
        .selectAll()
        .where("action", "=", "config.set")
        .orderBy("created_at", "desc")
        .executeTakeFirstOrThrow();
      assert.equal(audit.target_type, "config");
      assert.equal(audit.target_id, "cp_agent_runtime:global");
      assert.equal(audit.result, "success");

      // Same meaning, other key order and explicit defaults: identical after parsing → no new version, no hint, nothing stored.
      const baseline = await snapshotDb(api.cp.ctx);
      const same = await setGlobal("cp_agent_runtime", { epoch_poll_ms: 5000, checkin_interval_ms: 1000 });
      assert.equal(same.version, 1);
      assert.equal(same.changed, false);
      assert.equal(hints.length, 1, "no hint for a no-op");
      assert.deepEqual(await snapshotDb(api.cp.ctx), baseline, "a no-op stores nothing");

      const second = await setGlobal("cp_agent_runtime", { checkin_interval_ms: 2000 });
      assert.equal(second.version, 2);
      assert.equal(hints.length, 2);
      const latest = ok(await admin("GET", "/configs/cp_agent_runtime", undefined, operator), 200, "get latest");
      assert.equal(latest.version, 2);
      assert.equal((latest.content as Obj).checkin_interval_ms, 2000);
      const history = ok(await admin("GET", "/configs/cp_agent_runtime/versions?page_size=1", undefined, operator), 200, "history");
      assert.equal(history.total, 2);
      assert.deepEqual(
        (history.items as Obj[]).map((v) => v.version),
        [2],
      );
      const page2 = ok(await admin("GET", "/configs/cp_agent_runtime/versions?page_size=1&page=2"), 200, "history page 2");
      assert.deepEqual(
        (page2.items as Obj[]).map((v) => v.version),
        [1],
      );
      expectError(await admin("GET", "/configs/server_runtime_settings"), 404, "NOT_FOUND", "an item with no version yet");
      assert.equal(ok(await admin("GET", "/configs/server_runtime_settings/versions"), 200, "empty history").total, 0);
    });

    it("concurrent admin writers get consecutive versions: no duplicate, no gap, one hint each", async () => {
      const type = "server_runtime_settings";
      const before = Number(
        (
          await api.cp.ctx.controlDb
            .selectFrom("config_versions")
            .select((eb) => eb.fn.max("version").as("v"))
            .where("config_type", "=", type)
            .executeTakeFirst()
        )?.v ?? 0,
      );
      hints = [];
      const writers = 12;
      const results = await Promise.all(
        Array.from({ length: writers }, (_, i) => admin("PUT", `/configs/${type}`, { content: { max_connections: 1000 + i } })),
      );
      const versions = results.map((r) => Number(ok(r, 200, "concurrent PUT").version)).sort((a, b) => a - b);
      assert.deepEqual(
        versions,
        Array.from({ length: writers }, (_, i) => before + i + 1),
        "each writer got its own next number",
      );
      const stored = await api.cp.ctx.controlDb
        .selectFrom("config_versions")
        .select(["version", "content"])
        .where("config_type", "=", type)
        .where("scope", "=", "global")
        .orderBy("version")
        .execute();
      assert.deepEqual(
        stored.map((r) => Number(r.version)),
        Array.from({ length: before + writers }, (_, i) => i + 1),
        "versions run 1..n without gaps",
      );
      assert.equal(new Set(stored.slice(before).map((r) => r.content)).size, writers, "every writer's content is stored once");
      assert.equal(hints.filter((h) => h.event === "config.pending").length, writers);
    });

    it("full round trip: admin sets → node pulls over mTLS (PENDING) → acks (SYNCED) → new version (NOT_SENT → PENDING) → error (ERROR, previous still applied) → ack clears it", async () => {
      const { id, client } = await newNode("round-trip");
      const nid = id.nodeId;
      await setApp(appId, "app_policy", { max_devices_per_user: 5 });
      const initial = await stateOf(nid, "cp_agent_runtime");
      assert.equal(initial.state, "NOT_SENT");
      assert.equal(initial.sent_version, null);

      const first = await pull(client, nid);
      const items = first.configs as Obj[];
      const agentRuntime = items.find((i) => i.type === "cp_agent_runtime");
      assert.ok(agentRuntime, "cp_agent_runtime delivered");
      assert.equal(agentRuntime.version, 2);
      assert.equal((agentRuntime.content as Obj).checkin_interval_ms, 2000);
      const policy = items.find((i) => i.type === "app_policy" && i.scope === `app:${appId}`);
      assert.ok(policy, "the app's policy delivered");
      assert.equal((policy.content as Obj).max_devices_per_user, 5);
      assert.ok(Array.isArray(first.cloud_functions));

      let state = await stateOf(nid, "cp_agent_runtime");
      assert.equal(state.state, "PENDING");
      assert.equal(state.sent_version, 2);
      assert.equal(state.sent_at, api.cp.clock.now());

      const acks = items.map((i) => ({ type: i.type, scope: i.scope, version: i.version }));
      assert.deepEqual(await ack(client, nid, acks), { accepted: acks.length });
      state = await stateOf(nid, "cp_agent_runtime");
      assert.equal(state.state, "SYNCED");
      assert.equal(state.applied_version, 2);
      assert.ok(
        (await nodeStates(nid)).every((r) => r.state === "SYNCED"),
        "every item synced after the acks",
      );

      // Nothing newer: an empty pull, and the sent state is untouched.
      api.cp.clock.advance(1000);
      const again = await pull(client, nid, acks);
      assert.deepEqual(again.configs, []);
      assert.equal((await stateOf(nid, "cp_agent_runtime")).sent_at, state.sent_at);

      await setGlobal("cp_agent_runtime", { checkin_interval_ms: 3000 });
      state = await stateOf(nid, "cp_agent_runtime");
      assert.equal(state.state, "NOT_SENT");
      assert.equal(state.latest_version, 3);
      assert.equal(state.applied_version, 2);

      const third = await pull(client, nid, acks);
      assert.deepEqual(
        (third.configs as Obj[]).map((i) => [i.type, i.version]),
        [["cp_agent_runtime", 3]],
        "only the newer item is sent",
      );
      assert.equal((await stateOf(nid, "cp_agent_runtime")).state, "PENDING");

      const errors = [
        { type: "cp_agent_runtime", scope: "global", version: 3, applied_version: 2, message: "checkin_interval_ms rejected by policy" },
      ];
      ok(await client.request("POST", nodePaths.configsErrors(nid), { errors }), 200, "errors");
      state = await stateOf(nid, "cp_agent_runtime");
      assert.equal(state.state, "ERROR");
      assert.equal(state.error_version, 3);
      assert.equal(state.error_message, "checkin_interval_ms rejected by policy");
      assert.equal(state.applied_version, 2, "the previous version is still shown as applied");
      assert.ok(
        api.cp.logLines.some((l) => {
          const e = JSON.parse(l) as Obj;
          return (
            e.category === "CP Agent" &&
            e.msg === "config.apply_failed" &&
            e.node_id === nid &&
            e.type === "cp_agent_runtime" &&
            e.scope === "global" &&
            e.version === 3
          );
        }),
        "[CP Agent] config.apply_failed logged with node, type, scope, version",
      );

      const summary = ok(await admin("GET", "/configs?type=cp_agent_runtime", undefined, operator), 200, "list");
      const item = (summary.items as Obj[])[0] as Obj;
      assert.equal(item.version, 3);
      const counts = item.nodes as Obj;
      assert.equal(counts.error, 1);
      assert.equal(
        (counts.synced as number) + (counts.error as number) + (counts.pending as number) + (counts.not_sent as number),
        counts.total,
      );
      const total = Number(
        (
          await api.cp.ctx.controlDb
            .selectFrom("nodes")
            .select((eb) => eb.fn.countAll().as("n"))
            .executeTakeFirstOrThrow()
        ).n,
      );
      assert.equal(counts.total, total);

      await ack(client, nid, [{ type: "cp_agent_runtime", scope: "global", version: 3 }]);
      state = await stateOf(nid, "cp_agent_runtime");
      assert.equal(state.state, "SYNCED");
      assert.equal(state.error_version, null, "the ack cleared the error for its version");
      assert.equal(state.error_message, null);

      // A late retry of an older ack never rolls applied_version back.
      await ack(client, nid, [{ type: "cp_agent_runtime", scope: "global", version: 2 }]);
      assert.equal((await stateOf(nid, "cp_agent_runtime")).applied_version, 3);

      const filtered = ok(await admin("GET", `/nodes/${nid}/configs?state=SYNCED`), 200, "state filter");
      assert.ok((filtered.items as StateRow[]).every((r) => r.state === "SYNCED"));
      assert.equal((filtered.summary as Obj).synced, filtered.total);
    });

    it("app-scoped items: the right path per type, the application must exist and be live, recycle-bin items are not delivered", async () => {
      const other = await createApp("Recycled App");
      const saved = await setApp(other, "app_variables", { variables: { motd: "hello", limit: 3 } });
      assert.equal(saved.scope, `app:${other}`);
      assert.equal(saved.app_id, other);
      ok(await admin("GET", `/applications/${other}/configs/app_variables`, undefined, operator), 200, "read app item");
      await setApp(other, "app_client_ca_bundle", { pem: PEM });

      const { id, client } = await newNode("recycle");
      const delivered = (nodeId: string) =>
        pull(client, nodeId).then((r) =>
          (r.configs as Obj[])
            .filter((i) => i.scope === `app:${other}`)
            .map((i) => i.type)
            .sort(),
        );
      assert.deepEqual(await delivered(id.nodeId), ["app_client_ca_bundle", "app_variables"]);

      ok(await admin("DELETE", `/applications/${other}`), 200, "to the recycle bin");
      assert.deepEqual(await delivered(id.nodeId), [], "items of a recycle-bin application are not delivered");
      assert.ok(!(await nodeStates(id.nodeId)).some((r) => r.scope === `app:${other}`), "nor listed per node");
      assert.ok(
        !(ok(await admin("GET", "/configs?page_size=200"), 200, "list").items as Obj[]).some((i) => i.scope === `app:${other}`),
        "nor in the item list",
      );
      ok(await admin("GET", `/applications/${other}/configs/app_variables`), 200, "history stays readable");

      const baseline = await snapshotDb(api.cp.ctx);
      expectError(
        await admin("PUT", `/applications/${other}/configs/app_variables`, { content: { variables: {} } }),
        409,
        "APPLICATION_DELETED",
        "PUT for a recycle-bin app",
      );
      assert.deepEqual(await snapshotDb(api.cp.ctx), baseline);

      ok(await admin("POST", `/applications/${other}/restore`), 200, "restore");
      assert.deepEqual(await delivered(id.nodeId), ["app_client_ca_bundle", "app_variables"], "delivered again after restore");

      ok(await admin("DELETE", `/applications/${other}`), 200, "to the recycle bin again");
      ok(await admin("POST", `/applications/${other}/purge`), 204, "purge");
      const left = await api.cp.ctx.controlDb.selectFrom("config_versions").select("id").where("scope", "=", `app:${other}`).execute();
      assert.deepEqual(left, [], "a purged application's config history goes with it");
      const states = await api.cp.ctx.controlDb
        .selectFrom("node_config_states")
        .select("node_id")
        .where("scope", "=", `app:${other}`)
        .execute();
      assert.deepEqual(states, [], "and so do per-node states");
    });

    it("cloud functions: manifest on every pull, download with sha256 ETag and version, 304 on a match, hint on change", async () => {
      const { id, client } = await newNode("functions");
      const actor = { agentId: null, username: null, ip: null, requestId: null };
      const script = "return { greeting = 'hello ' .. (params.name or 'world'), ['ü'] = true }";
      hints = [];
      const created = await createCloudFunction(api.cp.ctx, actor, { appId, name: "greet", script, timeoutMs: 500 });
      assert.equal(created.version, 1);
      assert.deepEqual(hints, [{ event: "config.pending", nodeId: null }]);
      const sha = createHash("sha256").update(script, "utf8").digest("hex");

      const manifest = (await pull(client, id.nodeId)).cloud_functions as Obj[];
      assert.deepEqual(
        manifest.find((f) => f.name === "greet"),
        { app_id: appId, name: "greet", version: 1, sha256: sha, timeout_ms: 500 },
      );

      const download = await client.request("GET", nodePaths.cloudFunction("greet", appId));
      assert.equal(download.status, 200, download.text);
      assert.equal(download.text, script);
      assert.equal(download.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.equal(download.headers.get("etag"), `"${sha}"`);
      assert.equal(download.headers.get("x-function-version"), "1");
      assert.equal(createHash("sha256").update(download.text, "utf8").digest("hex"), sha, "the body hashes to the manifest's sha256");
      const cached = await client.request("GET", nodePaths.cloudFunction("greet", appId), undefined, {
        headers: { "if-none-match": `"${sha}"` },
      });
      assert.equal(cached.status, 304);
      assert.equal(cached.text, "");

      assert.equal((await updateCloudFunction(api.cp.ctx, actor, appId, "greet", { script })).changed, false, "unchanged script: no-op");
      assert.equal(hints.length, 1);
      const updated = await updateCloudFunction(api.cp.ctx, actor, appId, "greet", { script: `${script}\n-- v2` });
      assert.equal(updated.version, 2);
      assert.equal(updated.timeout_ms, 500, "timeout kept when not given");
      assert.equal(hints.length, 2);
      const v2 = await client.request("GET", nodePaths.cloudFunction("greet", appId), undefined, {
        headers: { "if-none-match": `"${sha}"` },
      });
      assert.equal(v2.status, 200, "an old ETag gets the new body");
      assert.equal(v2.headers.get("x-function-version"), "2");

      expectError(await client.request("GET", nodePaths.cloudFunction("nope", appId)), 404, "NOT_FOUND", "unknown name");
      expectError(await client.request("GET", nodePaths.cloudFunction("greet", "app_missing")), 404, "NOT_FOUND", "unknown app");
      expectError(await client.request("GET", `/cp/v2/objects/cloud-functions/greet`), 400, "VALIDATION_FAILED", "app_id missing");
      expectError(
        await client.request("GET", `/cp/v2/objects/cloud-functions/greet?app_id=${encodeURIComponent("x' OR 1=1")}`),
        400,
        "VALIDATION_FAILED",
        "app_id malformed",
      );
      expectError(
        await client.request("GET", `/cp/v2/objects/cloud-functions/${encodeURIComponent("../etc")}?app_id=${appId}`),
        404,
        "NOT_FOUND",
        "name that cannot be one",
      );

      const doomed = await createApp("Doomed Functions");
      await createCloudFunction(api.cp.ctx, actor, { appId: doomed, name: "gone", script: "return 1" });
      ok(await admin("DELETE", `/applications/${doomed}`), 200, "delete app");
      assert.ok(
        !((await pull(client, id.nodeId)).cloud_functions as Obj[]).some((f) => f.app_id === doomed),
        "recycle-bin app's functions are not in the manifest",
      );
      expectError(await client.request("GET", nodePaths.cloudFunction("gone", doomed)), 404, "NOT_FOUND", "recycle-bin app's function");
      await assert.rejects(createCloudFunction(api.cp.ctx, actor, { appId: doomed, name: "again", script: "return 2" }), /recycle bin/);
      await assert.rejects(createCloudFunction(api.cp.ctx, actor, { appId, name: "bad name!", script: "return 2" }), /name/);
    });

    it("admin: bad input on every config endpoint → clear 4xx, nothing stored", async () => {
      const baseline = await snapshotDb(api.cp.ctx);
      const cases: Array<[string, () => Promise<CallResult>, number, string]> = [
        ["empty body {}", () => admin("PUT", "/configs/cp_agent_runtime", {}), 400, "VALIDATION_FAILED"],
        ["no body", () => call(app, "PUT", `${V1}/configs/cp_agent_runtime`, { token: root }), 400, "VALIDATION_FAILED"],
        [
          "malformed JSON",
          () =>
            call(app, "PUT", `${V1}/configs/cp_agent_runtime`, {
              token: root,
              rawBody: '{"content": {',
              headers: { "content-type": "application/json" },
            }),
          400,
          "MALFORMED_JSON",
        ],
        [
          "wrong content type",
          () =>
            call(app, "PUT", `${V1}/configs/cp_agent_runtime`, {
              token: root,
              rawBody: '{"content":{}}',
              headers: { "content-type": "text/plain" },
            }),
          415,
          "UNSUPPORTED_MEDIA_TYPE",
        ],
        ["unknown top-level field", () => admin("PUT", "/configs/cp_agent_runtime", { content: {}, version: 9 }), 400, "VALIDATION_FAILED"],
        ["content not an object", () => admin("PUT", "/configs/cp_agent_runtime", { content: "fast" }), 400, "VALIDATION_FAILED"],
        ["content array", () => admin("PUT", "/configs/cp_agent_runtime", { content: [1] }), 400, "VALIDATION_FAILED"],
        [
          "unknown content field",
          () => admin("PUT", "/configs/cp_agent_runtime", { content: { checkin_every: 5 } }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "wrong content type",
          () => admin("PUT", "/configs/cp_agent_runtime", { content: { checkin_interval_ms: "1000" } }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "out of range",
          () => admin("PUT", "/configs/cp_agent_runtime", { content: { checkin_interval_ms: 1 } }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "fraction",
          () => admin("PUT", "/configs/server_runtime_settings", { content: { max_connections: 1.5 } }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "bad PEM bundle",
          () => admin("PUT", `/applications/${appId}/configs/app_mtls_trust_bundle`, { content: { pem: "not a certificate" } }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "bad variable name",
          () => admin("PUT", `/applications/${appId}/configs/app_variables`, { content: { variables: { "bad name": 1 } } }),
          400,
          "VALIDATION_FAILED",
        ],
        ["unknown type (global path)", () => admin("PUT", "/configs/tls_everything", { content: {} }), 404, "NOT_FOUND"],
        ["unknown type (app path)", () => admin("PUT", `/applications/${appId}/configs/tls_everything`, { content: {} }), 404, "NOT_FOUND"],
        ["app type on the global path", () => admin("PUT", "/configs/app_policy", { content: {} }), 400, "VALIDATION_FAILED"],
        [
          "global type on an app path",
          () => admin("PUT", `/applications/${appId}/configs/server_runtime_settings`, { content: {} }),
          400,
          "VALIDATION_FAILED",
        ],
        ["unknown application", () => admin("PUT", "/applications/app_missing/configs/app_policy", { content: {} }), 404, "NOT_FOUND"],
        [
          "application id that cannot be one",
          () => admin("PUT", `/applications/${encodeURIComponent("x'--")}/configs/app_policy`, { content: {} }),
          404,
          "NOT_FOUND",
        ],
        [
          "operator may not write",
          () => admin("PUT", "/configs/cp_agent_runtime", { content: { checkin_interval_ms: 9000 } }, operator),
          403,
          "FORBIDDEN",
        ],
        ["no token", () => call(app, "PUT", `${V1}/configs/cp_agent_runtime`, { body: { content: {} } }), 401, "UNAUTHENTICATED"],
        ["GET unknown type", () => admin("GET", "/configs/nope"), 404, "NOT_FOUND"],
        ["GET app type globally", () => admin("GET", "/configs/app_policy/versions"), 400, "VALIDATION_FAILED"],
        ["GET unknown app", () => admin("GET", "/applications/app_missing/configs/app_policy"), 404, "NOT_FOUND"],
        ["list: bad type filter", () => admin("GET", "/configs?type=nope"), 400, "VALIDATION_FAILED"],
        ["list: bad app filter", () => admin("GET", `/configs?app_id=${encodeURIComponent("a b")}`), 400, "VALIDATION_FAILED"],
        ["list: bad page", () => admin("GET", "/configs?page=0"), 400, "VALIDATION_FAILED"],
        ["node view: unknown node", () => admin("GET", "/nodes/nod_missing/configs"), 404, "NOT_FOUND"],
        ["node view: bad state", () => admin("GET", `/nodes/nod_missing/configs?state=synced`), 400, "VALIDATION_FAILED"],
      ];
      for (const [label, run, status, code] of cases) expectError(await run(), status, code, label);
      assert.deepEqual(await snapshotDb(api.cp.ctx), baseline, "refused requests changed nothing");
    });

    it("node: bad input on pull, acks and errors → clear 4xx, nothing stored (whole batch refused)", async () => {
      const { id, client } = await newNode("bad-input");
      const nid = id.nodeId;
      const good = { type: "cp_agent_runtime", scope: "global", version: 1 };
      const badError = { type: "cp_agent_runtime", scope: "global", version: 1, applied_version: null, message: "boom" };
      const many = (n: number, item: Obj) => Array.from({ length: n }, () => item);
      const post = (path: string, body: unknown) => client.request("POST", path, body);
      const raw = (path: string, text: string, type = "application/json") =>
        client.request("POST", path, undefined, { rawBody: text, headers: { "content-type": type } });
      const P = nodePaths.configsPull(nid);
      const A = nodePaths.configsAcks(nid);
      const E = nodePaths.configsErrors(nid);
      const baseline = await snapshotDb(api.cp.ctx);
      const cases: Array<[string, () => Promise<NodeApiResponse>, number, string]> = [
        ["pull: malformed JSON", () => raw(P, '{"applied": ['), 400, "MALFORMED_JSON"],
        ["pull: text/plain", () => raw(P, '{"applied": []}', "text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE"],
        ["pull: missing applied", () => post(P, {}), 400, "VALIDATION_FAILED"],
        ["pull: unknown field", () => post(P, { applied: [], since: 3 }), 400, "VALIDATION_FAILED"],
        ["pull: applied not an array", () => post(P, { applied: "all" }), 400, "VALIDATION_FAILED"],
        ["pull: unknown type", () => post(P, { applied: [{ ...good, type: "nope" }] }), 400, "VALIDATION_FAILED"],
        ["pull: version 0", () => post(P, { applied: [{ ...good, version: 0 }] }), 400, "VALIDATION_FAILED"],
        ["pull: version string", () => post(P, { applied: [{ ...good, version: "1" }] }), 400, "VALIDATION_FAILED"],
        ["pull: malformed scope", () => post(P, { applied: [{ ...good, scope: "app:" }] }), 400, "VALIDATION_FAILED"],
        ["pull: app scope for a global type", () => post(P, { applied: [{ ...good, scope: `app:${appId}` }] }), 400, "VALIDATION_FAILED"],
        ["pull: duplicate item", () => post(P, { applied: [good, { ...good, version: 2 }] }), 400, "VALIDATION_FAILED"],
        ["pull: oversized batch", () => post(P, { applied: many(MAX_BATCH_ITEMS + 1, good) }), 400, "VALIDATION_FAILED"],
        ["acks: empty list", () => post(A, { acks: [] }), 400, "VALIDATION_FAILED"],
        ["acks: malformed JSON", () => raw(A, "acks"), 400, "MALFORMED_JSON"],
        ["acks: unknown field in item", () => post(A, { acks: [{ ...good, applied_at: 5 }] }), 400, "VALIDATION_FAILED"],
        ["acks: oversized batch", () => post(A, { acks: many(MAX_BATCH_ITEMS + 1, good) }), 400, "VALIDATION_FAILED"],
        ["acks: version newer than latest", () => post(A, { acks: [{ ...good, version: 999 }] }), 400, "VALIDATION_FAILED"],
        [
          "acks: item that has no version",
          () => post(A, { acks: [{ type: "app_policy", scope: "app:app_missing", version: 1 }] }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "acks: one bad among good ones",
          () => post(A, { acks: [good, { type: "server_runtime_settings", scope: "global", version: 9999 }] }),
          400,
          "VALIDATION_FAILED",
        ],
        ["acks: duplicate item", () => post(A, { acks: [good, good] }), 400, "VALIDATION_FAILED"],
        [
          "acks: scope of the wrong kind",
          () => post(A, { acks: [{ type: "app_policy", scope: "global", version: 1 }] }),
          400,
          "VALIDATION_FAILED",
        ],
        ["errors: empty list", () => post(E, { errors: [] }), 400, "VALIDATION_FAILED"],
        ["errors: missing message", () => post(E, { errors: [{ ...badError, message: undefined }] }), 400, "VALIDATION_FAILED"],
        ["errors: empty message", () => post(E, { errors: [{ ...badError, message: "" }] }), 400, "VALIDATION_FAILED"],
        ["errors: message too long", () => post(E, { errors: [{ ...badError, message: "m".repeat(2001) }] }), 400, "VALIDATION_FAILED"],
        [
          "errors: applied_version missing",
          () => post(E, { errors: [{ type: "cp_agent_runtime", scope: "global", version: 1, message: "x" }] }),
          400,
          "VALIDATION_FAILED",
        ],
        ["errors: version newer than latest", () => post(E, { errors: [{ ...badError, version: 999 }] }), 400, "VALIDATION_FAILED"],
        [
          "errors: applied_version newer than latest",
          () => post(E, { errors: [{ ...badError, applied_version: 999 }] }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "errors: one bad among good ones",
          () => post(E, { errors: [badError, { ...badError, type: "server_runtime_settings", version: 99_999 }] }),
          400,
          "VALIDATION_FAILED",
        ],
        ["errors: oversized batch", () => post(E, { errors: many(MAX_BATCH_ITEMS + 1, badError) }), 400, "VALIDATION_FAILED"],
        ["errors: wrong types", () => post(E, { errors: [{ ...badError, version: true }] }), 400, "VALIDATION_FAILED"],
      ];
      for (const [label, run, status, code] of cases) expectError(await run(), status, code, label);
      assert.deepEqual(await snapshotDb(api.cp.ctx), baseline, "refused node requests changed nothing");
      // The same good ack is accepted once the bad one is gone.
      assert.deepEqual(await ack(client, nid, [good]), { accepted: 1 });
    });
  });
}
