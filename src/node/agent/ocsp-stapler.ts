/**
 * Channel 4, node side: the OCSP stapling manager. Fetches a response for the node's business
 * certificate from the CP's responder (plain HTTP: responses are signed), verifies it, and keeps
 * the last good one for the business listener to staple. Refreshes about every
 * ocsp_refresh_ms (15 min) but never later than halfway to nextUpdate; a failed fetch keeps
 * the cached response (until its nextUpdate) and retries with backoff. A `revoked` answer is
 * kept and stapled like any other — SDKs then refuse the handshake — and the node never shuts
 * itself down over it: its management channels stay up so an admin can re-enable it. The CP
 * asks for a fetch at once when it disables or enables the node (refreshNow, see agent.ts).
 */
import { Agent, request } from "undici";
import { CLOCK_SKEW_MS, MAX_OCSP_RESPONSE_BYTES, NODE_OCSP_MIN_REFRESH_MS } from "../../shared/config/defaults.js";
import type { Logger } from "../../shared/log/index.js";
import {
  buildOcspRequest,
  type OcspCertStatus,
  type OcspCertStatusKind,
  type VerifiedOcspResponse,
  verifyOcspResponse,
} from "../../shared/pki/ocsp/index.js";
import { deadlineSignal, type Scheduler } from "../../shared/time/index.js";
import type { Backoff } from "./backoff.js";
import { PeriodicTask } from "./periodic-task.js";

/** POSTs a DER request, resolves with the DER response, gives up when `signal` aborts (injectable for tests). */
export type OcspTransport = (url: string, der: Buffer, signal: AbortSignal) => Promise<Buffer>;

export interface OcspStatus {
  /** "none" when no response is held, or the held one has passed its nextUpdate. */
  status: OcspCertStatusKind | "none";
  fetchedAt: number | null;
  thisUpdate: number | null;
  nextUpdate: number | null;
  lastAttemptAt: number | null;
  lastError: string | null;
}

export interface OcspStaplerOptions {
  url: string;
  certDer: Buffer;
  issuerDer: Buffer;
  scheduler: Scheduler;
  backoff: Backoff;
  log: Logger;
  refreshMs: () => number;
  requestTimeoutMs: () => number;
  transport?: OcspTransport;
  onUpdate?: (status: OcspStatus) => void;
  /** After a verified response whose status differs from the one held before (`previous` null: none held). */
  onStatusChanged?: (status: OcspCertStatus, previous: OcspCertStatusKind | null) => void;
}

interface CachedResponse extends VerifiedOcspResponse {
  der: Buffer;
  fetchedAt: number;
}

/** A verified response fetched for a certificate not yet served (see fetchFor). */
export type PrefetchedOcspResponse = Readonly<CachedResponse>;

export class OcspStapler {
  private cached: CachedResponse | null = null;
  /** The certificate (and issuer) whose status is fetched: the package's, then each rotation's. */
  private target: { certDer: Buffer; issuerDer: Buffer };
  /** The certificate served before the last switch and its response, for handshakes begun before it. */
  private previous: { certDer: Buffer; cached: CachedResponse | null } | null = null;
  private lastAttemptAt: number | null = null;
  private lastError: string | null = null;
  private readonly task: PeriodicTask;
  private readonly transport: OcspTransport;
  private ownAgent: Agent | null = null;

  constructor(private readonly options: OcspStaplerOptions) {
    this.target = { certDer: options.certDer, issuerDer: options.issuerDer };
    if (options.transport) this.transport = options.transport;
    else {
      // Channel 4 gets its own pool: never shares sockets with the mTLS channels.
      const agent = new Agent({ keepAliveTimeout: 10_000 });
      this.ownAgent = agent;
      this.transport = (url, der, signal) => httpOcspTransport(agent, url, der, signal);
    }
    this.task = new PeriodicTask({
      name: "ocsp",
      scheduler: options.scheduler,
      backoff: options.backoff,
      run: () => this.refresh(),
      intervalMs: () => this.refreshDelay(),
      onFailure: (error, info) => {
        const keptUntil = this.cached && this.cached.nextUpdate > options.scheduler.clock.now() ? this.cached.nextUpdate : null;
        options.log.warn("ocsp.fetch_failed", {
          error: (error as Error).message,
          attempt: info.attempt,
          retry_in_ms: info.retryInMs,
          cached_status: this.currentStatus(),
          cached_until: keptUntil,
        });
      },
      onRecovered: ({ failures }) => options.log.info("ocsp.recovered", { failures }),
    });
  }

  /** Settles after the first verified response (of any status). */
  get firstResponse(): Promise<void> {
    return this.task.firstSuccess;
  }

  start(): void {
    this.task.start();
  }

  /** Fetch now (the certificate or its status changed); the schedule continues from there. */
  refreshNow(): void {
    this.task.wake();
  }

  /** Re-plans the next refresh after ocsp_refresh_ms changed. */
  reschedule(): void {
    this.task.reschedule();
  }

  async stop(): Promise<void> {
    await this.task.stop();
    await this.ownAgent?.destroy().catch(() => undefined);
    this.ownAgent = null;
  }

  /** The DER response to staple, or null when none is held or it has expired. */
  currentStaple(): Buffer | null {
    const cached = this.cached;
    if (!cached || cached.nextUpdate <= this.options.scheduler.clock.now()) return null;
    return cached.der;
  }

  /** The response to staple on a handshake that serves `certificate` (DER), or null. */
  stapleFor(certificate: Buffer | undefined): Buffer | null {
    const previous = this.previous;
    if (previous && certificate && previous.certDer.equals(certificate)) {
      const cached = previous.cached;
      return cached && cached.nextUpdate > this.options.scheduler.clock.now() ? cached.der : null;
    }
    return this.currentStaple();
  }

  /** Fetches and verifies a response for another certificate without touching what is stapled (a rotation's check). */
  async fetchFor(certDer: Buffer, issuerDer: Buffer): Promise<PrefetchedOcspResponse> {
    return this.fetchVerified(certDer, issuerDer);
  }

  /**
   * From now on the stapler serves `certDer` (a rotation's new certificate) with the response
   * fetched for it; the old certificate's response stays available to handshakes begun before.
   */
  switchCertificate(certDer: Buffer, issuerDer: Buffer, response: PrefetchedOcspResponse): void {
    const previousStatus = this.cached?.status.kind ?? null;
    this.previous = { certDer: this.target.certDer, cached: this.cached };
    this.target = { certDer, issuerDer };
    this.cached = response as CachedResponse;
    this.lastError = null;
    this.options.log.info("ocsp.switched", { status: response.status.kind, next_update: response.nextUpdate });
    this.options.onUpdate?.(this.status());
    if (response.status.kind !== previousStatus) this.options.onStatusChanged?.(response.status, previousStatus);
    this.task.reschedule();
  }

  status(): OcspStatus {
    return {
      status: this.currentStatus(),
      fetchedAt: this.cached?.fetchedAt ?? null,
      thisUpdate: this.cached?.thisUpdate ?? null,
      nextUpdate: this.cached?.nextUpdate ?? null,
      lastAttemptAt: this.lastAttemptAt,
      lastError: this.lastError,
    };
  }

  private currentStatus(): OcspStatus["status"] {
    return this.currentStaple() ? (this.cached?.status.kind ?? "none") : "none";
  }

  private async fetchVerified(certDer: Buffer, issuerDer: Buffer): Promise<CachedResponse> {
    const { scheduler } = this.options;
    const built = buildOcspRequest(certDer, issuerDer);
    const timeoutMs = this.options.requestTimeoutMs();
    const deadline = deadlineSignal(scheduler, timeoutMs, () => new Error(`OCSP responder gave no answer within ${timeoutMs} ms`));
    const der = await this.transport(this.options.url, built.der, deadline.signal).finally(deadline.cancel);
    const verified = verifyOcspResponse(der, {
      issuerDer,
      certId: built.certId,
      nonce: built.nonce,
      now: scheduler.clock.now(),
      clockSkewMs: CLOCK_SKEW_MS,
    });
    return { ...verified, der, fetchedAt: scheduler.clock.now() };
  }

  private async refresh(): Promise<void> {
    const { scheduler, log } = this.options;
    this.lastAttemptAt = scheduler.clock.now();
    try {
      const target = this.target;
      const fetched = await this.fetchVerified(target.certDer, target.issuerDer);
      // A rotation switched certificates while this fetch was out: its answer is for the old one.
      if (target !== this.target) return;
      // Handshakes begun before the switch are long done by the next refresh.
      this.previous = null;
      const verified = fetched;
      const previous = this.cached?.status.kind ?? null;
      this.cached = fetched;
      this.lastError = null;
      const status = verified.status;
      if (status.kind === "revoked")
        log.warn("ocsp.revoked", {
          revoked_at: status.revokedAt,
          reason: status.reason,
          next_update: verified.nextUpdate,
          action: "stapling the revoked response; the node keeps running",
        });
      else if (status.kind === "unknown") log.warn("ocsp.unknown", { next_update: verified.nextUpdate });
      else if (previous !== "good") log.info("ocsp.good", { next_update: verified.nextUpdate });
      else log.debug("ocsp.refreshed", { next_update: verified.nextUpdate });
      this.options.onUpdate?.(this.status());
      if (status.kind !== previous) this.options.onStatusChanged?.(status, previous);
    } catch (error) {
      this.lastError = error instanceof Error ? error.message : String(error);
      this.options.onUpdate?.(this.status());
      throw error;
    }
  }

  /** ~ocsp_refresh_ms, but at most halfway to nextUpdate, and never a busy loop. */
  private refreshDelay(): number {
    const configured = this.options.refreshMs();
    if (!this.cached) return configured;
    const half = Math.floor((this.cached.nextUpdate - this.options.scheduler.clock.now()) / 2);
    return Math.max(NODE_OCSP_MIN_REFRESH_MS, Math.min(configured, half));
  }
}

/** RFC 6960 Appendix A.1: POST application/ocsp-request, expect application/ocsp-response. */
async function httpOcspTransport(agent: Agent, url: string, der: Buffer, signal: AbortSignal): Promise<Buffer> {
  const response = await request(url, {
    method: "POST",
    dispatcher: agent,
    headers: { "content-type": "application/ocsp-request", accept: "application/ocsp-response" },
    body: der,
    signal,
  });
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response.body) {
    total += (chunk as Buffer).length;
    if (total > MAX_OCSP_RESPONSE_BYTES) {
      response.body.destroy();
      throw new Error(`OCSP response larger than ${MAX_OCSP_RESPONSE_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  if (response.statusCode !== 200) throw new Error(`OCSP responder answered HTTP ${response.statusCode}`);
  const type = String(response.headers["content-type"] ?? "");
  if (!type.startsWith("application/ocsp-response")) throw new Error(`OCSP responder answered content-type "${type}"`);
  return Buffer.concat(chunks, total);
}
