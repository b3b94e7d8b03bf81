/**
 * The node's live SDK connections, indexed by what pushes and security changes select them by:
 * application, user, peer IP. Counts per IP back the connection limits; the users logged in per
 * application are the presence the node reports in its checkins.
 */
import type { BusinessConnection } from "./connection.js";

/** Which connections a push or a security change concerns: every field given must match. */
export interface ConnectionTarget {
  app_id?: string | undefined;
  user_id?: string | undefined;
  session_id?: string | undefined;
  card_key_id?: string | undefined;
  device_id?: string | undefined;
  ip?: string | undefined;
}

export class ConnectionRegistry {
  private readonly all = new Set<BusinessConnection>();
  private readonly perIp = new Map<string, number>();
  private readonly byUser = new Map<string, Set<BusinessConnection>>();

  get size(): number {
    return this.all.size;
  }

  connectionsFrom(ip: string): number {
    return this.perIp.get(ip) ?? 0;
  }

  add(connection: BusinessConnection): void {
    this.all.add(connection);
    this.perIp.set(connection.ip, (this.perIp.get(connection.ip) ?? 0) + 1);
  }

  remove(connection: BusinessConnection): void {
    if (!this.all.delete(connection)) return;
    const left = (this.perIp.get(connection.ip) ?? 1) - 1;
    if (left > 0) this.perIp.set(connection.ip, left);
    else this.perIp.delete(connection.ip);
    this.forgetUser(connection);
  }

  /** Called when a connection logs in or out: keeps the user index in step. */
  sessionChanged(connection: BusinessConnection, previousUserId: string | null): void {
    if (previousUserId !== null) this.dropFromUser(previousUserId, connection);
    const userId = connection.session?.userId;
    if (userId) {
      const set = this.byUser.get(userId) ?? new Set();
      set.add(connection);
      this.byUser.set(userId, set);
    }
  }

  /** Every connection of `userId` (logged in as that user). */
  ofUser(userId: string): BusinessConnection[] {
    return [...(this.byUser.get(userId) ?? [])];
  }

  /** Every connection matching `target` (all of them for an empty target). */
  matching(target: ConnectionTarget): BusinessConnection[] {
    const candidates = target.user_id !== undefined ? (this.byUser.get(target.user_id) ?? new Set()) : this.all;
    const found: BusinessConnection[] = [];
    for (const connection of candidates) if (matches(connection, target)) found.push(connection);
    return found;
  }

  connections(): IterableIterator<BusinessConnection> {
    return this.all.values();
  }

  /** Logged-in connections per application: the presence a checkin reports. */
  presence(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const connection of this.all) {
      const appId = connection.appId;
      if (connection.session && appId) counts[appId] = (counts[appId] ?? 0) + 1;
    }
    return counts;
  }

  private forgetUser(connection: BusinessConnection): void {
    const userId = connection.session?.userId;
    if (userId) this.dropFromUser(userId, connection);
  }

  private dropFromUser(userId: string, connection: BusinessConnection): void {
    const set = this.byUser.get(userId);
    if (!set) return;
    set.delete(connection);
    if (set.size === 0) this.byUser.delete(userId);
  }
}

function matches(connection: BusinessConnection, target: ConnectionTarget): boolean {
  const session = connection.session;
  if (target.app_id !== undefined && connection.appId !== target.app_id) return false;
  if (target.user_id !== undefined && session?.userId !== target.user_id) return false;
  if (target.session_id !== undefined && session?.sessionId !== target.session_id) return false;
  if (target.card_key_id !== undefined && session?.cardKeyId !== target.card_key_id) return false;
  if (target.device_id !== undefined && connection.deviceId !== target.device_id) return false;
  if (target.ip !== undefined && connection.ip !== target.ip) return false;
  return true;
}
