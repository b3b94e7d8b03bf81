/**
 * Commands end to end, on SQLite and PostgreSQL: admins queue them in process (`app.request()`),
 * nodes pull and report over real mTLS. The attack surface is delivery: a node must never see
 * another node's targeted command (nor report on it), never get a broadcast older than itself,
 * an expired command or one it already reported; `since` must be a plain integer no greater
 * than the head. Every refusal is a clear 4xx that stores nothing.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { queueCommand } from "../../src/cp/services/commands/admin.js";
import type { HintMessage } from "../../src/cp/services/event-bus.js";
import { MAX_COMMAND_OUTPUT_BYTES, MAX_COMMAND_PAGE, nodePaths } from "../../src/shared/node-protocol/index.js";
import { type AdminApp, buildAdminApp, type CallResult, call, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { ROOT_PASSWORD, ROOT_USERNAME } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import type { NodeApiClient, NodeApiResponse, NodeIdentity, TestNodeApi } from "../helpers/node-api.js";
import { startTestNodeApi } from "../helpers/node-api.js";

type Obj = Record<string, unknown>;
const V1 = "/admin/v1";
const OPERATOR_PASSWORD = "Operator-Passw0rd-Commands";
const SECOND = 1000;

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

interface Pulled {
  commands: Array<{ id: string; seq: number; kind: string; payload: Obj; created_at: number; expires_at: number | null }>;
  next_since: number;
  has_more: boolean;
}

interface TestNode {
  id: NodeIdentity;
  client: NodeApiClient;
}

for (const variant of dbVariants()) {
  describe(`commands on ${variant.name}`, { skip: variant.skip }, () => {
    let api: TestNodeApi;
    let app: AdminApp;
    let root = "";
    let operator = "";
    let alpha: TestNode;
    let beta: TestNode;
    let hints: HintMessage[] = [];

    const admin = (method: string, path: string, body?: unknown, token = root) =>
      call(app, method, `${V1}${path}`, { token, ...(body !== undefined ? { body } : {}) });
    const send = async (nodeId: string | null, body: Obj) =>
      ok(await admin("POST", nodeId === null ? "/commands" : `/nodes/${nodeId}/commands`, body), 201, `send ${String(body.kind)}`);
    const newNode = async (name: string, status?: string): Promise<TestNode> => {
      const id = await api.mintNode({ name, ...(status ? { status } : {}) });
      return { id, client: api.client(id) };
    };
    const pull = async (node: TestNode, since = 0): Promise<Pulled> =>
      ok(await node.client.request("POST", nodePaths.commandsPull(node.id.nodeId, since)), 200, `pull since ${since}`) as unknown as Pulled;
    const pulledIds = async (node: TestNode, since = 0) => (await pull(node, since)).commands.map((c) => c.id);
    const report = (node: TestNode, commandId: string, body: Obj) =>
      node.client.request("POST", nodePaths.commandResult(node.id.nodeId, commandId), body);
    const head = async () =>
      Number(
        (
          await api.cp.ctx.controlDb
            .selectFrom("commands")
            .select((eb) => eb.fn.max("seq").as("h"))
            .executeTakeFirst()
        )?.h ?? 0,
      );

    before(async () => {
      api = await startTestNodeApi(variant, "commands");
      app = (await buildAdminApp(api.cp)).app;
      root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      ok(
        await admin("POST", "/agents", { username: "cmd-operator", password: OPERATOR_PASSWORD, role: "operator" }),
        201,
        "create operator",
      );
      operator = (await loginAs(app, "cmd-operator", OPERATOR_PASSWORD)).access_token;
      alpha = await newNode("alpha");
      beta = await newNode("beta");
      api.cp.ctx.events.onHint((m) => hints.push(m));
    });
    after(async () => {
      await api.close();
      await variant.cleanup();
    });

    it("a targeted command reaches only its node (hinted to that node); a broadcast reaches every node (hinted to all)", async () => {
      hints = [];
      api.cp.clock.advance(SECOND);
      const targeted = await send(alpha.id.nodeId, { kind: "force_logout", payload: { user_id: "usr_1", reason: "password reset" } });
      assert.equal(targeted.target_node_id, alpha.id.nodeId);
      assert.equal(targeted.expires_at, (targeted.created_at as number) + 24 * 3600 * SECOND, "default TTL 24 h");
      assert.deepEqual(hints, [{ event: "command.pending", nodeId: alpha.id.nodeId }]);
      const audit = await api.cp.ctx.controlDb
        .selectFrom("agent_audit_logs")
        .selectAll()
        .where("action", "=", "command.create")
        .where("target_id", "=", String(targeted.id))
        .executeTakeFirst();
      assert.equal(audit?.result, "success", "command.create audited with the command id");
      assert.equal(audit?.target_type, "command");
      const broadcast = await send(null, { kind: "announcement", payload: { message: "maintenance at 02:00" }, ttl_seconds: 3600 });
      assert.equal(broadcast.target_node_id, null);
      assert.deepEqual((broadcast.payload as Obj).level, "info", "payload defaults applied");
      assert.deepEqual(hints.at(-1), { event: "command.pending", nodeId: null });

      const alphaPull = await pull(alpha);
      assert.deepEqual(
        alphaPull.commands.map((c) => c.id),
        [targeted.id, broadcast.id],
        "ordered by seq",
      );
      assert.deepEqual(alphaPull.commands[0]?.payload, { user_id: "usr_1", reason: "password reset" });
      assert.equal(alphaPull.has_more, false);
      assert.equal(alphaPull.next_since, await head());
      assert.deepEqual(await pulledIds(beta), [broadcast.id], "beta never sees alpha's targeted command");
      assert.deepEqual(await pulledIds(alpha, alphaPull.next_since), [], "nothing after the cursor");
    });

    it("a broadcast created before the node is never delivered to it; later ones are", async () => {
      api.cp.clock.advance(SECOND);
      const older = await send(null, { kind: "reload_configs" });
      api.cp.clock.advance(SECOND);
      const gamma = await newNode("gamma");
      const newer = await send(null, { kind: "reload_configs" });
      const ids = await pulledIds(gamma);
      assert.ok(!ids.includes(String(older.id)), "broadcast older than the node not delivered");
      assert.ok(ids.includes(String(newer.id)), "broadcast created after the node delivered");
      expectError(
        await report(gamma, String(older.id), { status: "succeeded" }),
        404,
        "NOT_FOUND",
        "result for a broadcast older than the node",
      );

      const detail = ok(await admin("GET", `/commands/${older.id}`, undefined, operator), 200, "detail");
      const nodesListed = (detail.results as Obj[]).map((r) => r.node_id);
      assert.ok(nodesListed.includes(alpha.id.nodeId) && nodesListed.includes(beta.id.nodeId));
      assert.ok(!nodesListed.includes(gamma.id.nodeId), "the per-node view lists only nodes eligible for the broadcast");
    });

    it("an expired command is not delivered, and shows as expired per node", async () => {
      api.cp.clock.advance(SECOND);
      const shortLived = await send(beta.id.nodeId, { kind: "kill_process", payload: { app_id: "app_x" }, ttl_seconds: 60 });
      assert.ok((await pulledIds(beta)).includes(String(shortLived.id)));
      api.cp.clock.advance(61 * SECOND);
      assert.ok(!(await pulledIds(beta)).includes(String(shortLived.id)), "expired: no longer delivered");
      const detail = ok(await admin("GET", `/commands/${shortLived.id}`), 200, "detail");
      assert.deepEqual(
        (detail.results as Obj[]).map((r) => [r.node_id, r.status]),
        [[beta.id.nodeId, "expired"]],
      );
      // A node that pulled it in time may still report; the result is taken.
      ok(await report(beta, String(shortLived.id), { status: "succeeded" }), 200, "late result");
      assert.equal(((ok(await admin("GET", `/commands/${shortLived.id}`), 200, "detail").results as Obj[])[0] as Obj).status, "succeeded");
    });

    it("a reported command is not delivered again; a repeated report overwrites; results are visible per node; logged", async () => {
      api.cp.clock.advance(SECOND);
      const cmd = await send(null, { kind: "announcement", payload: { message: "hello", level: "warning" } });
      const id = String(cmd.id);
      assert.ok((await pulledIds(alpha)).includes(id));
      assert.deepEqual(ok(await report(alpha, id, { status: "failed", output: { error: "no clients" } }), 200, "report"), { accepted: 1 });
      assert.ok(!(await pulledIds(alpha)).includes(id), "not re-delivered after a result, even from since=0");
      assert.ok((await pulledIds(beta)).includes(id), "beta still gets it");

      api.cp.clock.advance(SECOND);
      ok(await report(alpha, id, { status: "succeeded", output: { delivered_to: 3 } }), 200, "second report");
      const detail = ok(await admin("GET", `/commands/${id}`, undefined, operator), 200, "detail");
      const byNode = new Map((detail.results as Obj[]).map((r) => [r.node_id, r]));
      assert.deepEqual(
        byNode.get(alpha.id.nodeId),
        { node_id: alpha.id.nodeId, node_name: "alpha", status: "succeeded", output: { delivered_to: 3 }, reported_at: api.cp.clock.now() },
        "the repeated report overwrote the first",
      );
      assert.equal((byNode.get(beta.id.nodeId) as Obj).status, "pending");
      assert.equal((detail.summary as Obj).succeeded, 1);
      assert.equal((detail.summary as Obj).pending, (detail.results as Obj[]).length - 1);
      const rows = await api.cp.ctx.controlDb
        .selectFrom("command_results")
        .selectAll()
        .where("command_seq", "=", cmd.seq as number)
        .execute();
      assert.equal(rows.length, 1, "one row per node and command");
      assert.ok(
        api.cp.logLines.some((l) => {
          const e = JSON.parse(l) as Obj;
          return (
            e.category === "CP Agent" &&
            e.msg === "command.result" &&
            e.node_id === alpha.id.nodeId &&
            e.command_id === id &&
            e.status === "succeeded"
          );
        }),
        "[CP Agent] command.result logged",
      );

      const list = ok(await admin("GET", `/commands?kind=announcement&node_id=${alpha.id.nodeId}`, undefined, operator), 200, "list");
      const listed = list.items as Obj[];
      assert.equal(listed[0]?.id, id, "newest first");
      assert.deepEqual(listed[0]?.results, { succeeded: 1, failed: 0, rejected: 0 });
      assert.ok(listed.every((c) => c.kind === "announcement"));
      const betaOnly = (ok(await admin("GET", `/commands?node_id=${beta.id.nodeId}&page_size=200`), 200, "beta list").items as Obj[]).map(
        (c) => c.target_node_id,
      );
      assert.ok(
        betaOnly.every((t) => t === null || t === beta.id.nodeId),
        "a node's list: its targeted commands and broadcasts",
      );
      const seqs = (ok(await admin("GET", "/commands?page_size=200"), 200, "all").items as Obj[]).map((c) => c.seq as number);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => b - a),
        "newest first",
      );
    });

    it("another node's targeted command: invisible on pull, 404 on result (same as unknown), nothing stored", async () => {
      const forAlpha = await send(alpha.id.nodeId, { kind: "reload_configs" });
      const baseline = await snapshotDb(api.cp.ctx);
      expectError(await report(beta, String(forAlpha.id), { status: "succeeded" }), 404, "NOT_FOUND", "beta reports alpha's command");
      expectError(await report(beta, "cmd_doesnotexist00000000", { status: "succeeded" }), 404, "NOT_FOUND", "unknown command");
      expectError(
        await report(beta, encodeURIComponent("cmd' OR '1'='1"), { status: "succeeded" }),
        404,
        "NOT_FOUND",
        "id that cannot be one",
      );
      assert.deepEqual(await snapshotDb(api.cp.ctx), baseline);
      assert.ok(!(await pulledIds(beta)).includes(String(forAlpha.id)));
    });

    it("disabled and provisioning nodes still accept commands; an unknown node does not", async () => {
      const disabled = await newNode("disabled-one", "disabled");
      const provisioning = await newNode("provisioning-one", "provisioning");
      for (const node of [disabled, provisioning]) {
        const cmd = await send(node.id.nodeId, { kind: "reload_configs" });
        assert.ok((await pulledIds(node)).includes(String(cmd.id)), `${node.id.nodeId} pulls its command`);
      }
      const baseline = await snapshotDb(api.cp.ctx);
      expectError(await admin("POST", "/nodes/nod_missing/commands", { kind: "reload_configs" }), 404, "NOT_FOUND", "unknown node");
      assert.deepEqual(await snapshotDb(api.cp.ctx), baseline);
    });

    it("pull pages: at most MAX_COMMAND_PAGE, has_more and next_since walk the rest; a cursor skips what is not for the node", async () => {
      const delta = await newNode("delta");
      const actor = { agentId: null, username: null, ip: null, requestId: null };
      const total = MAX_COMMAND_PAGE + 5;
      for (let i = 0; i < total; i++)
        await queueCommand(api.cp.ctx, actor, delta.id.nodeId, { kind: "announcement", payload: { message: `m${i}` } });
      const first = await pull(delta);
      assert.equal(first.commands.length, MAX_COMMAND_PAGE);
      assert.equal(first.has_more, true);
      assert.equal(first.next_since, first.commands.at(-1)?.seq);
      const second = await pull(delta, first.next_since);
      assert.equal(second.commands.length, 5);
      assert.equal(second.has_more, false);
      assert.equal(second.next_since, await head());
      const all = [...first.commands, ...second.commands].map((c) => c.seq);
      assert.equal(new Set(all).size, total);
      assert.deepEqual(
        all,
        [...all].sort((a, b) => a - b),
      );

      // None of those were for alpha: its cursor moves straight to the head.
      const alphaView = await pull(alpha, first.next_since);
      assert.equal(alphaView.commands.length, 0);
      assert.equal(alphaView.next_since, await head());
    });

    it("node: bad `since` and bad result bodies → 400/413, nothing stored", async () => {
      const cmd = await send(alpha.id.nodeId, { kind: "reload_configs" });
      const h = await head();
      const pullPath = (q: string) => `/cp/v2/nodes/${alpha.id.nodeId}/commands/pull${q}`;
      const resultPath = nodePaths.commandResult(alpha.id.nodeId, String(cmd.id));
      const raw = (path: string, text: string, type = "application/json") =>
        alpha.client.request("POST", path, undefined, { rawBody: text, headers: { "content-type": type } });
      const baseline = await snapshotDb(api.cp.ctx);
      const cases: Array<[string, () => Promise<NodeApiResponse>, number, string]> = [
        ...["-1", "1.5", "abc", "1e30", String(h + 1), "99999999999999999999", "", "+1", " 1", "0x10", "1,2"].map(
          (since): [string, () => Promise<NodeApiResponse>, number, string] => [
            `since=${JSON.stringify(since)}`,
            () => alpha.client.request("POST", pullPath(`?since=${encodeURIComponent(since)}`)),
            400,
            "VALIDATION_FAILED",
          ],
        ),
        ["since missing", () => alpha.client.request("POST", pullPath("")), 400, "VALIDATION_FAILED"],
        ["pull with unknown body field", () => alpha.client.request("POST", pullPath("?since=0"), { since: 0 }), 400, "VALIDATION_FAILED"],
        ["pull with malformed JSON", () => raw(pullPath("?since=0"), "{"), 400, "MALFORMED_JSON"],
        ["result: malformed JSON", () => raw(resultPath, '{"status":'), 400, "MALFORMED_JSON"],
        ["result: text/plain", () => raw(resultPath, '{"status":"succeeded"}', "text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE"],
        ["result: empty body", () => alpha.client.request("POST", resultPath), 400, "VALIDATION_FAILED"],
        ["result: unknown status", () => alpha.client.request("POST", resultPath, { status: "done" }), 400, "VALIDATION_FAILED"],
        ["result: wrong type", () => alpha.client.request("POST", resultPath, { status: 1 }), 400, "VALIDATION_FAILED"],
        [
          "result: unknown field",
          () => alpha.client.request("POST", resultPath, { status: "succeeded", seq: 4 }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "result: output too large",
          () => alpha.client.request("POST", resultPath, { status: "succeeded", output: "x".repeat(MAX_COMMAND_OUTPUT_BYTES) }),
          413,
          "BODY_TOO_LARGE",
        ],
        [
          // Once a 500 (the size check's JSON.stringify overflowed the stack); now refused while parsing.
          "result: output nested 5,000 deep",
          () => raw(resultPath, `{"status":"succeeded","output":${"[".repeat(5000)}${"]".repeat(5000)}}`),
          400,
          "JSON_TOO_DEEP",
        ],
        [
          "result: output nested 65 deep (one past the cap)",
          () => raw(resultPath, `{"status":"succeeded","output":${'{"a":'.repeat(64)}1${"}".repeat(64)}}`),
          400,
          "JSON_TOO_DEEP",
        ],
        [
          "result: unknown command",
          () => alpha.client.request("POST", nodePaths.commandResult(alpha.id.nodeId, "cmd_unknown"), { status: "succeeded" }),
          404,
          "NOT_FOUND",
        ],
      ];
      for (const [label, run, status, code] of cases) expectError(await run(), status, code, label);
      assert.deepEqual(await snapshotDb(api.cp.ctx), baseline, "refused node requests changed nothing");
      const atHead = await pull(alpha, h);
      assert.equal(atHead.next_since, h, "since = head is valid");
      ok(
        await report(alpha, String(cmd.id), { status: "succeeded", output: "y".repeat(MAX_COMMAND_OUTPUT_BYTES - 2) }),
        200,
        "output exactly at the limit",
      );
      // 63 levels inside the body's own object: 64 in all, exactly the cap, is taken.
      const deepest = JSON.parse(`${'{"a":'.repeat(63)}1${"}".repeat(63)}`) as unknown;
      ok(await report(alpha, String(cmd.id), { status: "succeeded", output: deepest }), 200, "output at the nesting cap");
    });

    it("admin: bad input on every command endpoint → clear 4xx, nothing stored", async () => {
      const nid = alpha.id.nodeId;
      const baseline = await snapshotDb(api.cp.ctx);
      hints = [];
      const cases: Array<[string, () => Promise<CallResult>, number, string]> = [
        ["empty body {} (one node)", () => admin("POST", `/nodes/${nid}/commands`, {}), 400, "VALIDATION_FAILED"],
        ["empty body {} (broadcast)", () => admin("POST", "/commands", {}), 400, "VALIDATION_FAILED"],
        [
          "malformed JSON",
          () => call(app, "POST", `${V1}/commands`, { token: root, rawBody: '{"kind":', headers: { "content-type": "application/json" } }),
          400,
          "MALFORMED_JSON",
        ],
        ["unknown kind", () => admin("POST", "/commands", { kind: "format_disk" }), 400, "VALIDATION_FAILED"],
        ["unknown top-level field", () => admin("POST", "/commands", { kind: "reload_configs", target: "all" }), 400, "VALIDATION_FAILED"],
        ["payload not an object", () => admin("POST", "/commands", { kind: "announcement", payload: "hi" }), 400, "VALIDATION_FAILED"],
        [
          "payload missing required field",
          () => admin("POST", `/nodes/${nid}/commands`, { kind: "force_logout", payload: {} }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "payload unknown field",
          () => admin("POST", "/commands", { kind: "reload_configs", payload: { now: true } }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "payload wrong type",
          () => admin("POST", "/commands", { kind: "announcement", payload: { message: 42 } }),
          400,
          "VALIDATION_FAILED",
        ],
        [
          "payload bad level",
          () => admin("POST", "/commands", { kind: "announcement", payload: { message: "x", level: "panic" } }),
          400,
          "VALIDATION_FAILED",
        ],
        ["ttl 0", () => admin("POST", "/commands", { kind: "reload_configs", ttl_seconds: 0 }), 400, "VALIDATION_FAILED"],
        ["ttl fractional", () => admin("POST", "/commands", { kind: "reload_configs", ttl_seconds: 1.5 }), 400, "VALIDATION_FAILED"],
        ["ttl huge", () => admin("POST", "/commands", { kind: "reload_configs", ttl_seconds: 1e12 }), 400, "VALIDATION_FAILED"],
        ["ttl string", () => admin("POST", "/commands", { kind: "reload_configs", ttl_seconds: "60" }), 400, "VALIDATION_FAILED"],
        [
          "node id that cannot be one",
          () => admin("POST", `/nodes/${encodeURIComponent("n' OR 1=1")}/commands`, { kind: "reload_configs" }),
          404,
          "NOT_FOUND",
        ],
        ["operator may not send", () => admin("POST", "/commands", { kind: "reload_configs" }, operator), 403, "FORBIDDEN"],
        ["no token", () => call(app, "POST", `${V1}/commands`, { body: { kind: "reload_configs" } }), 401, "UNAUTHENTICATED"],
        ["unknown command", () => admin("GET", "/commands/cmd_missing"), 404, "NOT_FOUND"],
        ["list: bad kind", () => admin("GET", "/commands?kind=nope"), 400, "VALIDATION_FAILED"],
        ["list: bad node id", () => admin("GET", `/commands?node_id=${encodeURIComponent("a b")}`), 400, "VALIDATION_FAILED"],
        ["list: bad page size", () => admin("GET", "/commands?page_size=100000"), 400, "VALIDATION_FAILED"],
      ];
      for (const [label, run, status, code] of cases) expectError(await run(), status, code, label);
      assert.deepEqual(await snapshotDb(api.cp.ctx), baseline, "refused requests changed nothing");
      assert.deepEqual(hints, [], "no hint for a refused command");
      const json = expectError(
        await admin("POST", `/nodes/${nid}/commands`, { kind: "force_logout", payload: { reason: "x" } }),
        400,
        "VALIDATION_FAILED",
        "field named",
      );
      assert.match(String(json.message), /payload: name a user_id, session_id, card_key_id or device_id/);
    });
  });
}
