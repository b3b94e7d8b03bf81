/**
 * One agent loop: run, then wait for the interval (after a success) or the backoff (after a
 * failure), then run again. The wait can be cut short: `wake()` runs the task at once (an SSE
 * hint, a checkin that shows the node is behind), and `reschedule()` re-plans the wait with the
 * current interval (SSE went down or came back; a new cp_agent_runtime was applied). A wake
 * that arrives while the task runs is not lost: the task runs again right after, because the
 * data the hint announced may have been committed after this run read.
 */

import type { Scheduler } from "../../shared/time/index.js";
import type { Backoff } from "./backoff.js";

export interface PeriodicTaskOptions {
  name: string;
  scheduler: Scheduler;
  /** One run; a throw counts as a failure. */
  run: () => Promise<void>;
  /** Wait after a success (ms); read again every time the wait is planned. */
  intervalMs: () => number;
  backoff: Backoff;
  /** Wait after a failure (ms); default: the backoff's next delay. */
  failureDelayMs?: (error: unknown, backoff: Backoff) => number;
  onFailure?: (error: unknown, info: { attempt: number; retryInMs: number }) => void;
  /** Called after a success that ended a run of failures. */
  onRecovered?: (info: { failures: number }) => void;
}

export interface PeriodicTaskState {
  name: string;
  running: boolean;
  runs: number;
  lastSuccessAt: number | null;
  lastFailureAt: number | null;
  lastError: string | null;
  consecutiveFailures: number;
  nextRunAt: number | null;
}

export class PeriodicTask {
  private stopped = true;
  private wakeRequested = false;
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  private lastRunEnd = 0;
  private failureDelay: number | null = null;
  private cancelTimer: (() => void) | null = null;
  private finishWait: (() => void) | null = null;
  private rearm: (() => void) | null = null;
  private nextRunAt: number | null = null;
  private runs = 0;
  private lastSuccessAt: number | null = null;
  private lastFailureAt: number | null = null;
  private lastError: string | null = null;
  private resolveFirstSuccess!: () => void;
  /** Settles after the first successful run. */
  readonly firstSuccess: Promise<void> = new Promise((resolve) => {
    this.resolveFirstSuccess = resolve;
  });

  constructor(private readonly options: PeriodicTaskOptions) {}

  get name(): string {
    return this.options.name;
  }

  /** Starts the loop; the first run happens at once. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loopDone = this.loop();
  }

  /** Runs as soon as possible (right after the current run, if one is in progress). */
  wake(): void {
    if (this.stopped) return;
    this.wakeRequested = true;
    this.finishWait?.();
  }

  /** Re-plans the current wait with the current interval (the last run's end stays the reference). */
  reschedule(): void {
    this.rearm?.();
  }

  /** Stops the loop and waits for a run in progress to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.finishWait?.();
    await this.loopDone;
  }

  state(): PeriodicTaskState {
    return {
      name: this.options.name,
      running: this.running,
      runs: this.runs,
      lastSuccessAt: this.lastSuccessAt,
      lastFailureAt: this.lastFailureAt,
      lastError: this.lastError,
      consecutiveFailures: this.options.backoff.attempts,
      nextRunAt: this.nextRunAt,
    };
  }

  private async loop(): Promise<void> {
    const { scheduler, backoff } = this.options;
    while (!this.stopped) {
      this.wakeRequested = false;
      this.running = true;
      this.nextRunAt = null;
      try {
        await this.options.run();
        const failures = backoff.attempts;
        backoff.reset();
        this.failureDelay = null;
        this.lastSuccessAt = scheduler.clock.now();
        this.lastError = null;
        if (failures > 0) this.options.onRecovered?.({ failures });
        this.resolveFirstSuccess();
      } catch (error) {
        const delay = this.options.failureDelayMs ? this.options.failureDelayMs(error, backoff) : backoff.next();
        this.failureDelay = delay;
        this.lastFailureAt = scheduler.clock.now();
        this.lastError = error instanceof Error ? error.message : String(error);
        this.options.onFailure?.(error, { attempt: backoff.attempts, retryInMs: delay });
      } finally {
        this.running = false;
        this.runs += 1;
        this.lastRunEnd = scheduler.clock.now();
      }
      if (this.stopped) break;
      if (!this.wakeRequested) await this.waitForNextRun();
    }
    this.nextRunAt = null;
  }

  private waitForNextRun(): Promise<void> {
    const { scheduler } = this.options;
    return new Promise<void>((resolve) => {
      const finish = () => {
        this.cancelTimer?.();
        this.cancelTimer = null;
        this.finishWait = null;
        this.rearm = null;
        this.nextRunAt = null;
        resolve();
      };
      const arm = () => {
        this.cancelTimer?.();
        const wait = this.failureDelay ?? this.options.intervalMs();
        const at = this.lastRunEnd + wait;
        this.nextRunAt = at;
        this.cancelTimer = scheduler.setTimer(Math.max(0, at - scheduler.clock.now()), finish);
      };
      this.finishWait = finish;
      this.rearm = arm;
      arm();
    });
  }
}
