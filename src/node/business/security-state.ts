/**
 * The security rules checked on every SDK request, from the node's Channel 3 caches: the
 * IP/device/user blacklist and per-user auth epochs, and what to do when those caches are no
 * longer current (their last successful pull is older than SECURITY_STATE_STALE_AFTER_MS):
 * with --blacklist-fail-closed every request is refused while the blacklist is not current, and
 * while epochs are not current a saved token validates only while it is young
 * (STALE_EPOCH_TOKEN_MAX_AGE_MS) — the node cannot know whether an epoch bump passed it by.
 */
import { isIP } from "node:net";
import { SECURITY_STATE_STALE_AFTER_MS, STALE_EPOCH_TOKEN_MAX_AGE_MS } from "../../shared/config/defaults.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { BlacklistCache, BlacklistEntry } from "../state/blacklist-cache.js";
import type { AuthEpochCache } from "../state/epoch-cache.js";

export interface SecurityFreshness {
  /** When the blacklist / the epochs were last known current (loaded at start, or a successful pull); null: never. */
  blacklistAt: number | null;
  epochsAt: number | null;
}

export interface SecurityStateOptions {
  blacklist: BlacklistCache;
  epochs: AuthEpochCache;
  clock: Clock;
  freshness: () => SecurityFreshness;
  /** --blacklist-fail-closed */
  failClosed: boolean;
}

export class SecurityState {
  constructor(private readonly options: SecurityStateOptions) {}

  private current(at: number | null): boolean {
    return at !== null && this.options.clock.now() - at <= SECURITY_STATE_STALE_AFTER_MS;
  }

  get blacklistCurrent(): boolean {
    return this.current(this.options.freshness().blacklistAt);
  }

  get epochsCurrent(): boolean {
    return this.current(this.options.freshness().epochsAt);
  }

  /** Fail-closed: refuses everything while the blacklist cannot be trusted. */
  assertServing(): void {
    if (this.options.failClosed && !this.blacklistCurrent)
      throw new AuthNexusError("SECURITY_STATE_UNAVAILABLE", { detail: { why: "blacklist not current" } });
  }

  /** The entry blocking this connection's IP or device, or null. */
  blocksConnection(ip: string, deviceId: string | null): BlacklistEntry | null {
    const now = this.options.clock.now();
    return (
      this.options.blacklist.lookup("ip", canonicalIp(ip), now) ??
      (deviceId === null ? null : this.options.blacklist.lookup("device", deviceId, now))
    );
  }

  blocksUser(userId: string): BlacklistEntry | null {
    return this.options.blacklist.lookup("user", userId, this.options.clock.now());
  }

  /** The user's current epoch: the highest of what the Runtime DB row and the epoch log say. */
  currentEpoch(userId: string, storedEpoch: number): number {
    return Math.max(storedEpoch, this.options.epochs.epochOf(userId) ?? 0);
  }

  /** True when a session minted under `sessionEpoch` is still valid for the user. */
  epochValid(userId: string, sessionEpoch: number, storedEpoch = 0): boolean {
    return sessionEpoch >= this.currentEpoch(userId, storedEpoch);
  }

  /** When a saved token stops validating: its own expiry, shortened while epochs are not current. */
  tokenExpiry(createdAt: number, expiresAt: number): number {
    return this.epochsCurrent ? expiresAt : Math.min(expiresAt, createdAt + STALE_EPOCH_TOKEN_MAX_AGE_MS);
  }
}

/**
 * A peer address in the spelling blacklist entries use (docs/admin-api.md, "Security"): IPv4
 * dotted quad, IPv6 lower case and compressed, and an IPv4-mapped IPv6 address as its IPv4 —
 * which is how a listener bound to `::` sees every IPv4 client (`::ffff:203.0.113.7`).
 */
export function canonicalIp(address: string): string {
  if (isIP(address) !== 6) return address;
  let compressed: string;
  try {
    compressed = new URL(`http://[${address}]`).hostname.slice(1, -1);
  } catch {
    // A zone id (fe80::1%eth0) is no URL host; such a peer is never blacklisted by its IPv4 form.
    return address.toLowerCase();
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(compressed);
  if (!mapped) return compressed;
  const high = Number.parseInt(mapped[1] ?? "0", 16);
  const low = Number.parseInt(mapped[2] ?? "0", 16);
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join(".");
}
