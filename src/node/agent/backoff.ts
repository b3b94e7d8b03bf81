/**
 * Retry delays for every CP agent loop: decorrelated jitter (AWS Architecture Blog, "Exponential
 * Backoff and Jitter"). Each delay is drawn between the base and three times the previous one,
 * capped at the maximum, so a fleet of nodes that lost the CP at the same moment does not come
 * back in lockstep. Pure: the random source is injected, so tests pin the sequence.
 */

export interface BackoffPolicy {
  /** Smallest delay and the first step (ms). */
  baseMs: number;
  /** Largest delay (ms). */
  maxMs: number;
}

/** A number in [0, 1), like Math.random. */
export type RandomSource = () => number;

/** The delay after `previousMs` (or the first delay when null). Always within [base, max]. */
export function nextBackoffDelay(previousMs: number | null, policy: BackoffPolicy, random: RandomSource): number {
  const base = Math.max(1, policy.baseMs);
  const max = Math.max(base, policy.maxMs);
  const previous = previousMs === null ? base : Math.min(Math.max(previousMs, base), max);
  const upper = Math.min(max, previous * 3);
  return Math.round(base + random() * (upper - base));
}

/**
 * The state of one retrying loop: the last delay and how many failures in a row. The policy is
 * read on every step, so a newly applied cp_agent_runtime takes effect on the next failure.
 */
export class Backoff {
  private previousMs: number | null = null;
  private failures = 0;

  constructor(
    private readonly policy: () => BackoffPolicy,
    private readonly random: RandomSource = Math.random,
  ) {}

  /** Records a failure and returns how long to wait before the next attempt (ms). */
  next(): number {
    this.failures += 1;
    this.previousMs = nextBackoffDelay(this.previousMs, this.policy(), this.random);
    return this.previousMs;
  }

  /** Records a success: the next failure starts again from the base. */
  reset(): void {
    this.previousMs = null;
    this.failures = 0;
  }

  /** Failures since the last success. */
  get attempts(): number {
    return this.failures;
  }
}
