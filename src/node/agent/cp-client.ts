/**
 * The node's client for the CP's node API (9091, mTLS): Channel 1 calls, Channel 3 delta pulls
 * and the Channel 2 event stream. Two undici Agents carrying the node's client certificate:
 * one pool for the short calls, created once and reused, and a separate pool for the
 * long-lived SSE stream, so the stream can never hold the connection a checkin or a delta pull
 * needs (the stream and the short calls never share a pool, docs/node-api.md). Short calls use the pool's own request API
 * (no WHATWG Request/Response/streams per call: a third of the agent's CPU per pull); the
 * stream uses undici's own fetch for its web-stream body. Never undici's Agent with the global
 * fetch (the two undici copies disagree and the client certificate is silently not sent). One TLS secure
 * context serves both pools, so a reconnect does not parse the key and CA bundle again.
 *
 * Every call has a deadline (cp_agent_runtime.request_timeout_ms, read per call), every
 * response is size-capped and validated against the shared zod schemas, and every failure is
 * a CpCallError the loops can classify.
 */
import { isIP } from "node:net";
import { createSecureContext } from "node:tls";
import { Agent, fetch } from "undici";
import type { z } from "zod";
import { MAX_JSON_DEPTH, NODE_MAX_CP_RESPONSE_BYTES } from "../../shared/config/defaults.js";
import { parseJson } from "../../shared/json/index.js";
import {
  authEpochDeltaResponse,
  batchAcceptedResponse,
  blacklistDeltaResponse,
  type CheckinRequest,
  type CheckinResponse,
  type CommandResultRequest,
  type CommandsPullResponse,
  type ConfigsAcksRequest,
  type ConfigsErrorsRequest,
  type ConfigsPullRequest,
  type ConfigsPullResponse,
  CP_API_PREFIX,
  type CredentialsAckRequest,
  type CredentialsAckResponse,
  checkinResponse,
  commandsPullResponse,
  configsPullResponse,
  credentialsAckResponse,
  type DeltaStream,
  nodePaths,
} from "../../shared/node-protocol/index.js";
import { type CancelTimer, deadlineSignal, type Scheduler } from "../../shared/time/index.js";
import { CpCallError, classifyFetchError, httpError } from "./cp-call-error.js";

export interface CpClientOptions {
  /** node_agent.json's cp_url (https://host:port, maybe with a path prefix). */
  cpUrl: string;
  nodeId: string;
  tls: { caPem: string; certPem: string; keyPem: string };
  /** Deadline of one call (ms); read on every call so a new cp_agent_runtime applies at once. */
  requestTimeoutMs: () => number;
  /** Runs the deadlines that undici's own timeouts do not cover. */
  scheduler: Scheduler;
  maxResponseBytes?: number;
}

export const DELTA_RESPONSE_SCHEMAS = {
  "auth-epochs": authEpochDeltaResponse,
  blacklist: blacklistDeltaResponse,
} as const;
export type DeltaResponse<S extends DeltaStream> = z.infer<(typeof DELTA_RESPONSE_SCHEMAS)[S]>;

type ResponseBody = NonNullable<Awaited<ReturnType<typeof fetch>>["body"]>;

export class CpClient {
  private readonly baseUrl: string;
  /** scheme://host:port of baseUrl, and its path prefix (maybe ""). */
  private readonly origin: string;
  private readonly pathPrefix: string;
  private shortCalls: Agent;
  private connect: NonNullable<Agent.Options["connect"]>;
  private readonly hostname: string;
  /** The pool holding the current event stream (one stream at a time; each stream gets its own pool). */
  private eventStream: Agent | null = null;
  /** Short-call pools replaced by a rotation, closing once their calls in flight finish. */
  private readonly retiredPools = new Set<Agent>();
  private readonly closing = new AbortController();
  private closed: Promise<void> | undefined;
  private readonly maxBytes: number;

  constructor(private readonly options: CpClientOptions) {
    this.baseUrl = options.cpUrl.replace(/\/+$/, "");
    this.maxBytes = options.maxResponseBytes ?? NODE_MAX_CP_RESPONSE_BYTES;
    const url = new URL(this.baseUrl);
    this.origin = url.origin;
    this.pathPrefix = url.pathname.replace(/\/+$/, "");
    this.hostname = url.hostname.replace(/^\[|\]$/g, "");
    this.connect = this.connectOptions(options.tls);
    this.shortCalls = new Agent({ connect: this.connect, keepAliveTimeout: 30_000 });
  }

  private connectOptions(tls: CpClientOptions["tls"]): NonNullable<Agent.Options["connect"]> {
    return {
      secureContext: createSecureContext({ ca: tls.caPem, cert: tls.certPem, key: tls.keyPem, minVersion: "TLSv1.2" }),
      // SNI must be a DNS name (RFC 6066); for an IP the certificate's IP SAN is checked instead.
      ...(isIP(this.hostname) === 0 ? { servername: this.hostname } : {}),
    };
  }

  /**
   * From now on every new connection presents this client certificate (a rotation). Calls in
   * flight finish on the old pool, which is then closed gracefully; the event stream keeps its
   * connection until it next reconnects (the CP ends it when the old certificate is retired).
   */
  replaceClientCertificate(tls: CpClientOptions["tls"]): void {
    if (this.closing.signal.aborted) return;
    this.connect = this.connectOptions(tls);
    const previous = this.shortCalls;
    this.shortCalls = new Agent({ connect: this.connect, keepAliveTimeout: 30_000 });
    this.retiredPools.add(previous);
    void previous
      .close()
      .catch(() => undefined)
      .finally(() => this.retiredPools.delete(previous));
  }

  /** Tells the CP that a rotation's credentials are in force here (sent over the new client certificate). */
  ackCredentials(rotationId: string, body: CredentialsAckRequest): Promise<CredentialsAckResponse> {
    return this.call("POST", nodePaths.credentialsAck(this.options.nodeId, rotationId), body, credentialsAckResponse);
  }

  checkin(body: CheckinRequest): Promise<CheckinResponse> {
    return this.call("POST", nodePaths.checkin(this.options.nodeId), body, checkinResponse);
  }

  pullCommands(since: number): Promise<CommandsPullResponse> {
    return this.call("POST", nodePaths.commandsPull(this.options.nodeId, since), {}, commandsPullResponse);
  }

  async reportCommandResult(commandId: string, body: CommandResultRequest): Promise<void> {
    await this.call("POST", nodePaths.commandResult(this.options.nodeId, commandId), body, null);
  }

  pullConfigs(body: ConfigsPullRequest): Promise<ConfigsPullResponse> {
    return this.call("POST", nodePaths.configsPull(this.options.nodeId), body, configsPullResponse);
  }

  async ackConfigs(body: ConfigsAcksRequest): Promise<number> {
    return (await this.call("POST", nodePaths.configsAcks(this.options.nodeId), body, batchAcceptedResponse)).accepted;
  }

  async reportConfigErrors(body: ConfigsErrorsRequest): Promise<number> {
    return (await this.call("POST", nodePaths.configsErrors(this.options.nodeId), body, batchAcceptedResponse)).accepted;
  }

  /** A cloud function's script, as bytes (the caller checks its SHA-256 against the manifest). */
  async fetchCloudFunction(name: string, appId: string): Promise<Buffer> {
    return this.request("GET", nodePaths.cloudFunction(name, appId), undefined, async (body) => body);
  }

  pullDelta<S extends DeltaStream>(stream: S, since: number, limit?: number): Promise<DeltaResponse<S>> {
    const schema = DELTA_RESPONSE_SCHEMAS[stream] as unknown as z.ZodType<DeltaResponse<S>>;
    return this.call("GET", nodePaths.delta(this.options.nodeId, stream, since, limit), undefined, schema);
  }

  /**
   * Opens Channel 2 on its own pool. Resolves once the CP answered 200 with an event stream
   * (within the request timeout); the body then stays open until `signal` aborts or the CP ends it.
   */
  async openEventStream(signal: AbortSignal): Promise<ResponseBody> {
    // A stream is ended by destroying its own pool, never by aborting the request inside a live
    // pool: undici then re-queues the aborted request and opens a connection it drops mid-
    // handshake (nodejs/undici#5845), which the CP logs as a failed TLS handshake per node.
    // One stream, no body timeout: the subscriber watches ping frames for liveness itself.
    const dispatcher = new Agent({ connect: this.connect, connections: 1, bodyTimeout: 0, keepAliveTimeout: 1000 });
    this.replaceEventStream(dispatcher);
    const headersMs = this.options.requestTimeoutMs();
    const headersDeadline = deadlineSignal(
      this.options.scheduler,
      headersMs,
      () => new Error(`no event stream headers within ${headersMs} ms`),
    );
    const state = { timedOut: false, aborted: false };
    const headerPhase = new AbortController();
    const end = (reason: unknown) => {
      if (this.eventStream === dispatcher) this.replaceEventStream(null);
      headerPhase.abort(reason);
    };
    const onTimeout = () => {
      state.timedOut = true;
      end(headersDeadline.signal.reason);
    };
    const onAbort = () => {
      state.aborted = true;
      end(signal.reason);
    };
    headersDeadline.signal.addEventListener("abort", onTimeout, { once: true });
    signal.addEventListener("abort", onAbort, { once: true });
    this.closing.signal.addEventListener("abort", onAbort, { once: true });
    let opened = false;
    try {
      if (signal.aborted || this.closing.signal.aborted) onAbort();
      const res = await fetch(`${this.baseUrl}${nodePaths.events(this.options.nodeId)}`, {
        method: "GET",
        headers: { accept: "text/event-stream", "cache-control": "no-cache" },
        dispatcher,
        signal: headerPhase.signal,
      });
      if (res.status !== 200 || !res.body) {
        const text = res.body
          ? await readLimited(res.body, 64 * 1024).then(
              (b) => b.toString("utf8"),
              () => "",
            )
          : "";
        throw httpError(res.status, text);
      }
      const type = res.headers.get("content-type") ?? "";
      if (!type.startsWith("text/event-stream")) {
        await res.body.cancel().catch(() => undefined);
        throw new CpCallError("invalid_response", `event stream answered with content-type "${type}"`);
      }
      opened = true;
      // Past the headers the subscriber owns the body; aborting its signal ends the stream's pool.
      signal.addEventListener("abort", () => end(signal.reason), { once: true });
      return res.body;
    } catch (error) {
      throw classifyFetchError(error, state);
    } finally {
      // These listeners must not pile up on long-lived signals across reconnects.
      headersDeadline.cancel();
      headersDeadline.signal.removeEventListener("abort", onTimeout);
      signal.removeEventListener("abort", onAbort);
      this.closing.signal.removeEventListener("abort", onAbort);
      if (!opened && this.eventStream === dispatcher) this.replaceEventStream(null);
    }
  }

  /** Destroys the previous stream's pool (if any) and remembers the new one. */
  private replaceEventStream(next: Agent | null): void {
    const previous = this.eventStream;
    this.eventStream = next;
    if (previous && previous !== next) void previous.destroy().catch(() => undefined);
  }

  /** Aborts whatever is in flight and closes both pools (nothing is left open). Idempotent. */
  close(): Promise<void> {
    this.closed ??= this.closePools();
    return this.closed;
  }

  private async closePools(): Promise<void> {
    // Destroying the pools fails what is in flight without the reconnect an abort would cause
    // (see request()); the closing signal then releases an event stream still in its header phase.
    const stream = this.eventStream;
    this.eventStream = null;
    const destroyed = Promise.all([
      this.shortCalls.destroy().catch(() => undefined),
      stream?.destroy().catch(() => undefined),
      ...[...this.retiredPools].map((pool) => pool.destroy().catch(() => undefined)),
    ]);
    this.closing.abort(new Error("CP client closed"));
    await destroyed;
  }

  private call<T>(method: "GET" | "POST", path: string, body: unknown, schema: z.ZodType<T> | null): Promise<T> {
    return this.request(method, path, body, async (bytes) => {
      if (schema === null) return undefined as T;
      let json: unknown;
      try {
        json = parseJson(bytes.toString("utf8"), MAX_JSON_DEPTH);
      } catch (error) {
        throw new CpCallError("invalid_response", `${method} ${routeOf(path)}: response is not JSON (${(error as Error).message})`);
      }
      const parsed = schema.safeParse(json);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new CpCallError(
          "invalid_response",
          `${method} ${routeOf(path)}: response does not match the contract (${issue?.path.join(".") ?? ""}: ${issue?.message ?? "invalid"})`,
        );
      }
      return parsed.data;
    });
  }

  /**
   * The deadline is undici's own headers and body timeouts, not an abort: aborting a request
   * inside the shared pool makes undici open a connection it then drops mid-handshake
   * (nodejs/undici#5845), a false "[TLS] handshake.failed" on the CP for every timed-out call.
   * The headers must arrive within the deadline and no gap between body chunks may exceed it;
   * a backstop abort ends a call that trickles on past twice the deadline (undici checks its
   * timeouts on a ~0.5 s tick, so the backstop leaves at least 2 s for them to fire first).
   */
  private async request<T>(method: "GET" | "POST", path: string, body: unknown, decode: (bytes: Buffer) => Promise<T>): Promise<T> {
    const deadlineMs = this.options.requestTimeoutMs();
    const state = { timedOut: false, aborted: false };
    const backstop = new AbortController();
    const { scheduler } = this.options;
    const cancelBackstop = scheduler.setTimer(deadlineMs + Math.max(deadlineMs, BACKSTOP_MIN_MARGIN_MS), () => {
      state.timedOut = true;
      backstop.abort(new Error("request timed out"));
    });
    // undici acts on neither its timeouts nor an abort before it has a connection (its connect
    // timeout is a fixed 10 s): a CP that accepts TCP but stalls the handshake is given up on
    // here, without touching the request; the backstop still ends it in the pool later.
    let cancelConnectDeadline: CancelTimer = () => {};
    const connectDeadline = new Promise<never>((_resolve, reject) => {
      cancelConnectDeadline = scheduler.setTimer(deadlineMs + CONNECT_GRACE_MS, () =>
        reject(new CpCallError("timeout", `request timed out: no answer within ${deadlineMs} ms`)),
      );
    });
    let gaveUp = false;
    try {
      if (this.closing.signal.aborted) throw new CpCallError("aborted", "request aborted: the agent is stopping");
      const pending = this.shortCalls.request({
        origin: this.origin,
        path: `${this.pathPrefix}${path}`,
        method,
        headers: body === undefined ? { accept: "application/json" } : { accept: "application/json", "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        headersTimeout: deadlineMs,
        bodyTimeout: deadlineMs,
        signal: backstop.signal,
      });
      const res = await Promise.race([pending, connectDeadline]).catch((error: unknown) => {
        if (error instanceof CpCallError && error.kind === "timeout") {
          gaveUp = true;
          // Whatever arrives later is read and dropped (destroying it would abort inside the pool).
          pending
            .then(
              (late) => late.body.dump(),
              () => undefined,
            )
            .catch(() => undefined);
        }
        throw error;
      });
      cancelConnectDeadline();
      const bytes = await readLimited(res.body, this.maxBytes);
      if (res.statusCode < 200 || res.statusCode > 299) throw httpError(res.statusCode, bytes.toString("utf8"));
      return await decode(bytes);
    } catch (error) {
      // close() destroys the pool under calls in flight: that is an abort, not a network failure.
      state.aborted = this.closing.signal.aborted;
      throw classifyFetchError(error, state);
    } finally {
      cancelConnectDeadline();
      if (!gaveUp) cancelBackstop();
    }
  }
}

/** How long past the deadline a call may wait for undici to connect before it is given up on (ms). */
const CONNECT_GRACE_MS = 2000;

/** The least time past the deadline before the backstop abort (ms): undici's own timeouts should win. */
const BACKSTOP_MIN_MARGIN_MS = 2000;

/** The path without ids, for messages: /cp/v2/nodes/<id>/checkin → checkin. */
function routeOf(path: string): string {
  const nodes = `${CP_API_PREFIX}/nodes/`;
  const route = path.startsWith(nodes) ? path.slice(path.indexOf("/", nodes.length) + 1) : path;
  return route.replace(/\?.*$/, "");
}

/**
 * Reads a body (a Node stream from the pool's request API, or the event stream's web stream)
 * to the end, refusing (not truncating) one larger than `limit`. Leaving the loop early
 * destroys or cancels the body.
 */
async function readLimited(body: AsyncIterable<Uint8Array>, limit: number): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    if (total > limit) throw new CpCallError("invalid_response", `response larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}
