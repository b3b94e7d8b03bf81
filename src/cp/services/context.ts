import type { Kysely } from "kysely";
import type { ControlSchema, RuntimeSchema } from "../../shared/db/index.js";
import type { Logger } from "../../shared/log/index.js";
import type { Clock, Scheduler } from "../../shared/time/index.js";
import type { EventBus } from "./event-bus.js";
import type { CheckinCache } from "./nodes/checkin-cache.js";

/** What every Control Plane service needs, passed in rather than reached for globally. */
export interface CpContext {
  controlDb: Kysely<ControlSchema>;
  runtimeDb: Kysely<RuntimeSchema>;
  /** scheduler.clock: every "now" of the CP. */
  clock: Clock;
  /** Every timer and deadline of the CP (pings, polls, leases, retention). */
  scheduler: Scheduler;
  log: Logger;
  /** 32-byte key that seals CA private keys and server secrets at rest. */
  masterKey: Buffer;
  /** Where certificates point clients for OCSP (AIA) and nodes for the CP. */
  publicCpUrl: string;
  publicOcspUrl: string;
  dataDir: string;
  /** Channel 2 hints: publish after a change commits; the SSE hub fans them out. */
  events: EventBus;
  /** What checkins answer (log heads, latest config versions), kept fresh by `events`. */
  checkinCache: CheckinCache;
  /** Identifies this CP process (PKI job leases). */
  instanceId: string;
  /** Certificate rotation and renewal (serve-cp flags). */
  pki: PkiSettings;
  /** IANA zone whose days the daily reports count (serve-cp --report-time-zone); UTC when unset. */
  reportTimeZone?: string;
}

export interface PkiSettings {
  /** How long a rotated node's previous CP client certificate is accepted after its ack. */
  rotationGraceMs: number;
  /** Automatic renewal: the fraction of a node certificate's lifetime, ± jitter, then rotate. */
  renewAtFraction: number;
  renewJitterFraction: number;
  /** How often renewal looks; 0 turns automatic renewal off. */
  renewCheckIntervalMs: number;
}

/** Who performs an operation, for audit trails. */
export interface Actor {
  agentId: string | null;
  username: string | null;
  ip: string | null;
  requestId: string | null;
}
