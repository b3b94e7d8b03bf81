/**
 * The seam between the CP agent and the business plane (the SDK-facing mTLS listener, built in
 * later). The agent reads live numbers from it for checkins and hands it the commands
 * that concern connected clients; the business plane will implement this interface. Until it
 * exists, `NO_BUSINESS_LISTENER` answers truthfully: no listener, so no connections, no users
 * online, and a pushed command reaches nobody ({"delivered": 0}).
 */
import type { z } from "zod";
import type { COMMAND_PAYLOADS } from "../../shared/node-protocol/index.js";

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
}

/** The business plane of a node that has no business listener. */
export const NO_BUSINESS_LISTENER: BusinessPlane = {
  metrics: () => ({ connections: 0, onlineUsers: 0, requestsPerSecond: 0, errorsPerSecond: 0, presence: {} }),
  forceLogout: async () => ({ delivered: 0 }),
  announce: async () => ({ delivered: 0 }),
  killProcess: async () => ({ delivered: 0 }),
};
