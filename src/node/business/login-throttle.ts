/**
 * Brute-force throttling of end-user logins on one node: failed attempts are counted per user
 * (application + normalised username) and per client IP over LOGIN_THROTTLE_WINDOW_MS; at
 * server_runtime_settings.login_attempts_per_minute failures further attempts are refused with
 * LOGIN_THROTTLED until the oldest failure leaves the window. Counted in memory per node
 * (a deployment of N nodes allows at most N times the limit); the map is bounded.
 *
 * An attempt is counted when it begins, before its credentials are looked up, and taken back
 * when it turns out not to be a failure. Counting only once an attempt has failed would let a
 * burst of parallel guesses (one per connection, all checked before the first one failed) past
 * the limit; this way a burst gets the same number of tries as a sequential attacker.
 */
import { LOGIN_THROTTLE_MAX_KEYS, LOGIN_THROTTLE_WINDOW_MS } from "../../shared/config/defaults.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import type { Clock } from "../../shared/time/index.js";

/** One attempt in flight: counted as a failure unless it is settled otherwise. */
export interface ThrottledAttempt {
  /**
   * The attempt succeeded: it is taken back, and the count of `clearKey` (the user's) is cleared.
   * The address's earlier failures stay: one good password must not launder a spray.
   */
  succeeded(clearKey: string | null): void;
  /** The attempt was neither a success nor a failure (refused for another reason): taken back. */
  withdrawn(): void;
}

export class LoginThrottle {
  /** key → attempt times (oldest first); Map order is insertion order, so the oldest keys go first. */
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly clock: Clock,
    private readonly limit: () => number,
  ) {}

  /** Counts an attempt on every key; throws LOGIN_THROTTLED (counting nothing) when any key is at its limit. */
  begin(keys: readonly string[]): ThrottledAttempt {
    const now = this.clock.now();
    this.check(keys, now);
    for (const key of keys) {
      const recent = this.recent(key, now);
      recent.push(now);
      this.failures.delete(key);
      this.failures.set(key, recent);
    }
    while (this.failures.size > LOGIN_THROTTLE_MAX_KEYS) {
      const oldest = this.failures.keys().next().value as string;
      this.failures.delete(oldest);
    }
    let settled = false;
    const takeBack = () => {
      if (settled) return false;
      settled = true;
      for (const key of keys) this.remove(key, now);
      return true;
    };
    return {
      succeeded: (clearKey) => {
        if (takeBack() && clearKey !== null) this.failures.delete(clearKey);
      },
      withdrawn: () => {
        takeBack();
      },
    };
  }

  private check(keys: readonly string[], now: number): void {
    const limit = this.limit();
    for (const key of keys) {
      const recent = this.recent(key, now);
      if (recent.length >= limit) {
        const retryAfterS = Math.max(1, Math.ceil(((recent[0] ?? now) + LOGIN_THROTTLE_WINDOW_MS - now) / 1000));
        throw new AuthNexusError("LOGIN_THROTTLED", { detail: { key: key.split(":")[0], retry_after_s: retryAfterS } });
      }
    }
  }

  /** Takes back one attempt counted at `at` (if it is still in the window). */
  private remove(key: string, at: number): void {
    const times = this.failures.get(key);
    if (!times) return;
    const index = times.lastIndexOf(at);
    if (index !== -1) times.splice(index, 1);
    if (times.length === 0) this.failures.delete(key);
  }

  private recent(key: string, now: number): number[] {
    const times = this.failures.get(key);
    if (!times) return [];
    const firstLive = times.findIndex((t) => now - t < LOGIN_THROTTLE_WINDOW_MS);
    if (firstLive === -1) {
      this.failures.delete(key);
      return [];
    }
    if (firstLive > 0) times.splice(0, firstLive);
    return times;
  }
}
