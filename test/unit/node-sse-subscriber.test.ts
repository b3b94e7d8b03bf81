/**
 * Channel 2 on the node, against scripted streams in frozen time: hints (even split across
 * chunks) wake the right loop, pings keep the stream alive, a silent stream is declared dead
 * after the silence timeout and reopened with backoff, a stream the CP ends or cannot open
 * leaves the node "degraded" until the next connection, and stop() leaves nothing behind.
 */
import assert from "node:assert/strict";
import { ReadableStream, type ReadableStreamDefaultController } from "node:stream/web";
import { describe, test } from "node:test";
import { Backoff } from "../../src/node/agent/backoff.js";
import { CpCallError } from "../../src/node/agent/cp-call-error.js";
import type { CpClient } from "../../src/node/agent/cp-client.js";
import { delayAfterFailure } from "../../src/node/agent/retry-delay.js";
import { type SseState, SseSubscriber } from "../../src/node/agent/sse-subscriber.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { type HintEvent, sseFrame } from "../../src/shared/node-protocol/index.js";
import { ManualClock, ManualScheduler, settle } from "../../src/shared/time/index.js";

type Body = Awaited<ReturnType<CpClient["openEventStream"]>>;

/** The slowest pace of the agent's backoff in these tests (its backoff_max_ms). */
const SLOWEST_MS = 5000;

function setup() {
  const clock = new ManualClock(0);
  const scheduler = new ManualScheduler(clock);
  const streams: ReadableStreamDefaultController<Uint8Array>[] = [];
  const opened: AbortSignal[] = [];
  const plan: { failNext: number; failWith: () => CpCallError } = {
    failNext: 0,
    failWith: () => new CpCallError("network", "connect ECONNREFUSED", { socketCode: "ECONNREFUSED" }),
  };
  const client = {
    openEventStream: async (signal: AbortSignal): Promise<Body> => {
      opened.push(signal);
      if (plan.failNext > 0) {
        plan.failNext -= 1;
        throw plan.failWith();
      }
      return new ReadableStream<Uint8Array>({ start: (controller) => void streams.push(controller) }) as unknown as Body;
    },
  };
  const hints: HintEvent[] = [];
  const states: SseState[] = [];
  const memory = createMemoryLogger("SSE");
  const subscriber = new SseSubscriber({
    client,
    scheduler,
    backoff: new Backoff(
      () => ({ baseMs: 1000, maxMs: 5000 }),
      () => 0,
    ),
    log: memory.logger,
    onHint: (hint) => hints.push(hint),
    onStateChange: (state) => states.push(state),
    silenceTimeoutMs: 75_000,
    // The rule the agent gives every loop.
    failureDelayMs: (failure, backoff) => delayAfterFailure(failure, backoff, SLOWEST_MS),
  });
  const send = (text: string, index = streams.length - 1) => streams[index]?.enqueue(new TextEncoder().encode(text));
  return { clock, scheduler, subscriber, streams, opened, plan, hints, states, send, events: memory.events };
}

describe("SseSubscriber", () => {
  test("dispatches the four hints, even split across chunks; pings and unknown events wake nothing", async () => {
    const { subscriber, send, hints, states, scheduler } = setup();
    assert.equal(subscriber.status().state, "degraded", "not connected before the first stream");
    subscriber.start();
    await settle();
    assert.deepEqual(states, ["connected"]);
    send(sseFrame("command.pending") + sseFrame("ping"));
    send("event: epoch.bu");
    send(`mped\ndata:\n\n${sseFrame("config.pending")}`);
    send(`event: surprise\ndata: {}\n\n${sseFrame("blacklist.changed")}: comment\n\n`);
    await scheduler.advance(0);
    assert.deepEqual(hints, ["command.pending", "epoch.bumped", "config.pending", "blacklist.changed"]);
    assert.equal(subscriber.status().hintsReceived, 4);
    await subscriber.stop();
  });

  test("pings keep a stream alive; silence past the timeout kills it, degrades, and reconnects with backoff", async () => {
    const { subscriber, send, states, scheduler, opened, events } = setup();
    subscriber.start();
    await settle();
    for (let i = 0; i < 4; i++) {
      await scheduler.advance(30_000);
      send(sseFrame("ping"));
    }
    await scheduler.advance(0);
    assert.equal(subscriber.status().state, "connected", "120 s of pings every 30 s: alive");
    await scheduler.advance(75_000);
    assert.equal(subscriber.status().state, "degraded");
    assert.ok(opened[0]?.aborted, "the silent stream was aborted");
    assert.ok(events().some((e) => e.msg === "sse.silent"));
    assert.ok(events().some((e) => e.msg === "degraded" && e.level === "warn" && e.category === "SSE"));
    assert.equal(opened.length, 1);
    await scheduler.advance(1000);
    assert.equal(opened.length, 2, "reconnected after the backoff");
    assert.deepEqual(states, ["connected", "degraded", "connected"]);
    assert.equal(subscriber.status().reconnects, 1);
    await subscriber.stop();
  });

  test("a stream the CP ends, or cannot open, leaves the node degraded until a connection succeeds", async () => {
    const { subscriber, streams, states, scheduler, opened, plan, events } = setup();
    subscriber.start();
    await settle();
    plan.failNext = 2;
    streams[0]?.close();
    await scheduler.advance(0);
    assert.equal(subscriber.status().state, "degraded");
    assert.equal(subscriber.status().lastError, "stream ended by the CP");
    await scheduler.advance(1000);
    await scheduler.advance(1000);
    assert.equal(opened.length, 3, "two failed attempts");
    assert.equal(subscriber.status().state, "degraded");
    assert.equal(events().filter((e) => e.msg === "sse.connect_failed").length, 2);
    await scheduler.advance(1000);
    assert.equal(opened.length, 4);
    assert.equal(subscriber.status().state, "connected");
    assert.deepEqual(states, ["connected", "degraded", "connected"]);
    await subscriber.stop();
  });

  test("dropConnection() cuts the stream like a network failure", async () => {
    const { subscriber, scheduler, opened } = setup();
    subscriber.start();
    await settle();
    subscriber.dropConnection();
    await scheduler.advance(0);
    assert.equal(subscriber.status().state, "degraded");
    await scheduler.advance(1000);
    assert.equal(subscriber.status().state, "connected");
    assert.equal(opened.length, 2);
    await subscriber.stop();
  });

  test("a refusal (revoked certificate) waits the slowest pace, like every other loop, not the short backoff", async () => {
    const { subscriber, scheduler, opened, plan, events } = setup();
    plan.failNext = 3;
    plan.failWith = () => new CpCallError("http", "HTTP 403 NODE_CERT_REVOKED", { status: 403, code: "NODE_CERT_REVOKED" });
    subscriber.start();
    await settle();
    assert.equal(opened.length, 1);
    await scheduler.advance(SLOWEST_MS - 1);
    assert.equal(opened.length, 1, "no retry inside the slowest pace");
    await scheduler.advance(1);
    assert.equal(opened.length, 2);
    await scheduler.advance(SLOWEST_MS);
    assert.equal(opened.length, 3);
    assert.ok(events().some((e) => e.msg === "sse.connect_failed" && e.code === "NODE_CERT_REVOKED"));
    await subscriber.stop();
  });

  test("evicted by another instance: says so, and reconnects only after the slowest pace", async () => {
    const { subscriber, scheduler, opened, streams, send, events, states } = setup();
    subscriber.start();
    await settle();
    send(sseFrame("stream.evicted"));
    streams[0]?.close();
    await scheduler.advance(0);
    assert.deepEqual(states, ["connected", "degraded"]);
    const warning = events().find((e) => e.msg === "sse.evicted");
    assert.ok(warning, "the node logs that another instance holds its stream");
    assert.match(String(warning.action), /another instance of this node holds its event stream/);
    await scheduler.advance(SLOWEST_MS - 1);
    assert.equal(opened.length, 1);
    await scheduler.advance(1);
    assert.equal(opened.length, 2);
    assert.equal(subscriber.status().state, "connected");
    // A stream the CP simply ends (a restart) is no refusal: back after the short backoff.
    streams[1]?.close();
    await scheduler.advance(1000);
    assert.equal(opened.length, 3);
    await subscriber.stop();
  });

  test("stop() aborts the open stream and leaves no timer", async () => {
    const { subscriber, scheduler, opened } = setup();
    subscriber.start();
    await settle();
    await subscriber.stop();
    assert.ok(opened[0]?.aborted);
    assert.equal(scheduler.pending, 0);
  });
});
