/**
 * The SSE hub's own logic, against real Node Writables whose consumer the test controls:
 * direct writes, the bounded queue under backpressure (one copy per pending frame, oldest
 * dropped, drained in order), eviction, the one shared ping timer, presence writes in order,
 * bus wiring and shutdown. The mTLS path is covered by test/integration/sse.test.ts.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { createSseHub, SseHub, type SseHubOptions } from "../../src/cp/node-api/sse-hub.js";
import type { CpContext } from "../../src/cp/services/context.js";
import { createEventBus } from "../../src/cp/services/event-bus.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { sseFrame } from "../../src/shared/node-protocol/index.js";
import { ManualClock, ManualScheduler } from "../../src/shared/time/index.js";

const PING = sseFrame("ping");
const CMD = sseFrame("command.pending");
const CFG = sseFrame("config.pending");
const BL = sseFrame("blacklist.changed");
const EP = sseFrame("epoch.bumped");
const EVICTED = sseFrame("stream.evicted");

/**
 * A Writable that accepts chunks at once while `flowing`, and otherwise holds each write's
 * callback until `resume()`: with highWaterMark 1 every held write makes write() return false,
 * exactly as a socket whose peer stopped reading.
 */
class ControlledSink extends Writable {
  readonly received: string[] = [];
  private held: Array<() => void> = [];
  flowing = true;

  constructor() {
    super({ highWaterMark: 1, decodeStrings: false });
  }

  override _write(chunk: string | Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.received.push(chunk.toString());
    if (this.flowing) callback();
    else this.held.push(() => callback());
  }

  /** The peer stops reading: writes are held. */
  pause(): void {
    this.flowing = false;
  }

  /** The peer reads again: held writes complete (Node then emits 'drain'). */
  resume(): void {
    this.flowing = true;
    for (const done of this.held.splice(0)) done();
  }

  /** The peer reads what is held, then stops again. */
  readHeldThenStop(): void {
    for (const done of this.held.splice(0)) done();
  }
}

interface Harness {
  hub: SseHub;
  presence: Array<[string, boolean]>;
  /** Drives the hub's ping timer: nothing fires until the test advances it. */
  scheduler: ManualScheduler;
  events: () => Array<Record<string, unknown>>;
}

function harness(options: Partial<SseHubOptions> = {}): Harness {
  const memory = createMemoryLogger("SSE");
  const presence: Array<[string, boolean]> = [];
  const scheduler = new ManualScheduler(new ManualClock());
  const hub = new SseHub({
    log: memory.logger,
    pingIntervalMs: 50,
    scheduler,
    onPresence: async (nodeId, connected) => {
      presence.push([nodeId, connected]);
    },
    ...options,
  });
  return { hub, presence, scheduler, events: () => memory.events() as Array<Record<string, unknown>> };
}

/** Resolves after the sink's 'close' event has been delivered (its `closed` flag is set before that). */
const closed = (sink: Writable) =>
  new Promise<void>((resolve) => (sink.closed ? setImmediate(resolve) : sink.once("close", () => setImmediate(resolve))));
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("SSE hub", () => {
  it("writes hint frames straight to the node's stream, to one node or to all", () => {
    const { hub } = harness();
    const a = new ControlledSink();
    const b = new ControlledSink();
    hub.attach("nod_a", a);
    hub.attach("nod_b", b);
    assert.equal(hub.publish("command.pending", "nod_a"), 1);
    assert.equal(hub.publish("epoch.bumped", null), 2);
    assert.equal(hub.publish("config.pending", "nod_unknown"), 0);
    assert.deepEqual(a.received, [CMD, EP]);
    assert.deepEqual(b.received, [EP]);
    assert.equal(CMD, "event: command.pending\ndata:\n\n");
  });

  it("under backpressure queues frames, keeps one copy of each pending frame, drops the oldest on overflow and drains in order", async () => {
    const { hub } = harness({ maxQueuedFrames: 3 });
    const sink = new ControlledSink();
    const stream = hub.attach("nod_a", sink);
    assert.ok(stream);
    sink.pause();
    hub.publish("command.pending", "nod_a"); // written; the sink now holds it → write() returned false
    assert.equal(stream.blocked, true);
    hub.publish("config.pending", "nod_a");
    hub.publish("config.pending", "nod_a"); // identical pending hint: coalesced
    hub.publish("blacklist.changed", "nod_a");
    hub.ping();
    assert.deepEqual(stream.queue, [CFG, BL, PING]);
    hub.publish("epoch.bumped", "nod_a"); // overflow: the oldest (config.pending) goes
    assert.deepEqual(stream.queue, [BL, PING, EP]);
    assert.equal(stream.dropped, 1);
    assert.deepEqual(sink.received, [CMD], "nothing else reached the socket while it pushed back");

    sink.resume();
    await tick();
    assert.deepEqual(sink.received, [CMD, BL, PING, EP], "drained oldest first on 'drain'");
    assert.equal(stream.queue.length, 0);
    assert.equal(stream.blocked, false);
    hub.publish("command.pending", "nod_a");
    assert.deepEqual(sink.received.at(-1), CMD, "direct writes resume after the drain");
  });

  it("a drain that meets a new pushback stops flushing and keeps the rest queued", async () => {
    const { hub } = harness();
    const sink = new ControlledSink();
    const stream = hub.attach("nod_a", sink);
    assert.ok(stream);
    sink.pause();
    hub.publish("command.pending", "nod_a");
    hub.publish("config.pending", "nod_a");
    hub.publish("epoch.bumped", "nod_a");
    sink.readHeldThenStop();
    await tick();
    assert.deepEqual(sink.received, [CMD, CFG]);
    assert.deepEqual(stream.queue, [EP]);
    assert.equal(stream.blocked, true);
  });

  it("a second stream for a node evicts the first: the first is ended, hints go to the new one, presence stays connected", async () => {
    const h = harness();
    const first = new ControlledSink();
    const second = new ControlledSink();
    h.hub.attach("nod_a", first);
    h.hub.attach("nod_a", second);
    await closed(first);
    assert.equal(first.writableEnded, true);
    assert.equal(h.hub.size, 1);
    h.hub.publish("command.pending", null);
    assert.deepEqual(first.received, [EVICTED], "the evicted stream is told why it ends");
    assert.deepEqual(second.received, [CMD]);
    await h.hub.settled();
    assert.deepEqual(h.presence, [["nod_a", true]], "the evicted stream's close does not mark the node disconnected");
    const names = h.events().map((e) => e.msg);
    assert.ok(names.includes("stream.evicted"));
    assert.ok(h.events().some((e) => e.msg === "stream.closed" && e.reason === "evicted"));

    second.destroy(); // the node goes away
    await closed(second);
    await h.hub.settled();
    assert.equal(h.hub.size, 0);
    assert.deepEqual(h.presence, [
      ["nod_a", true],
      ["nod_a", false],
    ]);
    assert.ok(h.events().some((e) => e.msg === "stream.closed" && e.reason === "client_closed"));
  });

  it("two processes with one node's package: evictions again and again give ONE [SSE] warning naming both peers", async () => {
    const h = harness();
    const contended = () => h.events().filter((e) => e.msg === "stream.contended");
    h.hub.attach("nod_a", new ControlledSink(), "10.0.0.1:40001");
    h.hub.attach("nod_a", new ControlledSink(), "10.0.0.2:50001");
    h.hub.attach("nod_a", new ControlledSink(), "10.0.0.1:40002");
    assert.equal(contended().length, 0, "two evictions may be a reconnect racing a dead connection");
    await h.scheduler.advance(1300);
    h.hub.attach("nod_a", new ControlledSink(), "10.0.0.2:50002");
    assert.equal(contended().length, 1);
    const [warning] = contended();
    assert.equal(warning?.level, "warn");
    assert.equal(warning?.category, "SSE");
    assert.deepEqual(warning?.peers, ["10.0.0.1:40002", "10.0.0.2:50002"]);
    for (let i = 0; i < 20; i++) {
      await h.scheduler.advance(1300);
      h.hub.attach("nod_a", new ControlledSink(), `10.0.0.${1 + (i % 2)}:${41000 + i}`);
    }
    assert.equal(contended().length, 1, "said once, not at every eviction");
    h.hub.attach("nod_b", new ControlledSink(), "10.0.0.9:1");
    h.hub.attach("nod_b", new ControlledSink(), "10.0.0.9:2");
    assert.equal(contended().length, 1, "another node's single eviction is not contention");
    await h.hub.closeAll();
  });

  it("one shared ping timer for every stream, started with the first and stopped with the last", async () => {
    const h = harness();
    const a = new ControlledSink();
    const b = new ControlledSink();
    assert.equal(h.scheduler.pending, 0, "no timer before the first stream");
    h.hub.attach("nod_a", a);
    h.hub.attach("nod_b", b);
    assert.equal(h.scheduler.pending, 1, "one timer for both streams");
    assert.equal(h.scheduler.nextDeadline(), h.scheduler.clock.now() + 50);
    await h.scheduler.advance(100);
    assert.deepEqual(a.received, [PING, PING]);
    assert.deepEqual(b.received, [PING, PING]);
    a.destroy();
    await closed(a);
    assert.equal(h.scheduler.pending, 1, "still one stream left");
    b.destroy();
    await closed(b);
    assert.equal(h.scheduler.pending, 0, "stopped with the last stream");
  });

  it("the default interval is the protocol's 30 s", () => {
    const scheduler = new ManualScheduler(new ManualClock());
    const hub = new SseHub({ log: createMemoryLogger("SSE").logger, scheduler });
    hub.attach("nod_a", new ControlledSink());
    assert.equal(scheduler.nextDeadline(), scheduler.clock.now() + 30_000);
  });

  it("end(node) ends that stream and records it disconnected; a backpressured stream is cut, not left draining", async () => {
    const h = harness();
    const stuck = new ControlledSink();
    const stream = h.hub.attach("nod_a", stuck);
    assert.ok(stream);
    stuck.pause();
    h.hub.publish("command.pending", "nod_a");
    h.hub.publish("epoch.bumped", "nod_a");
    assert.equal(h.hub.end("nod_a", "node.deleted"), true);
    await closed(stuck);
    assert.equal(stuck.destroyed, true);
    assert.equal(h.hub.end("nod_a", "again"), false);
    await h.hub.settled();
    assert.deepEqual(h.presence, [
      ["nod_a", true],
      ["nod_a", false],
    ]);
    assert.ok(h.events().some((e) => e.msg === "stream.closed" && e.reason === "node.deleted"));
  });

  it("presence writes for one node run one at a time, in order, even when the first is slow; failures are logged", async () => {
    const order: string[] = [];
    let releaseFirst: () => void = () => {};
    const memory = createMemoryLogger("SSE");
    const hub = new SseHub({
      log: memory.logger,
      scheduler: new ManualScheduler(new ManualClock()),
      onPresence: async (nodeId, connected) => {
        if (connected) await new Promise<void>((resolve) => (releaseFirst = resolve));
        order.push(`${nodeId}:${connected}`);
        if (!connected) throw new Error("db down");
      },
    });
    const sink = new ControlledSink();
    hub.attach("nod_a", sink);
    sink.destroy();
    await closed(sink);
    await tick();
    assert.deepEqual(order, [], "the close waits for the open write");
    releaseFirst();
    await hub.settled();
    assert.deepEqual(order, ["nod_a:true", "nod_a:false"]);
    assert.ok(memory.events().some((e) => e.msg === "presence.write_failed" && e.connected === false));
  });

  it("a sink that is already closed is not attached", async () => {
    const h = harness();
    const gone = new ControlledSink();
    gone.destroy();
    assert.equal(h.hub.attach("nod_a", gone), null);
    assert.equal(h.hub.size, 0);
    await h.hub.settled();
    assert.deepEqual(h.presence, []);
  });

  it("closeAll ends every stream, waits for the presence writes, refuses new streams and stops the timer", async () => {
    const h = harness();
    const sinks = [new ControlledSink(), new ControlledSink(), new ControlledSink()];
    for (const [i, sink] of sinks.entries()) h.hub.attach(`nod_${i}`, sink);
    await h.hub.closeAll();
    for (const sink of sinks) assert.equal(sink.writableEnded, true);
    assert.equal(h.hub.size, 0);
    assert.equal(h.scheduler.pending, 0, "the ping timer is stopped");
    assert.deepEqual(
      h.presence.filter(([, c]) => !c).map(([id]) => id),
      ["nod_0", "nod_1", "nod_2"],
    );
    const late = new ControlledSink();
    assert.equal(h.hub.attach("nod_late", late), null);
    assert.equal(late.writableEnded, true);
  });

  it("createSseHub: bus hints reach the streams, node notices end them, closeAll unsubscribes", async () => {
    const events = createEventBus();
    const memory = createMemoryLogger("Server");
    const ctx = { events, log: memory.logger, scheduler: new ManualScheduler(new ManualClock()) } as unknown as CpContext;
    const presence: Array<[string, boolean]> = [];
    const hub = createSseHub(ctx, { onPresence: async (id, c) => void presence.push([id, c]) });
    const a = new ControlledSink();
    const b = new ControlledSink();
    hub.attach("nod_a", a);
    hub.attach("nod_b", b);
    events.publish("blacklist.changed", null);
    events.publish("config.pending", "nod_b");
    assert.deepEqual(a.received, [BL]);
    assert.deepEqual(b.received, [BL, CFG]);
    events.notice({ kind: "node.credentials_changed", nodeId: "nod_a" });
    await closed(a);
    assert.equal(hub.size, 1);
    await hub.closeAll();
    events.publish("epoch.bumped", null);
    assert.deepEqual(b.received, [BL, CFG], "no delivery after closeAll");
    assert.ok(memory.events().some((e) => e.category === "SSE" && e.msg === "stream.closed" && e.reason === "node.credentials_changed"));
  });
});
