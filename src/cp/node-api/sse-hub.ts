/**
 * Channel 2: one Server-Sent Events stream per node, fed by the in-process event bus.
 *
 * Frames are written straight to the Node response (hono's streamSSE costs ~3× the memory and
 * ~10× the broadcast time; docs/architecture.md, "Hot paths"). A new stream for a node evicts
 * the old one, which is told so in a last `stream.evicted` frame; a node evicted again and again
 * is being run twice, and the hub says so once in an [SSE] warning naming both peers. One shared
 * timer pings every stream. When a socket pushes back (`write()` returned false) further frames
 * wait in a small per-stream queue that keeps one copy of each pending frame and drops the
 * oldest on overflow — hints are not data, the node pulls everything after a reconnect anyway.
 *
 * The hub keeps `nodes.sse_connected` true to the stream it holds: written when a node's
 * current stream opens or closes (never for an evicted one), one write at a time per node so
 * an old "closed" cannot land after a newer "opened".
 */

import type { ServerResponse } from "node:http";
import type { Writable } from "node:stream";
import {
  SSE_CONTENTION_EVICTIONS,
  SSE_CONTENTION_WARN_INTERVAL_MS,
  SSE_CONTENTION_WINDOW_MS,
  SSE_MAX_QUEUED_FRAMES,
} from "../../shared/config/defaults.js";
import type { Logger } from "../../shared/log/index.js";
import {
  type ControlEvent,
  EVICTED_EVENT,
  type HintEvent,
  PING_EVENT,
  SSE_PING_INTERVAL_MS,
  sseFrame,
} from "../../shared/node-protocol/index.js";
import { every, type Scheduler } from "../../shared/time/index.js";
import type { CpContext } from "../services/context.js";
import { recordSseState } from "../services/nodes/checkin.js";

export interface SseHubOptions {
  log: Logger;
  pingIntervalMs?: number;
  maxQueuedFrames?: number;
  /** Drives the shared ping timer and times stream durations. */
  scheduler: Scheduler;
  /** Persists whether the node holds a stream; failures are logged, never thrown. */
  onPresence?: (nodeId: string, connected: boolean) => Promise<void>;
}

type Frame = string;
const FRAMES = new Map<HintEvent | ControlEvent, Frame>();
function frameFor(event: HintEvent | ControlEvent): Frame {
  let frame = FRAMES.get(event);
  if (!frame) {
    frame = sseFrame(event);
    FRAMES.set(event, frame);
  }
  return frame;
}

/** One node's stream: direct writes while the socket keeps up, a bounded queue while it does not. */
export class SseStream {
  readonly queue: Frame[] = [];
  blocked = false;
  dropped = 0;
  closed = false;
  endReason: string | null = null;

  constructor(
    readonly nodeId: string,
    readonly sink: Writable,
    readonly openedAt: number,
    private readonly maxQueued: number,
    /** "address:port" of the connection, for logs. */
    readonly peer: string,
  ) {}

  send(frame: Frame): void {
    if (this.closed) return;
    if (!this.blocked) {
      if (!this.sink.write(frame)) this.blocked = true;
      return;
    }
    if (this.queue.includes(frame)) return;
    if (this.queue.length >= this.maxQueued) {
      this.queue.shift();
      this.dropped += 1;
    }
    this.queue.push(frame);
  }

  /** On 'drain': write what waited, oldest first, until the socket pushes back again. */
  flush(): void {
    this.blocked = false;
    while (!this.closed && this.queue.length > 0) {
      const frame = this.queue.shift() as Frame;
      if (!this.sink.write(frame)) {
        this.blocked = true;
        return;
      }
    }
  }

  /**
   * Ends the response, after `lastFrame` when given (the reason, in the stream's own terms); a
   * stream that is not reading is cut rather than left to drain, and gets no last frame.
   */
  end(reason: string, lastFrame?: Frame): void {
    if (this.closed) return;
    this.closed = true;
    this.endReason = reason;
    this.queue.length = 0;
    if (this.blocked) this.sink.destroy();
    else if (lastFrame !== undefined) this.sink.end(lastFrame);
    else this.sink.end();
  }
}

export class SseHub {
  private readonly streams = new Map<string, SseStream>();
  private readonly presenceWrites = new Map<string, Promise<void>>();
  /** Recent evictions per node, for the contention warning. */
  private readonly evictions = new Map<string, { times: number[]; warnedAt: number | null }>();
  private readonly disposers: Array<() => void> = [];
  private stopTimer: (() => void) | null = null;
  private shuttingDown = false;
  private readonly log: Logger;
  private readonly pingIntervalMs: number;
  private readonly maxQueued: number;
  private readonly scheduler: Scheduler;

  constructor(private readonly options: SseHubOptions) {
    this.log = options.log;
    this.pingIntervalMs = options.pingIntervalMs ?? SSE_PING_INTERVAL_MS;
    this.maxQueued = options.maxQueuedFrames ?? SSE_MAX_QUEUED_FRAMES;
    this.scheduler = options.scheduler;
  }

  get size(): number {
    return this.streams.size;
  }

  current(nodeId: string): SseStream | undefined {
    return this.streams.get(nodeId);
  }

  /**
   * Makes `sink` the node's stream (its headers already sent), evicting any previous one. `peer`
   * ("address:port") names the connection in logs. Null when it cannot be attached.
   */
  attach(nodeId: string, sink: Writable, peer = "unknown"): SseStream | null {
    if (this.shuttingDown || sink.destroyed || sink.writableEnded) {
      if (!sink.destroyed) sink.end();
      return null;
    }
    const stream = new SseStream(nodeId, sink, this.scheduler.clock.now(), this.maxQueued, peer);
    const previous = this.streams.get(nodeId);
    this.streams.set(nodeId, stream);
    if (previous) {
      previous.end("evicted", frameFor(EVICTED_EVENT));
      this.log.info("stream.evicted", {
        node_id: nodeId,
        duration_ms: this.scheduler.clock.now() - previous.openedAt,
        peer: previous.peer,
        by: peer,
      });
      this.noteEviction(nodeId, previous.peer, peer);
    }
    sink.on("drain", () => stream.flush());
    sink.on("error", (error: Error) => this.log.debug("stream.error", { node_id: nodeId, error: error.message }));
    sink.once("close", () => this.onClosed(stream));
    this.log.info("stream.opened", { node_id: nodeId, streams: this.streams.size });
    if (!previous) this.writePresence(nodeId, true);
    this.ensureTimer();
    return stream;
  }

  /** A hint to one node, or to every node (`nodeId` null); returns how many streams it reached. */
  publish(event: HintEvent, nodeId: string | null): number {
    const frame = frameFor(event);
    if (nodeId !== null) {
      const stream = this.streams.get(nodeId);
      stream?.send(frame);
      return stream ? 1 : 0;
    }
    for (const stream of this.streams.values()) stream.send(frame);
    return this.streams.size;
  }

  /** Sends the keep-alive frame to every stream (the shared timer calls this). */
  ping(): void {
    const frame = frameFor(PING_EVENT);
    for (const stream of this.streams.values()) stream.send(frame);
  }

  /** Ends a node's stream (deleted node, changed credentials). */
  end(nodeId: string, reason: string): boolean {
    const stream = this.streams.get(nodeId);
    if (!stream) return false;
    this.streams.delete(nodeId);
    stream.end(reason);
    this.writePresence(nodeId, false);
    this.stopTimerWhenIdle();
    return true;
  }

  /** Called on unsubscribe-worthy shutdown work (bus listeners). */
  onShutdown(dispose: () => void): void {
    this.disposers.push(dispose);
  }

  /** Ends every stream and waits for the presence writes, so listeners can then drain at once. */
  async closeAll(): Promise<void> {
    this.shuttingDown = true;
    for (const dispose of this.disposers.splice(0)) dispose();
    for (const nodeId of [...this.streams.keys()]) this.end(nodeId, "shutdown");
    this.stopTimer?.();
    this.stopTimer = null;
    await this.settled();
  }

  /** Resolves once every pending presence write has finished. */
  async settled(): Promise<void> {
    while (this.presenceWrites.size > 0) await Promise.all([...this.presenceWrites.values()]);
  }

  private onClosed(stream: SseStream): void {
    const wasCurrent = this.streams.get(stream.nodeId) === stream;
    stream.closed = true;
    if (wasCurrent) {
      this.streams.delete(stream.nodeId);
      this.writePresence(stream.nodeId, false);
    }
    this.log.info("stream.closed", {
      node_id: stream.nodeId,
      reason: stream.endReason ?? "client_closed",
      duration_ms: this.scheduler.clock.now() - stream.openedAt,
      dropped_frames: stream.dropped,
    });
    this.stopTimerWhenIdle();
  }

  /**
   * One connection replacing another is normal once (a node that reconnected before the CP saw
   * its old connection die). Again and again within SSE_CONTENTION_WINDOW_MS, it means two
   * processes hold one node's credentials: warn once, naming both peers, then stay quiet about
   * that node for SSE_CONTENTION_WARN_INTERVAL_MS.
   */
  private noteEviction(nodeId: string, evicted: string, by: string): void {
    const now = this.scheduler.clock.now();
    const record = this.evictions.get(nodeId) ?? { times: [], warnedAt: null };
    record.times = [...record.times.filter((at) => now - at < SSE_CONTENTION_WINDOW_MS), now];
    this.evictions.set(nodeId, record);
    const quiet = record.warnedAt !== null && now - record.warnedAt < SSE_CONTENTION_WARN_INTERVAL_MS;
    if (record.times.length < SSE_CONTENTION_EVICTIONS || quiet) return;
    record.warnedAt = now;
    this.log.warn("stream.contended", {
      node_id: nodeId,
      peers: [evicted, by],
      evictions: record.times.length,
      window_ms: SSE_CONTENTION_WINDOW_MS,
      action: "two processes are running this node's deploy package; stop one of them",
    });
  }

  private writePresence(nodeId: string, connected: boolean): void {
    const write = this.options.onPresence;
    if (!write) return;
    const previous = this.presenceWrites.get(nodeId) ?? Promise.resolve();
    const next = previous
      .then(() => write(nodeId, connected))
      .catch((error: unknown) => this.log.error("presence.write_failed", { node_id: nodeId, connected, error: (error as Error).message }));
    this.presenceWrites.set(nodeId, next);
    void next.then(() => {
      if (this.presenceWrites.get(nodeId) === next) this.presenceWrites.delete(nodeId);
    });
  }

  private ensureTimer(): void {
    this.stopTimer ??= every(this.scheduler, this.pingIntervalMs, () => this.ping(), { background: true });
  }

  private stopTimerWhenIdle(): void {
    if (this.streams.size > 0 || !this.stopTimer) return;
    this.stopTimer();
    this.stopTimer = null;
  }
}

/** The hub the CP runs: fed by ctx.events, presence written to the nodes table. */
export function createSseHub(ctx: CpContext, options: Partial<SseHubOptions> = {}): SseHub {
  const hub = new SseHub({
    log: ctx.log.category("SSE"),
    scheduler: ctx.scheduler,
    onPresence: (nodeId, connected) => recordSseState(ctx, nodeId, connected),
    ...options,
  });
  const offHint = ctx.events.onHint((hint) => hub.publish(hint.event, hint.nodeId));
  const offNotice = ctx.events.onNotice((notice) => hub.end(notice.nodeId, notice.kind));
  hub.onShutdown(() => {
    offHint();
    offNotice();
  });
  return hub;
}

/**
 * Sends the event-stream headers at once, so the node knows its stream is up before the first
 * frame. False when the node hung up while its identity was being checked: nothing to stream to.
 */
export function startEventStream(res: ServerResponse): boolean {
  if (res.destroyed || res.writableEnded) return false;
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", "x-accel-buffering": "no" });
  res.flushHeaders();
  res.socket?.setNoDelay(true);
  return true;
}
