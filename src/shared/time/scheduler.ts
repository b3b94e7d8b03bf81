/**
 * Every timer and deadline in AuthNexus goes through a Scheduler, so tests drive them with a
 * ManualClock instead of waiting. The real scheduler uses the runtime's timers; the manual one
 * fires its timers when the test advances time, in deadline order, letting promise chains
 * settle between timers. This module is the only place in src/ that touches the runtime's
 * timers or its wall clock (test/unit/time-discipline.test.ts keeps it so).
 */
import { type Clock, type ManualClock, systemClock } from "./clock.js";

/** Cancels a timer; calling it again, or after the timer fired, does nothing. */
export type CancelTimer = () => void;

export interface TimerOptions {
  /**
   * Background upkeep (pings, retention passes, lease renewals) that must not keep the process
   * alive on its own: the real scheduler unrefs such timers. Deadlines of work in flight are
   * left referenced.
   */
  background?: boolean;
}

export interface Scheduler {
  readonly clock: Clock;
  /** Calls `fn` once after `delayMs`. */
  setTimer(delayMs: number, fn: () => void, options?: TimerOptions): CancelTimer;
}

export function realScheduler(clock: Clock = systemClock): Scheduler {
  return {
    clock,
    setTimer(delayMs, fn, options) {
      const handle = setTimeout(fn, Math.max(0, delayMs));
      if (options?.background) handle.unref();
      return () => clearTimeout(handle);
    },
  };
}

/** The scheduler a process runs on when nothing was injected. */
export const systemScheduler: Scheduler = realScheduler(systemClock);

/**
 * Calls `fn` every `intervalMs` until cancelled. The next tick is planned when the previous one
 * was called, so a slow `fn` does not make ticks pile up behind each other.
 */
export function every(scheduler: Scheduler, intervalMs: number, fn: () => void, options?: TimerOptions): CancelTimer {
  let cancelled = false;
  let cancelCurrent: CancelTimer = () => {};
  const arm = () => {
    cancelCurrent = scheduler.setTimer(
      intervalMs,
      () => {
        if (cancelled) return;
        arm();
        fn();
      },
      options,
    );
  };
  arm();
  return () => {
    cancelled = true;
    cancelCurrent();
  };
}

/** Resolves after `ms` (a wait inside work in flight, e.g. a bounded shutdown). */
export function delay(scheduler: Scheduler, ms: number): { promise: Promise<void>; cancel: CancelTimer } {
  let cancel: CancelTimer = () => {};
  const promise = new Promise<void>((resolve) => {
    cancel = scheduler.setTimer(ms, resolve);
  });
  return { promise, cancel };
}

/** An AbortSignal that aborts with `reason` after `ms`; cancel() disarms it once the work is done. */
export function deadlineSignal(scheduler: Scheduler, ms: number, reason: () => Error): { signal: AbortSignal; cancel: CancelTimer } {
  const controller = new AbortController();
  const cancel = scheduler.setTimer(ms, () => controller.abort(reason()));
  return { signal: controller.signal, cancel };
}

interface ManualTimer {
  at: number;
  seq: number;
  fn: () => void;
}

/**
 * Calls `fn` once the event loop has handled the I/O already waiting (setImmediate). No time is
 * involved, so no Scheduler: it batches work that arrives in the same turn of the loop.
 */
export function atEndOfTurn(fn: () => void): void {
  setImmediate(fn);
}

/** Lets pending promise continuations (and I/O callbacks already queued) run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class ManualScheduler implements Scheduler {
  private timers: ManualTimer[] = [];
  private seq = 0;

  constructor(readonly clock: ManualClock) {}

  setTimer(delayMs: number, fn: () => void): CancelTimer {
    const timer: ManualTimer = { at: this.clock.now() + Math.max(0, delayMs), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /** Timers still waiting. */
  get pending(): number {
    return this.timers.length;
  }

  /** The deadline of the next timer, or null. */
  nextDeadline(): number | null {
    return this.earliest()?.at ?? null;
  }

  /** Moves time forward by `ms`, firing every timer that falls due, each at its own deadline. */
  async advance(ms: number): Promise<void> {
    const target = this.clock.now() + ms;
    await settle();
    for (let next = this.earliest(); next && next.at <= target; next = this.earliest()) {
      this.timers = this.timers.filter((t) => t !== next);
      if (next.at > this.clock.now()) this.clock.set(next.at);
      next.fn();
      await settle();
    }
    this.clock.set(target);
    await settle();
  }

  private earliest(): ManualTimer | undefined {
    let best: ManualTimer | undefined;
    for (const t of this.timers) if (!best || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t;
    return best;
  }
}
