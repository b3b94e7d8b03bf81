/**
 * The seam between the CP agent and the business plane. The agent reads live numbers from it for
 * checkins and hands it the commands that concern connected clients; the business plane acts on
 * them and on the security changes Channel 3 delivers:
 *
 * - force_logout, announcement and kill_process reach the connections they name (application,
 *   user, session, card key, device) as push frames; a logout also revokes the sessions it ends;
 *   the command result says how many connections each reached;
 * - a blacklist entry or an auth-epoch bump ends the live connections it concerns with a
 *   force_logout push, as soon as the node applies it;
 * - an application that is disabled or deleted has its connections ended;
 * - a node whose own staple turned revoked (disabled by the operator) ends all of them.
 */
import type { Kysely } from "kysely";
import type { z } from "zod";
import type { RuntimeSchema } from "../../shared/db/index.js";
import { revokeSession } from "../../shared/db/runtime/index.js";
import type { Logger } from "../../shared/log/index.js";
import type { ApplicationManifest, COMMAND_PAYLOADS } from "../../shared/node-protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { BlacklistCache, BlacklistEntry } from "../state/blacklist-cache.js";
import type { AppliedConfigStore } from "../state/config-store.js";
import type { AuthEpochCache } from "../state/epoch-cache.js";
import type { BusinessConnection } from "./connection.js";
import type { ConnectionRegistry, ConnectionTarget } from "./registry.js";
import { canonicalIp } from "./security-state.js";

export interface BusinessMetrics {
  connections: number;
  onlineUsers: number;
  requestsPerSecond: number;
  errorsPerSecond: number;
  /** Online users per application id. */
  presence: Record<string, number>;
}

/** What a push reached: the number of live client connections it was delivered to. */
export interface PushOutcome {
  delivered: number;
}

export type ForceLogoutPayload = z.output<(typeof COMMAND_PAYLOADS)["force_logout"]>;
export type AnnouncementPayload = z.output<(typeof COMMAND_PAYLOADS)["announcement"]>;
export type KillProcessPayload = z.output<(typeof COMMAND_PAYLOADS)["kill_process"]>;

export interface BusinessPlane {
  metrics(): BusinessMetrics;
  forceLogout(payload: ForceLogoutPayload): Promise<PushOutcome>;
  announce(payload: AnnouncementPayload): Promise<PushOutcome>;
  killProcess(payload: KillProcessPayload): Promise<PushOutcome>;
  /** Ends every live connection with a force_logout push giving `reason`; sessions stay valid. */
  endAllConnections(reason: string): PushOutcome;
}

/** Requests and error answers per second, averaged over the last minute (one-second buckets). */
class RateCounter {
  private readonly buckets = new Float64Array(60);
  private readonly errors = new Float64Array(60);
  private current = -1;

  constructor(private readonly clock: Clock) {}

  count(failed: boolean): void {
    const second = this.advance();
    this.buckets[second % 60] = (this.buckets[second % 60] ?? 0) + 1;
    if (failed) this.errors[second % 60] = (this.errors[second % 60] ?? 0) + 1;
  }

  rates(): { requests: number; errors: number } {
    this.advance();
    const sum = (values: Float64Array) => values.reduce((a, b) => a + b, 0);
    return { requests: sum(this.buckets) / 60, errors: sum(this.errors) / 60 };
  }

  private advance(): number {
    const second = Math.floor(this.clock.now() / 1000);
    if (this.current < 0 || second - this.current >= 60) {
      this.buckets.fill(0);
      this.errors.fill(0);
    } else {
      for (let s = this.current + 1; s <= second; s++) {
        this.buckets[s % 60] = 0;
        this.errors[s % 60] = 0;
      }
    }
    this.current = Math.max(this.current, second);
    return second;
  }
}

export interface LiveBusinessPlaneOptions {
  registry: ConnectionRegistry;
  db: Kysely<RuntimeSchema>;
  clock: Clock;
  log: Logger;
  store: AppliedConfigStore;
  blacklist: BlacklistCache;
  epochs: AuthEpochCache;
}

export class LiveBusinessPlane implements BusinessPlane {
  private readonly rates: RateCounter;
  private readonly unsubscribe: Array<() => void> = [];

  constructor(private readonly options: LiveBusinessPlaneOptions) {
    this.rates = new RateCounter(options.clock);
    this.unsubscribe.push(
      options.blacklist.onAdded((entry) => this.blacklisted(entry)),
      options.epochs.onRaised((userId, epoch) => this.epochRaised(userId, epoch)),
      options.store.onApplicationsReplaced((applications) => this.applicationsChanged(applications)),
    );
  }

  /** Stops reacting to security changes (the node is stopping). */
  detach(): void {
    for (const off of this.unsubscribe.splice(0)) off();
  }

  /** Counts one answered request (the edge calls this). */
  countRequest(failed: boolean): void {
    this.rates.count(failed);
  }

  metrics(): BusinessMetrics {
    const { requests, errors } = this.rates.rates();
    const presence = this.options.registry.presence();
    return {
      connections: this.options.registry.size,
      onlineUsers: Object.values(presence).reduce((a, b) => a + b, 0),
      requestsPerSecond: Math.round(requests * 100) / 100,
      errorsPerSecond: Math.round(errors * 100) / 100,
      presence,
    };
  }

  /**
   * Ends the connections first — in memory, at once, whatever the database is doing — then
   * revokes their sessions so the tokens stop working everywhere. A revocation that fails makes
   * the command fail (its result says so); the connections are gone either way.
   */
  async forceLogout(payload: ForceLogoutPayload): Promise<PushOutcome> {
    const targets = this.live(payload);
    const now = this.options.clock.now();
    const sessions = targets.flatMap((c) => (c.session ? [c.session.sessionId] : []));
    for (const connection of targets) this.endWithPush(connection, "force_logout", payload.reason ?? "logged out by an administrator");
    this.options.log.info("push.force_logout", { target: describe(payload), delivered: targets.length });
    await Promise.all(sessions.map((id) => revokeSession(this.options.db, id, "force_logout", now)));
    return { delivered: targets.length };
  }

  async announce(payload: AnnouncementPayload): Promise<PushOutcome> {
    const targets = this.live(payload).filter((c) => c.ready);
    for (const connection of targets) connection.push("announcement", { level: payload.level, message: payload.message });
    this.options.log.info("push.announcement", { target: describe(payload), level: payload.level, delivered: targets.length });
    return { delivered: targets.length };
  }

  async killProcess(payload: KillProcessPayload): Promise<PushOutcome> {
    const targets = this.live(payload);
    for (const connection of targets) this.endWithPush(connection, "kill_process", payload.reason ?? "stopped by an administrator");
    this.options.log.info("push.kill_process", { target: describe(payload), delivered: targets.length });
    return { delivered: targets.length };
  }

  /**
   * The node itself stops serving (its certificate is on hold or revoked): every client is told
   * why, then disconnected. No session is revoked — the users did nothing — so a client can log
   * in with its token on another node.
   */
  endAllConnections(reason: string): PushOutcome {
    const targets = [...this.options.registry.connections()].filter((c) => !c.closed);
    for (const connection of targets) this.endWithPush(connection, "force_logout", reason);
    this.options.log.warn("connections.ended", { reason, delivered: targets.length });
    return { delivered: targets.length };
  }

  /**
   * The connections a push reaches: matching the target and not already on their way out (a
   * connection ended a moment ago stays registered until its socket has closed; it receives
   * nothing more and is not counted as delivered).
   */
  private live(target: ConnectionTarget): BusinessConnection[] {
    return this.options.registry.matching(target).filter((c) => !c.closed);
  }

  private blacklisted(entry: BlacklistEntry): void {
    if (entry.expiresAt !== null && entry.expiresAt <= this.options.clock.now()) return;
    // Entries hold IPs canonical (an IPv4-mapped IPv6 address as its IPv4); a listener bound to
    // "::" sees IPv4 peers as ::ffff:a.b.c.d, so addresses are compared in that same spelling.
    const targets =
      entry.kind === "ip"
        ? [...this.options.registry.connections()].filter((c) => !c.closed && canonicalIp(c.ip) === entry.value)
        : this.live(entry.kind === "device" ? { device_id: entry.value } : { user_id: entry.value });
    for (const connection of targets) this.endWithPush(connection, "force_logout", "access revoked");
    if (targets.length > 0)
      this.options.log.info("blacklist.enforced", { entry_id: entry.entryId, kind: entry.kind, connections: targets.length });
  }

  private epochRaised(userId: string, epoch: number): void {
    const targets = this.options.registry.ofUser(userId).filter((c) => c.session !== null && c.session.authEpoch < epoch);
    for (const connection of targets) this.endWithPush(connection, "force_logout", "session ended: log in again");
    if (targets.length > 0) this.options.log.info("epoch.enforced", { user_id: userId, epoch, connections: targets.length });
  }

  private applicationsChanged(applications: ReadonlyMap<string, ApplicationManifest>): void {
    for (const connection of [...this.options.registry.connections()]) {
      const appId = connection.appId;
      if (appId === null) continue;
      const app = applications.get(appId);
      if (app && app.status === "active") continue;
      this.endWithPush(connection, "force_logout", app ? "application disabled" : "application removed");
    }
  }

  private endWithPush(connection: BusinessConnection, kind: "force_logout" | "kill_process", reason: string): void {
    if (connection.closed) return;
    if (connection.ready) connection.push(kind, { level: "warning", message: reason, reason });
    connection.end(null, 0, kind);
  }
}

function describe(target: ConnectionTarget): Record<string, string> {
  return Object.fromEntries(
    Object.entries({
      app_id: target.app_id,
      user_id: target.user_id,
      session_id: target.session_id,
      card_key_id: target.card_key_id,
      device_id: target.device_id,
    }).filter((entry): entry is [string, string] => entry[1] !== undefined),
  );
}
