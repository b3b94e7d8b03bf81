/**
 * Channel 2, node side: keeps one SSE stream to the CP open and turns its hints into wakes of
 * the matching pull loop. Hints carry no data, so a missed one only delays a change until the
 * next poll. Liveness: any frame (the CP pings every 30 s) resets a silence timer; a stream
 * silent for SSE_SILENCE_TIMEOUT_MS is treated as dead, aborted and reopened. While no stream
 * is open the node is "degraded": the agent tightens its polling until the stream is back.
 */
import { createParser, type EventSourceMessage } from "eventsource-parser";
import type { Logger } from "../../shared/log/index.js";
import { EVICTED_EVENT, type HintEvent, isHintEvent, PING_EVENT, SSE_SILENCE_TIMEOUT_MS } from "../../shared/node-protocol/index.js";
import type { Scheduler } from "../../shared/time/index.js";
import type { Backoff } from "./backoff.js";
import { CpCallError } from "./cp-call-error.js";
import type { CpClient } from "./cp-client.js";
import { StreamEvictedError } from "./retry-delay.js";

export type SseState = "connected" | "degraded";

export interface SseStatus {
  state: SseState;
  /** When the current state began (epoch ms). */
  since: number;
  /** Successful connections after the first one. */
  reconnects: number;
  /** Last frame (ping or hint) received, epoch ms. */
  lastFrameAt: number | null;
  lastError: string | null;
  hintsReceived: number;
}

export interface SseSubscriberOptions {
  client: Pick<CpClient, "openEventStream">;
  scheduler: Scheduler;
  backoff: Backoff;
  log: Logger;
  onHint: (hint: HintEvent) => void;
  onStateChange: (state: SseState) => void;
  silenceTimeoutMs?: number;
  /** Wait after a failed or ended stream (ms); default: the backoff's next delay. */
  failureDelayMs?: (failure: unknown, backoff: Backoff) => number;
}

export class SseSubscriber {
  private stopped = true;
  private loopDone: Promise<void> = Promise.resolve();
  private current: AbortController | null = null;
  private cancelWait: (() => void) | null = null;
  private connections = 0;
  private readonly status_: SseStatus;

  constructor(private readonly options: SseSubscriberOptions) {
    this.status_ = {
      state: "degraded",
      since: options.scheduler.clock.now(),
      reconnects: 0,
      lastFrameAt: null,
      lastError: null,
      hintsReceived: 0,
    };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.abort(new Error("subscriber stopped"));
    this.cancelWait?.();
    await this.loopDone;
  }

  /** Cuts the current stream (as a network failure would); the subscriber reconnects by itself. */
  dropConnection(): void {
    this.current?.abort(new Error("connection dropped"));
  }

  status(): SseStatus {
    return { ...this.status_ };
  }

  get connected(): boolean {
    return this.status_.state === "connected";
  }

  private async loop(): Promise<void> {
    const { client, backoff, log } = this.options;
    while (!this.stopped) {
      const controller = new AbortController();
      this.current = controller;
      let reason: string;
      let failure: unknown = null;
      try {
        const body = await client.openEventStream(controller.signal);
        this.markConnected();
        backoff.reset();
        const ended = await this.consume(body, controller);
        reason = ended.reason;
        if (ended.evicted) {
          failure = new StreamEvictedError(reason);
          log.warn("sse.evicted", {
            reason,
            action: "another instance of this node holds its event stream: two processes are running this node's deploy package; stop one",
          });
        }
      } catch (error) {
        reason = describe(error);
        failure = error;
        if (!this.stopped && this.status_.state === "degraded") {
          log.warn("sse.connect_failed", {
            error: reason,
            attempt: backoff.attempts + 1,
            ...(error instanceof CpCallError
              ? { kind: error.kind, status: error.status, code: error.code, socket_code: error.socketCode }
              : {}),
          });
        }
      } finally {
        this.current = null;
      }
      if (this.stopped) break;
      this.status_.lastError = reason;
      this.markDegraded(reason);
      await this.wait(this.options.failureDelayMs ? this.options.failureDelayMs(failure, backoff) : backoff.next());
    }
  }

  /** Reads frames until the stream ends or is aborted; returns why it ended, and whether the CP evicted it. */
  private async consume(
    body: NonNullable<Awaited<ReturnType<CpClient["openEventStream"]>>>,
    controller: AbortController,
  ): Promise<{ reason: string; evicted: boolean }> {
    const { scheduler, onHint, log } = this.options;
    const silenceMs = this.options.silenceTimeoutMs ?? SSE_SILENCE_TIMEOUT_MS;
    let silent = false;
    let evicted = false;
    let cancelSilence = () => {};
    const armSilence = () => {
      cancelSilence();
      cancelSilence = scheduler.setTimer(silenceMs, () => {
        silent = true;
        controller.abort(new Error("stream silent"));
      });
    };
    const parser = createParser({
      onEvent: (message: EventSourceMessage) => {
        this.status_.lastFrameAt = scheduler.clock.now();
        const event = message.event ?? "message";
        if (event === PING_EVENT) return;
        if (event === EVICTED_EVENT) {
          evicted = true;
          return;
        }
        if (isHintEvent(event)) {
          this.status_.hintsReceived += 1;
          log.debug("sse.hint", { event });
          onHint(event);
        } else log.debug("sse.unknown_event", { event: event.slice(0, 64) });
      },
      onComment: () => {
        this.status_.lastFrameAt = scheduler.clock.now();
      },
    });
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const onAbort = () => void reader.cancel().catch(() => undefined);
    controller.signal.addEventListener("abort", onAbort, { once: true });
    armSilence();
    const ended = (reason: string) => ({ reason, evicted });
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return ended(evicted ? "stream evicted by another connection for this node" : "stream ended by the CP");
        armSilence();
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch (error) {
      if (silent) return ended(`no frame for ${silenceMs} ms`);
      if (controller.signal.aborted) return ended(describe(controller.signal.reason));
      return ended(describe(error));
    } finally {
      cancelSilence();
      controller.signal.removeEventListener("abort", onAbort);
      if (silent) log.warn("sse.silent", { silence_ms: silenceMs });
    }
  }

  private markConnected(): void {
    const { scheduler, log } = this.options;
    this.connections += 1;
    if (this.connections > 1) this.status_.reconnects += 1;
    this.status_.state = "connected";
    this.status_.since = scheduler.clock.now();
    this.status_.lastError = null;
    log.info("sse.connected", { reconnects: this.status_.reconnects });
    this.options.onStateChange("connected");
  }

  private markDegraded(reason: string): void {
    if (this.status_.state === "degraded") return;
    this.status_.state = "degraded";
    this.status_.since = this.options.scheduler.clock.now();
    this.options.log.warn("degraded", { reason });
    this.options.onStateChange("degraded");
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const cancel = this.options.scheduler.setTimer(ms, done);
      function done() {
        cancel();
        resolve();
      }
      this.cancelWait = () => {
        this.cancelWait = null;
        done();
      };
    });
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
