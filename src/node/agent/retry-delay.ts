/**
 * How long a CP agent loop waits after a failure — one rule for the pull loops and the event
 * stream alike. Normally the backoff's next delay (short at first, growing). But when the CP
 * refused the request itself (a 4xx other than 408/429: a revoked certificate, an unknown node)
 * or evicted this instance's stream for another one, repeating at once would only repeat the
 * refusal: the wait is then at least the slowest pace, backoff_max_ms.
 */
import type { Backoff } from "./backoff.js";
import { CpCallError } from "./cp-call-error.js";

/** The CP ended this instance's event stream because another connection for the same node took it over (internal to the agent). */
export class StreamEvictedError extends Error {
  override readonly name = "StreamEvictedError";
}

export function isRefusal(failure: unknown): boolean {
  return (failure instanceof CpCallError && !failure.retryable) || failure instanceof StreamEvictedError;
}

export function delayAfterFailure(failure: unknown, backoff: Backoff, slowestMs: number): number {
  const delay = backoff.next();
  return isRefusal(failure) ? Math.max(delay, slowestMs) : delay;
}
