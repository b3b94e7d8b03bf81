/**
 * One SDK connection on the business port, after its TLS handshake: frames in, answers and
 * pushes out. The connection owns the protocol's mechanics — framing with the size checked
 * before buffering, request order, the hello-first rule, deadlines, backpressure and how it
 * ends — and hands each decoded request to its host (the edge), which owns what requests mean.
 *
 * Requests are served one at a time in arrival order (a login finishes before the next request
 * sees its session); heartbeats are answered at once, even behind a slow request. Requests may
 * be pipelined right behind the hello: they wait for it like any request waits for the one
 * before it (a heartbeat too, until the hello is done). A frame that cannot be decoded, or an
 * error that ends the conversation, is answered with an error frame and the connection closes;
 * nothing one connection sends can affect another.
 *
 * Before the hello is done a connection lives on its handshake deadline alone: frames that
 * arrive then do not extend it, so a client cannot hold a connection without ever saying hello.
 */
import type { TLSSocket } from "node:tls";
import { BUSINESS_CLOSE_GRACE_MS, BUSINESS_MAX_QUEUED_REQUESTS, BUSINESS_MAX_UNREAD_BYTES } from "../../shared/config/defaults.js";
import { AuthNexusError, errorToProtocol } from "../../shared/errors/index.js";
import {
  type Decoded,
  decodeMessage,
  ERRORS_ENDING_CONNECTION,
  encodeMessage,
  FrameDecoder,
  isRequestType,
  LIMITS,
  type LoginMethod,
  type Message,
  NO_REQUEST,
  type PushKind,
  type Value,
} from "../../shared/protocol/index.js";
import type { Scheduler } from "../../shared/time/index.js";

/** The session a connection is logged in with. */
export interface LiveSession {
  sessionId: string;
  /** Null for a card-only login. */
  userId: string | null;
  username: string | null;
  cardKeyId: string | null;
  method: LoginMethod;
  /** The user's auth epoch the session was minted under: a newer one ends it. */
  authEpoch: number;
  expiresAt: number;
  /** When last_heartbeat_at was last written (it is written at most every SESSION_TOUCH_INTERVAL_MS). */
  touchedAt: number;
}

/** What a connection needs from the edge that accepted it. */
export interface ConnectionHost {
  readonly scheduler: Scheduler;
  readonly maxFrameBytes: number;
  /** Serves one request; returns the answer frame. Thrown errors are answered as error frames. */
  serve(connection: BusinessConnection, request: Decoded): Promise<Buffer>;
  /** Heartbeats are answered at once, outside the request queue (once the hello is done). */
  heartbeat(connection: BusinessConnection, requestId: number): Buffer;
  /** The idle deadline after a frame arrived. */
  idleTimeoutMs(): number;
  /** Called once, when the connection has closed. */
  closed(connection: BusinessConnection, reason: string): void;
  /** An unexpected error was answered INTERNAL: the host logs it with its stack. */
  internalError(connection: BusinessConnection, error: AuthNexusError): void;
}

let nextConnectionId = 0;

export class BusinessConnection {
  readonly id = ++nextConnectionId;
  readonly ip: string;
  readonly openedAt: number;
  /** The application named by the client certificate's URI SAN (layer 2). */
  readonly certAppId: string;
  /** Set by a successful hello. */
  appId: string | null = null;
  deviceId: string | null = null;
  session: LiveSession | null = null;
  /** Epoch ms by which the next frame (hello, then anything) must arrive. */
  deadline: number;
  requests = 0;
  private readonly decoder: FrameDecoder;
  private queue: Promise<void> = Promise.resolve();
  /** Requests accepted and not yet answered: the one being served and those waiting behind it. */
  private pending = 0;
  /** A hello frame has arrived (it may still wait to be served). */
  private helloSeen = false;
  private closing = false;
  private closeReason = "client closed";

  constructor(
    private readonly socket: TLSSocket,
    private readonly host: ConnectionHost,
    certAppId: string,
    handshakeDeadline: number,
  ) {
    this.ip = socket.remoteAddress ?? "unknown";
    this.certAppId = certAppId;
    this.openedAt = host.scheduler.clock.now();
    this.deadline = handshakeDeadline;
    this.decoder = new FrameDecoder(host.maxFrameBytes);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => undefined);
    socket.once("close", () => this.host.closed(this, this.closeReason));
  }

  get ready(): boolean {
    return this.appId !== null;
  }

  get closed(): boolean {
    return this.closing;
  }

  /** Sends a push frame (request id 0). */
  push(kind: PushKind, body: { level?: Message<"push">["level"]; message: string; reason?: string | null; data?: Value }): void {
    this.send(
      encodeMessage("push", NO_REQUEST, {
        kind,
        level: body.level ?? "info",
        message: body.message,
        reason: body.reason ?? null,
        data: body.data ?? null,
      }),
    );
  }

  /**
   * Ends the connection: an error frame first when there is one to tell (answering `requestId`,
   * or 0), then a graceful TLS close, and a hard cut if the client does not read it in time.
   */
  end(error: AuthNexusError | null, requestId = NO_REQUEST, reason?: string): void {
    if (this.closing) return;
    this.closeReason = reason ?? error?.code ?? "closed by the node";
    if (error) this.sendError(error, requestId);
    this.closing = true;
    this.socket.end();
    const cancel = this.host.scheduler.setTimer(BUSINESS_CLOSE_GRACE_MS, () => this.socket.destroy(), { background: true });
    this.socket.once("close", cancel);
  }

  /** Cuts the connection at once (shutdown, a peer that stopped reading). */
  destroy(reason: string): void {
    if (!this.closing) this.closeReason = reason;
    this.closing = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    let frames: ReturnType<FrameDecoder["push"]>;
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      this.fail(error, NO_REQUEST);
      return;
    }
    for (const frame of frames) {
      if (this.closing) return;
      let request: Decoded | null;
      try {
        // The version first (it decides how the rest reads), then flags and payload, then the direction.
        request = decodeMessage(frame);
        if (!isRequestType(frame.type)) throw new AuthNexusError("PROTOCOL_ERROR", { message: "A client sends requests only." });
      } catch (error) {
        this.fail(error, frame.requestId);
        return;
      }
      if (request === null) {
        if (!this.helloSeen) {
          this.end(new AuthNexusError("HANDSHAKE_REQUIRED"), frame.requestId);
          return;
        }
        this.touch();
        this.sendError(
          new AuthNexusError("MESSAGE_UNSUPPORTED", { message: `This node does not know message type 0x${frame.type.toString(16)}.` }),
          frame.requestId,
        );
        continue;
      }
      this.accept(request);
    }
    // A bad length after those frames: they are answered first (nothing more is read), then
    // the connection ends, however TCP split the stream.
    const failure = this.decoder.takeError();
    if (failure && !this.closing) {
      this.socket.pause();
      void this.queue.then(() => {
        if (!this.closing) this.fail(failure, NO_REQUEST);
      });
    }
  }

  /** A frame arrived: once the hello is done, the idle deadline starts again. */
  private touch(): void {
    if (this.ready) this.deadline = this.host.scheduler.clock.now() + this.host.idleTimeoutMs();
  }

  private accept(request: Decoded): void {
    this.requests += 1;
    if (request.name === "hello") {
      if (this.helloSeen) {
        this.end(new AuthNexusError("PROTOCOL_ERROR", { message: "hello is sent once." }), request.requestId);
        return;
      }
      this.helloSeen = true;
    } else if (!this.helloSeen) {
      this.end(new AuthNexusError("HANDSHAKE_REQUIRED"), request.requestId);
      return;
    }
    this.touch();
    if (request.name === "heartbeat" && this.ready) {
      try {
        this.send(this.host.heartbeat(this, request.requestId));
      } catch (error) {
        this.answerError(error, request.requestId);
      }
      return;
    }
    if (this.pending > BUSINESS_MAX_QUEUED_REQUESTS) {
      this.end(
        new AuthNexusError("PROTOCOL_ERROR", { message: `More than ${BUSINESS_MAX_QUEUED_REQUESTS} requests waiting.` }),
        request.requestId,
      );
      return;
    }
    this.pending += 1;
    this.queue = this.queue.then(async () => {
      try {
        if (this.closing) return;
        // A heartbeat queued behind a hello that was still waiting when it arrived.
        this.send(request.name === "heartbeat" ? this.host.heartbeat(this, request.requestId) : await this.host.serve(this, request));
      } catch (error) {
        this.answerError(error, request.requestId);
      } finally {
        this.pending -= 1;
      }
    });
  }

  /** A frame that cannot be read: its error (INTERNAL, logged, if it was no protocol error), then the connection ends. */
  private fail(error: unknown, requestId: number): void {
    const mapped = errorToProtocol(error);
    if (mapped.concealed) this.host.internalError(this, mapped.error);
    this.end(mapped.error, requestId);
  }

  private answerError(error: unknown, requestId: number): void {
    const mapped = errorToProtocol(error);
    if (mapped.concealed) this.host.internalError(this, mapped.error);
    if (ERRORS_ENDING_CONNECTION.has(mapped.error.code)) this.end(mapped.error, requestId);
    else this.sendError(mapped.error, requestId);
  }

  private sendError(error: AuthNexusError, requestId: number): void {
    const mapped = errorToProtocol(error);
    this.send(
      encodeMessage("error", requestId, {
        code: mapped.wire,
        retryable: mapped.retryable,
        message: truncateUtf8(mapped.message, LIMITS.errorMessage),
      }),
    );
  }

  private send(frame: Buffer): void {
    if (this.closing || this.socket.destroyed) return;
    this.socket.write(frame);
    // A client that stops reading is not allowed to make the node hold its output forever.
    if (this.socket.writableLength > BUSINESS_MAX_UNREAD_BYTES) this.destroy("client stopped reading");
  }
}

/** At most `maxBytes` of UTF-8, cut on a character boundary and marked with "…" (3 bytes). */
function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  // Every character takes at least one byte: nothing past maxBytes characters can be kept.
  const characters = [...text].slice(0, maxBytes);
  while (characters.length > 0 && Buffer.byteLength(characters.join("")) > maxBytes - 3) characters.pop();
  return `${characters.join("")}…`;
}
