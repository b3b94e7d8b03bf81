/**
 * Channel 1 checkin: the node's heartbeat. It carries the application version snapshot (every
 * applied config item), metrics, node metadata, cursors, SSE and OCSP state; the CP answers
 * with the heads of the logs the node follows and whether configs are pending. A head past the
 * node's cursor or a pending config wakes the matching pull at once: this is what catches a
 * missed SSE hint, or a change made through another CP process whose event bus this node's
 * stream does not hear. A change of the node status it reports (disabled / enabled) does the
 * same for the OCSP staple.
 */
import os from "node:os";
import type { Logger } from "../../shared/log/index.js";
import type { CheckinRequest, CheckinResponse } from "../../shared/node-protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { BusinessPlane } from "../business/business-plane.js";
import type { AppliedConfigStore } from "../state/config-store.js";
import type { CursorStream } from "../state/runtime-sync.js";
import type { CpClient } from "./cp-client.js";
import type { OcspStatus } from "./ocsp-stapler.js";

export interface LastCheckin {
  at: number;
  ok: boolean;
  error: string | null;
  nodeStatus: CheckinResponse["node_status"] | null;
  serverTime: number | null;
}

export interface CheckinDeps {
  client: Pick<CpClient, "checkin">;
  clock: Clock;
  log: Logger;
  softwareVersion: string;
  startedAt: number;
  business: BusinessPlane;
  store: AppliedConfigStore;
  cursors: () => Record<CursorStream, number>;
  sseConnected: () => boolean;
  ocsp: () => OcspStatus | null;
  /** After every checkin: the streams whose head moved past the node's cursor, and whether configs are pending. */
  onBehind: (behind: { streams: CursorStream[]; configPending: boolean }) => void;
  /** When the CP reports another node status than the last checkin did (not on the first one). */
  onNodeStatusChanged?: (status: CheckinResponse["node_status"]) => void;
}

/** CPU use of this process since the previous sample, in percent of one core. */
export class CpuSampler {
  private previous = process.cpuUsage();
  private previousAt: number;

  constructor(private readonly clock: Clock) {
    this.previousAt = clock.now();
  }

  sample(): number {
    const now = this.clock.now();
    const usage = process.cpuUsage(this.previous);
    const elapsedMs = now - this.previousAt;
    this.previous = process.cpuUsage();
    this.previousAt = now;
    if (elapsedMs <= 0) return 0;
    const percent = ((usage.user + usage.system) / 1000 / elapsedMs) * 100;
    return Math.min(100_000, Math.max(0, Math.round(percent * 10) / 10));
  }
}

export class CheckinLoop {
  private last_: LastCheckin | null = null;
  private readonly cpu: CpuSampler;
  private lastNodeStatus: CheckinResponse["node_status"] | null = null;
  /** Heads already acted on, so a head the node cannot reach (commands for other nodes) wakes once. */
  private readonly wokenHeads: Record<CursorStream, number> = { commands: 0, "auth-epochs": 0, blacklist: 0 };
  private lastResponse: CheckinResponse | null = null;

  constructor(private readonly deps: CheckinDeps) {
    this.cpu = new CpuSampler(deps.clock);
  }

  get last(): LastCheckin | null {
    return this.last_;
  }

  get heads(): CheckinResponse["heads"] | null {
    return this.lastResponse?.heads ?? null;
  }

  buildRequest(): CheckinRequest {
    const { clock, business, store, startedAt } = this.deps;
    const metrics = business.metrics();
    const ocsp = this.deps.ocsp();
    const now = clock.now();
    return {
      software_version: this.deps.softwareVersion.slice(0, 64),
      node_metadata: {
        hostname: os.hostname().slice(0, 255),
        os: `${os.type()} ${os.release()} ${os.arch()}`.slice(0, 128),
        uptime_s: Math.max(0, Math.floor((now - startedAt) / 1000)),
        started_at: startedAt,
        pid: process.pid,
      },
      metrics: {
        connections: metrics.connections,
        online_users: metrics.onlineUsers,
        requests_per_s: metrics.requestsPerSecond,
        errors_per_s: metrics.errorsPerSecond,
        rss_bytes: process.memoryUsage.rss(),
        cpu_percent: this.cpu.sample(),
      },
      app_versions: store.refs(),
      cursors: this.deps.cursors(),
      sse_connected: this.deps.sseConnected(),
      ...(ocsp ? { ocsp: { status: ocsp.status, fetched_at: ocsp.fetchedAt, next_update: ocsp.nextUpdate } } : {}),
      ...(Object.keys(metrics.presence).length > 0 ? { presence: metrics.presence } : {}),
    };
  }

  async run(): Promise<void> {
    const { client, clock, log } = this.deps;
    let response: CheckinResponse;
    try {
      response = await client.checkin(this.buildRequest());
    } catch (error) {
      this.last_ = {
        at: clock.now(),
        ok: false,
        error: error instanceof Error ? error.message : String(error),
        nodeStatus: this.last_?.nodeStatus ?? null,
        serverTime: null,
      };
      throw error;
    }
    this.lastResponse = response;
    this.last_ = { at: clock.now(), ok: true, error: null, nodeStatus: response.node_status, serverTime: response.server_time };
    if (response.node_status !== this.lastNodeStatus) {
      if (response.node_status === "disabled")
        log.warn("node.disabled", { action: "the CP reports this node disabled; it keeps its channels up and recovers when re-enabled" });
      else if (this.lastNodeStatus === "disabled") log.info("node.enabled");
      const known = this.lastNodeStatus !== null;
      this.lastNodeStatus = response.node_status;
      if (known) this.deps.onNodeStatusChanged?.(response.node_status);
    }
    this.reactToHeads(response);
  }

  private reactToHeads(response: CheckinResponse): void {
    const cursors = this.deps.cursors();
    const streams: CursorStream[] = [];
    for (const stream of ["commands", "auth-epochs", "blacklist"] as const) {
      const head = response.heads[stream];
      if (head > cursors[stream] && head !== this.wokenHeads[stream]) {
        this.wokenHeads[stream] = head;
        streams.push(stream);
      }
    }
    this.deps.onBehind({ streams, configPending: response.config_pending });
  }
}
