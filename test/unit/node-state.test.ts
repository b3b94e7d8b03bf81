/**
 * The node's in-memory state: the blacklist cache (several entries per value, expiry, idempotent
 * removal), the auth-epoch cache (maximum wins, any order), and the applied-config store
 * (typed items, version snapshot, cp_agent_runtime defaults, cloud functions swapped at once).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BlacklistCache, type BlacklistEntry } from "../../src/node/state/blacklist-cache.js";
import { AppliedConfigStore } from "../../src/node/state/config-store.js";
import { AuthEpochCache } from "../../src/node/state/epoch-cache.js";
import { cpAgentRuntimeSchema, DEFAULT_CP_AGENT_RUNTIME } from "../../src/shared/node-protocol/index.js";

const entry = (entryId: string, value: string, expiresAt: number | null = null, kind: BlacklistEntry["kind"] = "ip"): BlacklistEntry => ({
  entryId,
  kind,
  value,
  reason: "test",
  expiresAt,
  changeId: 1,
});

describe("BlacklistCache", () => {
  test("blocks a value while any live entry names it", () => {
    const cache = new BlacklistCache();
    cache.add(entry("a", "10.0.0.1"));
    cache.add(entry("b", "10.0.0.1", 5000));
    assert.equal(cache.isBlocked("ip", "10.0.0.1", 1000), true);
    cache.remove("a");
    assert.equal(cache.isBlocked("ip", "10.0.0.1", 1000), true, "b still blocks");
    assert.equal(cache.isBlocked("ip", "10.0.0.1", 5000), false, "b expired at 5000");
    cache.remove("b");
    assert.equal(cache.size, 0);
  });

  test("kinds are separate namespaces", () => {
    const cache = new BlacklistCache();
    cache.add(entry("a", "same", null, "user"));
    assert.equal(cache.isBlocked("user", "same", 0), true);
    assert.equal(cache.isBlocked("device", "same", 0), false);
    assert.equal(cache.isBlocked("ip", "same", 0), false);
  });

  test("add is an upsert by entry id; remove of an unknown id is a no-op (replays are idempotent)", () => {
    const cache = new BlacklistCache();
    cache.add(entry("a", "1.1.1.1"));
    cache.add(entry("a", "2.2.2.2"));
    assert.equal(cache.size, 1);
    assert.equal(cache.isBlocked("ip", "1.1.1.1", 0), false);
    assert.equal(cache.isBlocked("ip", "2.2.2.2", 0), true);
    cache.remove("nope");
    cache.remove("a");
    cache.remove("a");
    assert.equal(cache.size, 0);
  });

  test("pruneExpired drops only expired entries; replaceAll swaps the content", () => {
    const cache = new BlacklistCache();
    cache.add(entry("a", "x", 100));
    cache.add(entry("b", "y", null));
    cache.add(entry("c", "z", 300));
    assert.equal(cache.pruneExpired(200), 1);
    assert.equal(cache.size, 2);
    cache.replaceAll([entry("d", "w")]);
    assert.equal(cache.size, 1);
    assert.equal(cache.isBlocked("ip", "y", 0), false);
    assert.equal(cache.lookup("ip", "w", 0)?.entryId, "d");
  });
});

describe("AuthEpochCache", () => {
  test("keeps the maximum epoch whatever the order, and says when it moved", () => {
    const cache = new AuthEpochCache();
    assert.equal(cache.epochOf("u1"), null);
    assert.equal(cache.apply("u1", 3), true);
    assert.equal(cache.apply("u1", 2), false);
    assert.equal(cache.apply("u1", 3), false);
    assert.equal(cache.apply("u1", 5), true);
    assert.equal(cache.epochOf("u1"), 5);
    cache.replaceAll([
      ["u2", 1],
      ["u2", 4],
      ["u2", 2],
    ]);
    assert.equal(cache.epochOf("u1"), null);
    assert.equal(cache.epochOf("u2"), 4);
    assert.equal(cache.size, 1);
  });
});

describe("AppliedConfigStore", () => {
  test("holds one version per (type, scope), reports the snapshot sorted, and notifies", () => {
    const store = new AppliedConfigStore();
    const seen: string[] = [];
    store.onApplied((a) => seen.push(`${a.type}@${a.scope}#${a.version}`));
    store.apply({ type: "app_policy", scope: "app:b", version: 2, content: { registration_enabled: false } as never, appliedAt: 1 });
    store.apply({ type: "app_policy", scope: "app:a", version: 1, content: {} as never, appliedAt: 1 });
    store.apply({ type: "app_policy", scope: "app:b", version: 3, content: {} as never, appliedAt: 2 });
    assert.deepEqual(store.refs(), [
      { type: "app_policy", scope: "app:a", version: 1 },
      { type: "app_policy", scope: "app:b", version: 3 },
    ]);
    assert.equal(store.version("app_policy", "app:b"), 3);
    assert.equal(store.version("app_policy", "app:c"), null);
    assert.deepEqual(seen, ["app_policy@app:b#2", "app_policy@app:a#1", "app_policy@app:b#3"]);
  });

  test("cp_agent_runtime: defaults until one is applied, then the applied one", () => {
    const store = new AppliedConfigStore();
    assert.deepEqual(store.cpAgentRuntime(), DEFAULT_CP_AGENT_RUNTIME);
    assert.equal(store.cpAgentRuntime().epoch_poll_ms, 5000);
    assert.equal(store.cpAgentRuntime().degraded_epoch_poll_ms, 800);
    const fast = cpAgentRuntimeSchema.parse({ epoch_poll_ms: 100 });
    store.apply({ type: "cp_agent_runtime", scope: "global", version: 1, content: fast, appliedAt: 1 });
    assert.equal(store.cpAgentRuntime().epoch_poll_ms, 100);
  });

  test("cloud functions are replaced as a whole set", () => {
    const store = new AppliedConfigStore();
    const fn = (name: string) => ({
      manifest: { app_id: "app1", name, version: 1, sha256: "0".repeat(64), timeout_ms: 1000 },
      body: Buffer.from(name),
    });
    store.replaceCloudFunctions([fn("a"), fn("b")]);
    assert.equal(store.cloudFunctionCount, 2);
    store.replaceCloudFunctions([fn("b")]);
    assert.equal(store.cloudFunction("app1", "a"), undefined);
    assert.equal(store.cloudFunction("app1", "b")?.body.toString(), "b");
  });
});
