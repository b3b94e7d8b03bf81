/**
 * Channel 2 over real mTLS, on SQLite and PostgreSQL: a node's SSE stream carries the bus's
 * hints as payload-less events (parsed with eventsource-parser, as the node does), pings on the
 * shared timer, one stream per node (a new one evicts the old), `nodes.sse_connected` follows
 * the stream, a client that goes away is removed, and a deleted node or one whose credentials
 * changed loses its stream. Last, a whole CP stops promptly with a stream open.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { resolveCpConfig } from "../../src/cp/config.js";
import { startControlPlane } from "../../src/cp/control-plane.js";
import { createNodeApiApp } from "../../src/cp/node-api/app.js";
import { loadCpTlsIdentity } from "../../src/cp/services/pki/cp-identity.js";
import { revokeCertificate } from "../../src/cp/services/pki/inventory.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { nodePaths } from "../../src/shared/node-protocol/index.js";
import { systemScheduler } from "../../src/shared/time/index.js";
import { ROOT_PASSWORD } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { mintNode, type NodeApiClient, type NodeIdentity, nodeApiClient, startTestNodeApi, type TestNodeApi } from "../helpers/node-api.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const PING_MS = 150;
const WAIT_MS = 5000;

/** Polls `check` until it holds (every 10 ms, at most WAIT_MS): for effects of another socket or the DB. */
async function waitUntil(label: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${label}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

interface OpenStream {
  status: number;
  headers: Headers;
  events: EventSourceMessage[];
  raw: string[];
  ended: () => boolean;
  close: () => void;
  waitForEvent: (name: string, after?: number) => Promise<EventSourceMessage>;
}

/** Opens /events as a node does and parses it with eventsource-parser; `close()` hangs up. */
async function openStream(client: NodeApiClient, nodeId: string): Promise<OpenStream> {
  const controller = new AbortController();
  const res = await client.open(nodePaths.events(nodeId), controller.signal);
  const events: EventSourceMessage[] = [];
  const raw: string[] = [];
  let ended = false;
  const parser = createParser({ onEvent: (event) => events.push(event) });
  if (res.status === 200 && res.body) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    void (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const text = decoder.decode(value, { stream: true });
          raw.push(text);
          parser.feed(text);
        }
      } catch {
        // aborted by close(), or cut by the server
      }
      ended = true;
    })();
  } else {
    raw.push(await res.text());
    ended = true;
  }
  return {
    status: res.status,
    headers: res.headers as unknown as Headers,
    events,
    raw,
    ended: () => ended,
    close: () => controller.abort(),
    async waitForEvent(name, after = 0) {
      let found: EventSourceMessage | undefined;
      await waitUntil(`event ${name}`, () => {
        found = events.slice(after).find((e) => e.event === name);
        return found !== undefined;
      });
      return found as EventSourceMessage;
    },
  };
}

for (const variant of dbVariants()) {
  describe(`SSE (Channel 2) on ${variant.name}`, { skip: variant.skip }, () => {
    let api: TestNodeApi;
    let alpha: NodeIdentity;
    let beta: NodeIdentity;
    const streams: OpenStream[] = [];
    const open = async (who: NodeIdentity, nodeId = who.nodeId) => {
      const stream = await openStream(api.client(who), nodeId);
      streams.push(stream);
      return stream;
    };

    before(async () => {
      api = await startTestNodeApi(variant, "sse", createNodeApiApp, { pingIntervalMs: PING_MS });
      alpha = await api.mintNode({ name: "alpha" });
      beta = await api.mintNode({ name: "beta" });
    });
    after(async () => {
      for (const s of streams) s.close();
      await api.close();
      await variant.cleanup();
    });

    const nodeRow = (id: string) =>
      api.cp.ctx.controlDb.selectFrom("nodes").select(["sse_connected", "sse_changed_at"]).where("id", "=", id).executeTakeFirstOrThrow();
    const connected = async (id: string) => (await nodeRow(id)).sse_connected === 1;
    const logged = (msg: string, nodeId: string) =>
      api.cp.logLines.some((l) => l.includes(`"msg":"${msg}"`) && l.includes(nodeId) && l.includes('"category":"SSE"'));

    let first: OpenStream;

    it("opens with the event-stream headers at once and marks the node connected", async () => {
      first = await open(alpha);
      assert.equal(first.status, 200);
      assert.equal(first.headers.get("content-type"), "text/event-stream");
      assert.equal(first.headers.get("cache-control"), "no-store");
      assert.equal(first.headers.get("x-accel-buffering"), "no");
      await waitUntil("sse_connected = 1", () => connected(alpha.nodeId));
      assert.ok((await nodeRow(alpha.nodeId)).sse_changed_at);
      assert.ok(logged("stream.opened", alpha.nodeId));
      assert.equal(api.sse.size, 1);
    });

    it("a hint published on the bus reaches the node as `event: <name>` with an empty data line", async () => {
      const before = first.events.length;
      api.cp.ctx.events.publish("config.pending", beta.nodeId); // someone else's
      api.cp.ctx.events.publish("command.pending", alpha.nodeId);
      api.cp.ctx.events.publish("epoch.bumped", null);
      const hint = await first.waitForEvent("command.pending", before);
      assert.equal(hint.data, "");
      assert.equal((await first.waitForEvent("epoch.bumped", before)).data, "");
      assert.ok(!first.events.slice(before).some((e) => e.event === "config.pending"), "a hint for another node is not delivered here");
      assert.ok(first.raw.join("").includes("event: command.pending\ndata:\n\n"), "the exact frame");
    });

    it("pings arrive on the shared timer", async () => {
      const before = first.events.length;
      const ping = await first.waitForEvent("ping", before);
      assert.equal(ping.data, "");
    });

    let second: OpenStream;

    it("a second stream for the node evicts the first; hints go to the new one and the node stays connected", async () => {
      second = await open(alpha);
      assert.equal(second.status, 200);
      await waitUntil("first stream ended", () => first.ended());
      assert.ok(logged("stream.evicted", alpha.nodeId));
      await waitUntil("evicted stream closed", () =>
        api.cp.logLines.some((l) => l.includes('"msg":"stream.closed"') && l.includes('"reason":"evicted"')),
      );
      assert.equal(api.sse.size, 1);
      await api.sse.settled();
      assert.equal(await connected(alpha.nodeId), true, "the evicted stream's close does not mark the node disconnected");
      const before = second.events.length;
      api.cp.ctx.events.publish("blacklist.changed", null);
      await second.waitForEvent("blacklist.changed", before);
    });

    it("a client that disconnects is removed and the node marked disconnected", async () => {
      const changedBefore = (await nodeRow(alpha.nodeId)).sse_changed_at;
      api.cp.clock.advance(1000);
      second.close();
      await waitUntil("stream removed from the hub", () => api.sse.current(alpha.nodeId) === undefined);
      await waitUntil("sse_connected = 0", async () => !(await connected(alpha.nodeId)));
      assert.ok(Number((await nodeRow(alpha.nodeId)).sse_changed_at) > Number(changedBefore));
      assert.ok(
        api.cp.logLines.some(
          (l) => l.includes('"msg":"stream.closed"') && l.includes(alpha.nodeId) && l.includes('"reason":"client_closed"'),
        ),
      );
    });

    it("HEAD does not open a stream", async () => {
      const res = await api.client(beta).request("HEAD", nodePaths.events(beta.nodeId));
      assert.equal(res.status, 405);
      assert.equal(api.sse.current(beta.nodeId), undefined);
      assert.equal(await connected(beta.nodeId), false);
    });

    it("another node's events path → 403, no stream", async () => {
      const intruder = await open(alpha, beta.nodeId);
      assert.equal(intruder.status, 403);
      assert.match(intruder.raw.join(""), /NODE_IDENTITY_MISMATCH/);
      assert.equal(api.sse.current(beta.nodeId), undefined);
    });

    it("a deleted node's stream, and one whose client certificate is revoked, are ended", async () => {
      const betaStream = await open(beta);
      assert.equal(betaStream.status, 200);
      await waitUntil("beta connected", () => connected(beta.nodeId));
      await revokeCertificate(api.cp.ctx, beta.certificateId, "keyCompromise", "test");
      await waitUntil("beta stream ended", () => betaStream.ended());
      await waitUntil("beta disconnected", async () => !(await connected(beta.nodeId)));
      const refused = await open(beta);
      assert.equal(refused.status, 403, "the revoked certificate cannot reopen it");

      const gamma = await api.mintNode({ name: "gamma" });
      const gammaStream = await open(gamma);
      assert.equal(gammaStream.status, 200);
      await waitUntil("gamma attached", () => api.sse.current(gamma.nodeId) !== undefined);
      await api.cp.ctx.controlDb.deleteFrom("nodes").where("id", "=", gamma.nodeId).execute();
      api.cp.ctx.events.notice({ kind: "node.deleted", nodeId: gamma.nodeId });
      await waitUntil("gamma stream ended", () => gammaStream.ended());
      assert.equal(api.sse.current(gamma.nodeId), undefined);
      await api.sse.settled();
      assert.ok(
        api.cp.logLines.some(
          (l) => l.includes('"msg":"stream.closed"') && l.includes(gamma.nodeId) && l.includes('"reason":"node.deleted"'),
        ),
      );
      const reconnect = await open(gamma);
      assert.equal(reconnect.status, 403, "and it cannot come back");
    });
  });
}

describe("SSE and shutdown", () => {
  it("a CP with an open stream stops without waiting out the shutdown grace period", async () => {
    const dataDir = await makeTempDir("authnexus-sse-stop");
    const client: { api?: ReturnType<typeof nodeApiClient> } = {};
    try {
      const config = resolveCpConfig(
        {
          "data-dir": dataDir.path,
          "admin-listen": "127.0.0.1:0",
          "cp-listen": "127.0.0.1:0",
          "ocsp-listen": "127.0.0.1:0",
          "public-cp-url": "https://localhost:9091",
        },
        {},
      );
      const plane = await startControlPlane(config, {
        scheduler: systemScheduler,
        log: createMemoryLogger("Server").logger,
        shutdownGraceMs: 20_000,
      });
      const init = await fetch(`http://127.0.0.1:${plane.adminAddress.port}/admin/v1/setup/initialize`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ console_token: plane.consoleToken, admin_username: "root", admin_password: ROOT_PASSWORD }),
      });
      assert.equal(init.status, 201, await init.text());
      const cp = plane.cpAddress();
      assert.ok(cp);
      const node = await mintNode(plane.context);
      client.api = nodeApiClient(`https://127.0.0.1:${cp.port}`, (await loadCpTlsIdentity(plane.context)).serverCaPem, node);
      const stream = await openStream(client.api, node.nodeId);
      assert.equal(stream.status, 200);
      await waitUntil(
        "connected",
        async () =>
          (
            await plane.context.controlDb
              .selectFrom("nodes")
              .select("sse_connected")
              .where("id", "=", node.nodeId)
              .executeTakeFirstOrThrow()
          ).sse_connected === 1,
      );

      const started = performance.now();
      await plane.stop();
      const took = performance.now() - started;
      assert.ok(took < 5000, `stop took ${Math.round(took)} ms with a stream open (grace 20 s)`);
      await waitUntil("stream ended by the CP", () => stream.ended());
    } finally {
      await client.api?.close();
      await dataDir.cleanup();
    }
  });
});
