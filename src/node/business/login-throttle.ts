/**
 * Brute-force throttling of end-user logins on one node: failed attempts are counted per user
 * (application + normalised username, or card) and per client IP over LOGIN_THROTTLE_WINDOW_MS;
 * at server_runtime_settings.login_attempts_per_minute failures further attempts are refused
 * with LOGIN_THROTTLED until the oldest failure leaves the window. Counted in memory per node
 * (a deployment of N nodes allows at most N times the limit); the map is bounded.
 */
import { LOGIN_THROTTLE_MAX_KEYS, LOGIN_THROTTLE_WINDOW_MS } from "../../shared/config/defaults.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import type { Clock } from "../../shared/time/index.js";

export class LoginThrottle {
  /** key → failure times (oldest first); Map order is insertion order, so the oldest keys go first. */
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly clock: Clock,
    private readonly limit: () => number,
  ) {}

  /** Throws LOGIN_THROTTLED when any key is at its limit. */
  check(keys: readonly string[]): void {
    const now = this.clock.now();
    const limit = this.limit();
    for (const key of keys) {
      const recent = this.recent(key, now);
      if (recent.length >= limit) {
        const retryAfterS = Math.max(1, Math.ceil(((recent[0] ?? now) + LOGIN_THROTTLE_WINDOW_MS - now) / 1000));
        throw new AuthNexusError("LOGIN_THROTTLED", { detail: { key: key.split(":")[0], retry_after_s: retryAfterS } });
      }
    }
  }

  fail(keys: readonly string[]): void {
    const now = this.clock.now();
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
  }

  /** A success clears the user's count (not the IP's: one good password must not launder a spray). */
  succeed(userKey: string): void {
    this.failures.delete(userKey);
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
