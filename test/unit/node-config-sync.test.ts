/**
 * Channel 1 configs on the node, against a scripted CP: valid items are applied and acked in
 * one batch, invalid ones reported in one batch with the version still in force (which stays
 * in force), acks and reports that fail to reach the CP are sent again, a rejected version is
 * not re-reported, and cloud function bodies are kept only when they hash to the manifest and
 * compile (a refused body is reported once, with the previous version kept).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { before, describe, test } from "node:test";
import { ConfigSync, validateConfigItem } from "../../src/node/agent/config-sync.js";
import { CpCallError } from "../../src/node/agent/cp-call-error.js";
import { AppliedConfigStore } from "../../src/node/state/config-store.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import type {
  ApplicationManifest,
  CloudFunctionManifest,
  ConfigError,
  ConfigItem,
  ConfigsPullRequest,
  ConfigVersionRef,
} from "../../src/shared/node-protocol/index.js";
import { ManualClock } from "../../src/shared/time/index.js";
import { mintNodePki, type NodePki } from "../helpers/node-agent.js";

let pki: NodePki;
before(async () => {
  pki = await mintNodePki("nod_cfg", new ManualClock(Date.now()));
});

/** A CP that serves `configs` newer than what the node reports, and records acks and errors. */
function fakeCp() {
  const cp = {
    configs: [] as ConfigItem[],
    functions: [] as CloudFunctionManifest[],
    applications: [] as ApplicationManifest[],
    bodies: new Map<string, Buffer>(),
    pulls: [] as ConfigsPullRequest[],
    acks: [] as ConfigVersionRef[][],
    errors: [] as ConfigError[][],
    failAcks: 0,
    failErrors: 0,
    client: {
      pullConfigs: async (body: ConfigsPullRequest) => {
        cp.pulls.push(body);
        const applied = new Map(body.applied.map((r) => [`${r.type} ${r.scope}`, r.version]));
        return {
          configs: cp.configs.filter((c) => c.version > (applied.get(`${c.type} ${c.scope}`) ?? 0)),
          cloud_functions: cp.functions,
          applications: cp.applications,
        };
      },
      ackConfigs: async (body: { acks: ConfigVersionRef[] }) => {
        if (cp.failAcks-- > 0) throw new CpCallError("network", "connect ECONNREFUSED");
        cp.acks.push(body.acks);
        return body.acks.length;
      },
      reportConfigErrors: async (body: { errors: ConfigError[] }) => {
        if (cp.failErrors-- > 0) throw new CpCallError("timeout", "request timed out");
        cp.errors.push(body.errors);
        return body.errors.length;
      },
      fetchCloudFunction: async (name: string, appId: string) => {
        const body = cp.bodies.get(`${appId}/${name}`);
        if (!body) throw new CpCallError("http", "HTTP 404 NOT_FOUND", { status: 404 });
        return body;
      },
    },
  };
  return cp;
}

function setup() {
  const cp = fakeCp();
  const store = new AppliedConfigStore();
  const memory = createMemoryLogger("CP Agent");
  const sync = new ConfigSync({ client: cp.client, store, clock: new ManualClock(1000), log: memory.logger });
  return { cp, store, sync, events: memory.events };
}

describe("validateConfigItem", () => {
  test("checks scope against type, content against the schema, and PEM bundles certificate by certificate", () => {
    assert.equal(validateConfigItem({ type: "app_policy", scope: "global", version: 1, content: {} }).ok, false);
    assert.equal(validateConfigItem({ type: "cp_agent_runtime", scope: "app:x", version: 1, content: {} }).ok, false);
    const bad = validateConfigItem({ type: "cp_agent_runtime", scope: "global", version: 1, content: { epoch_poll_ms: 1 } });
    assert.equal(bad.ok, false);
    assert.match(!bad.ok ? bad.reason : "", /epoch_poll_ms/);
    const ok = validateConfigItem({ type: "cp_agent_runtime", scope: "global", version: 1, content: { epoch_poll_ms: 100 } });
    assert.equal(ok.ok && (ok.content as { epoch_poll_ms: number }).epoch_poll_ms, 100);
    assert.equal(
      validateConfigItem({ type: "app_client_ca_bundle", scope: "app:x", version: 1, content: { pem: pki.cas.app_client_ca.certPem } }).ok,
      true,
    );
    const leaf = validateConfigItem({
      type: "app_mtls_trust_bundle",
      scope: "app:x",
      version: 1,
      content: { pem: pki.cas.app_client_ca.certPem + pki.client.certPem },
    });
    assert.match(!leaf.ok ? leaf.reason : "", /certificate #2 is not a CA certificate/);
    const garbage = validateConfigItem({
      type: "app_client_ca_bundle",
      scope: "app:x",
      version: 1,
      content: { pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----" },
    });
    assert.equal(garbage.ok, false);
  });
});

describe("ConfigSync", () => {
  test("applies valid items, acks them in one batch, reports invalid ones in one batch; the previous version stays", async () => {
    const { cp, store, sync } = setup();
    cp.configs = [
      { type: "app_policy", scope: "app:a", version: 1, content: { max_devices_per_user: 5 } },
      { type: "app_variables", scope: "app:a", version: 1, content: { variables: { motd: "hi" } } },
      { type: "server_runtime_settings", scope: "global", version: 1, content: { max_connections: 10 } },
    ];
    const first = await sync.run();
    assert.equal(first.applied.length, 3);
    assert.deepEqual(
      cp.acks.map((b) => b.length),
      [3],
    );
    assert.equal(store.get("app_policy", "app:a")?.content.max_devices_per_user, 5);
    assert.equal(store.serverRuntimeSettings().max_connections, 10);

    cp.configs = [
      { type: "app_policy", scope: "app:a", version: 2, content: { max_devices_per_user: "many" } },
      { type: "app_variables", scope: "app:a", version: 2, content: { variables: { motd: "hello" } } },
      { type: "app_client_ca_bundle", scope: "app:b", version: 1, content: { pem: pki.client.certPem } },
    ];
    const second = await sync.run();
    assert.deepEqual(second.applied, [{ type: "app_variables", scope: "app:a", version: 2 }]);
    assert.deepEqual(cp.errors.at(-1), [
      { type: "app_policy", scope: "app:a", version: 2, applied_version: 1, message: second.rejected[0]?.message },
      { type: "app_client_ca_bundle", scope: "app:b", version: 1, applied_version: null, message: second.rejected[1]?.message },
    ]);
    assert.match(second.rejected[0]?.message ?? "", /max_devices_per_user/);
    assert.equal(store.version("app_policy", "app:a"), 1, "the previous version stays in force");
    assert.equal(store.get("app_policy", "app:a")?.content.max_devices_per_user, 5);
    assert.equal(store.get("app_client_ca_bundle", "app:b"), undefined);
    assert.deepEqual(
      cp.pulls.at(-1)?.applied,
      [
        { type: "app_policy", scope: "app:a", version: 1 },
        { type: "app_variables", scope: "app:a", version: 1 },
        { type: "server_runtime_settings", scope: "global", version: 1 },
      ],
      "the pull carried the applied snapshot",
    );
  });

  test("a rejected version is reported once, not on every pull", async () => {
    const { cp, sync } = setup();
    cp.configs = [{ type: "app_policy", scope: "app:a", version: 1, content: { nope: true } }];
    await sync.run();
    await sync.run();
    await sync.run();
    assert.equal(cp.errors.length, 1);
  });

  test("acks and error reports that fail are kept and sent on the next run", async () => {
    const { cp, sync, store } = setup();
    cp.configs = [
      { type: "app_policy", scope: "app:a", version: 1, content: {} },
      { type: "app_policy", scope: "app:b", version: 1, content: { bad: 1 } },
    ];
    cp.failAcks = 1;
    await assert.rejects(sync.run(), /ECONNREFUSED/);
    assert.equal(store.version("app_policy", "app:a"), 1, "applied even though the ack failed");
    assert.equal(cp.acks.length, 0);
    cp.failErrors = 1;
    await assert.rejects(sync.run(), /timed out/);
    await sync.run();
    assert.deepEqual(cp.acks.flat(), [{ type: "app_policy", scope: "app:a", version: 1 }]);
    assert.deepEqual(
      cp.errors.flat().map((e) => `${e.scope}#${e.version}`),
      ["app:b#1"],
    );
  });

  test("an item the node already runs is acked again (its ack was lost); an older one is ignored", async () => {
    const { cp, sync, store } = setup();
    store.apply({ type: "app_policy", scope: "app:a", version: 3, content: {} as never, appliedAt: 0 });
    const pullConfigs = cp.client.pullConfigs;
    cp.client.pullConfigs = async (body) => ({
      ...(await pullConfigs(body)),
      configs: [
        { type: "app_policy", scope: "app:a", version: 3, content: {} },
        { type: "app_policy", scope: "app:a", version: 2, content: {} },
      ],
    });
    const result = await sync.run();
    assert.deepEqual(result.applied, []);
    assert.deepEqual(cp.acks.flat(), [{ type: "app_policy", scope: "app:a", version: 3 }]);
    assert.equal(store.version("app_policy", "app:a"), 3);
  });

  test("cloud functions: fetched when the SHA-256 changes, kept only when the body matches it", async () => {
    const { cp, sync, store, events } = setup();
    const body = (text: string) => Buffer.from(text);
    const manifest = (name: string, text: string, version = 1): CloudFunctionManifest => ({
      app_id: "app1",
      name,
      version,
      sha256: createHash("sha256").update(text).digest("hex"),
      timeout_ms: 1000,
    });
    cp.functions = [manifest("hello", "return 1"), manifest("evil", "return 2")];
    cp.bodies.set("app1/hello", body("return 1"));
    cp.bodies.set("app1/evil", body("return 666"));
    await assert.rejects(sync.run(), /1 cloud function bodies could not be fetched/);
    assert.equal(store.cloudFunction("app1", "hello")?.body.toString(), "return 1");
    assert.equal(store.cloudFunction("app1", "evil"), undefined, "a body that does not hash to the manifest is never kept");
    assert.ok(events().some((e) => e.msg === "cloud_function.fetch_failed" && /hashes to/.test(String(e.error))));

    let fetches = 0;
    const fetch = cp.client.fetchCloudFunction;
    cp.client.fetchCloudFunction = async (name, appId) => {
      fetches += 1;
      return fetch(name, appId);
    };
    cp.bodies.set("app1/evil", body("return 2"));
    cp.functions = [manifest("hello", "return 1"), manifest("evil", "return 2"), manifest("new", "return 3")];
    cp.bodies.set("app1/new", body("return 3"));
    await sync.run();
    assert.equal(fetches, 2, "the unchanged function was not fetched again");
    assert.equal(store.cloudFunctionCount, 3);

    cp.functions = [manifest("hello", "return 1.1", 2)];
    cp.bodies.delete("app1/hello");
    await assert.rejects(sync.run());
    assert.equal(
      store.cloudFunction("app1", "hello")?.body.toString(),
      "return 1",
      "the previous version stays until the new body arrives",
    );
    assert.equal(store.cloudFunctionCount, 1, "functions dropped from the manifest are gone");
  });

  test("a cloud function body that does not compile: previous version kept, reported once, cleared by a good one", async () => {
    const { cp, sync, store, events } = setup();
    const manifest = (text: string, version: number): CloudFunctionManifest => ({
      app_id: "app1",
      name: "calc",
      version,
      sha256: createHash("sha256").update(text).digest("hex"),
      timeout_ms: 1000,
    });
    let fetches = 0;
    const serve = (text: string, version: number) => {
      cp.functions = [manifest(text, version)];
      cp.client.fetchCloudFunction = async () => {
        fetches += 1;
        return Buffer.from(text);
      };
    };
    serve("return 1", 1);
    assert.deepEqual((await sync.run()).cloudFunctions, { fetched: 1, failed: 0, rejected: 0 });

    serve("return (", 2);
    assert.deepEqual((await sync.run()).cloudFunctions, { fetched: 0, failed: 0, rejected: 1 }, "refused, and not a retryable failure");
    assert.equal(store.cloudFunction("app1", "calc")?.manifest.version, 1);
    assert.equal(store.cloudFunction("app1", "calc")?.body.toString(), "return 1");
    assert.deepEqual(cp.errors, [
      [
        {
          type: "cloud_function",
          scope: "app:app1",
          name: "calc",
          version: 2,
          applied_version: 1,
          message: "line 1: unexpected symbol near <eof>",
        },
      ],
    ]);
    const warning = events().find((e) => e.msg === "cloud_function.rejected");
    assert.equal(warning?.line, 1);
    assert.equal(warning?.applied_version, 1);
    assert.equal(sync.rejectedCloudFunctions, 1);
    assert.equal(sync.holdsRejections, false, "a refused body says nothing about config items pending");

    const fetchesBefore = fetches;
    assert.deepEqual((await sync.run()).cloudFunctions, { fetched: 0, failed: 0, rejected: 1 });
    assert.equal(fetches, fetchesBefore, "the refused body is not fetched again while the manifest names it");
    assert.equal(cp.errors.length, 1, "nor reported again");

    serve("return 3", 3);
    assert.deepEqual((await sync.run()).cloudFunctions, { fetched: 1, failed: 0, rejected: 0 });
    assert.equal(store.cloudFunction("app1", "calc")?.body.toString(), "return 3");
    assert.equal(sync.rejectedCloudFunctions, 0);

    serve("end", 4);
    cp.failErrors = 1;
    await assert.rejects(sync.run(), /timed out/);
    assert.equal(store.cloudFunction("app1", "calc")?.manifest.version, 3);
    await sync.run();
    assert.deepEqual(
      cp.errors.map((batch) => batch.map((e) => e.version)),
      [[2], [4]],
      "a report that did not reach the CP is sent on the next run",
    );
    cp.functions = [];
    await sync.run();
    assert.equal(sync.rejectedCloudFunctions, 0, "a function gone from the manifest is forgotten");
    assert.equal(store.cloudFunctionCount, 0);
  });

  test("concurrent runs (loop + reload command) queue instead of racing", async () => {
    const { cp, sync } = setup();
    cp.configs = [{ type: "app_policy", scope: "app:a", version: 1, content: {} }];
    await Promise.all([sync.run(), sync.run(), sync.run()]);
    assert.equal(cp.acks.flat().length, 1, "applied and acked once");
    assert.deepEqual(
      cp.pulls.map((p) => p.applied.length),
      [0, 1, 1],
    );
  });
});
