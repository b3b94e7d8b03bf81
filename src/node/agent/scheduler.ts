/**
 * Timers for the agent's loops, behind a small interface so tests drive them with a
 * ManualClock instead of waiting: the real scheduler uses setTimeout; the manual one fires its
 * timers when the test advances time, in deadline order, letting the loops' promise chains
 * settle between timers.
 */
import { type Clock, type ManualClock, systemClock } from "../../shared/clock.js";

export interface Scheduler {
  readonly clock: Clock;
  /** Calls `fn` once after `delayMs`; the returned function cancels it (idempotent). */
  setTimer(delayMs: number, fn: () => void): () => void;
}

export function realScheduler(clock: Clock = systemClock): Scheduler {
  return {
    clock,
    setTimer(delayMs, fn) {
      const handle = setTimeout(fn, Math.max(0, delayMs));
      return () => clearTimeout(handle);
    },
  };
}

interface ManualTimer {
  at: number;
  seq: number;
  fn: () => void;
}

/** Lets pending promise continuations (and undici/DB callbacks already queued) run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class ManualScheduler implements Scheduler {
  private timers: ManualTimer[] = [];
  private seq = 0;

  constructor(readonly clock: ManualClock) {}

  setTimer(delayMs: number, fn: () => void): () => void {
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
