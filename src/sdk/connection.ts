/**
 * One framed connection to a node: requests matched to their answers by request id, pushes and
 * connection-level errors (request id 0) handed to the owner, and one close that fails every
 * request still waiting. It knows nothing of logins or reconnection (./client.ts does).
 */
import type { TLSSocket } from "node:tls";
import { AuthNexusError, errorFromProtocol, isAuthNexusError } from "../shared/errors/index.js";
import {
  DEFAULT_MAX_FRAME_BYTES,
  type Decoded,
  decodeMessage,
  ERRORS_ENDING_CONNECTION,
  encodeMessage,
  FrameDecoder,
  type Message,
  type MessageName,
  NO_REQUEST,
} from "../shared/protocol/index.js";
import type { CancelTimer, Scheduler } from "../shared/time/index.js";

export type RequestName =
  | "hello"
  | "register"
  | "login_password"
  | "login_card"
  | "login_token"
  | "heartbeat"
  | "logout"
  | "call_function"
  | "get_variables"
  | "get_user_variables"
  | "set_user_variable";
/** The answer each request expects when it succeeds. */
interface Answers {
  hello: "hello_ok";
  register: "auth_ok";
  login_password: "auth_ok";
  login_card: "auth_ok";
  login_token: "auth_ok";
  heartbeat: "heartbeat_ack";
  logout: "ok";
  call_function: "function_result";
  get_variables: "variables";
  get_user_variables: "variables";
  set_user_variable: "ok";
}
export type AnswerOf<R extends RequestName> = Message<Answers[R]>;

const EXPECTED: { [R in RequestName]: Answers[R] } = {
  hello: "hello_ok",
  register: "auth_ok",
  login_password: "auth_ok",
  login_card: "auth_ok",
  login_token: "auth_ok",
  heartbeat: "heartbeat_ack",
  logout: "ok",
  call_function: "function_result",
  get_variables: "variables",
  get_user_variables: "variables",
  set_user_variable: "ok",
};

interface Pending {
  expected: MessageName;
  resolve: (body: unknown) => void;
  reject: (error: AuthNexusError) => void;
  cancelTimer: CancelTimer;
}

export interface ConnectionEvents {
  push(body: Message<"push">): void;
  /** Once; `error` is why (null for a close this side asked for). */
  closed(error: AuthNexusError | null): void;
}

const MAX_REQUEST_ID = 0xffff_ffff;
/** How long a node may take to close its side after ours, before the socket is cut (ms). */
const CLOSE_GRACE_MS = 1000;

export class NodeConnection {
  private readonly decoder: FrameDecoder;
  private readonly pending = new Map<number, Pending>();
  private nextRequestId = 1;
  private closeReason: AuthNexusError | null = null;
  private closedByUs = false;
  private done = false;
  private markClosed: () => void = () => {};
  /** Settles once the socket has closed. */
  readonly whenClosed = new Promise<void>((resolve) => {
    this.markClosed = resolve;
  });
  maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;

  constructor(
    private readonly socket: TLSSocket,
    private readonly scheduler: Scheduler,
    private readonly events: ConnectionEvents,
  ) {
    this.decoder = new FrameDecoder(DEFAULT_MAX_FRAME_BYTES);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (error: Error) => {
      this.closeReason ??= new AuthNexusError("CONNECTION_CLOSED", {
        message: `The connection to the node failed: ${error.message}.`,
        cause: error,
      });
    });
    socket.on("close", () => this.finish());
  }

  get closed(): boolean {
    return this.done;
  }

  request<R extends RequestName>(name: R, body: Message<R>, timeoutMs: number): Promise<AnswerOf<R>> {
    if (this.done) return Promise.reject(this.closeReason ?? closedError());
    const requestId = this.takeRequestId();
    const frame = encodeMessage(name, requestId, body, this.maxFrameBytes);
    return new Promise<AnswerOf<R>>((resolve, reject) => {
      const cancelTimer = this.scheduler.setTimer(timeoutMs, () => {
        this.pending.delete(requestId);
        reject(new AuthNexusError("REQUEST_TIMEOUT", { message: `The node did not answer ${name} within ${timeoutMs} ms.` }));
      });
      this.pending.set(requestId, { expected: EXPECTED[name], resolve: resolve as (body: unknown) => void, reject, cancelTimer });
      this.socket.write(frame);
    });
  }

  /** Closes the connection; requests still waiting fail with CLIENT_CLOSED. */
  close(): void {
    if (this.done) return;
    this.closedByUs = true;
    this.closeReason ??= new AuthNexusError("CLIENT_CLOSED");
    this.socket.end();
    // A node that does not answer the close within a second is cut.
    this.scheduler.setTimer(CLOSE_GRACE_MS, () => this.socket.destroy(), { background: true });
  }

  private takeRequestId(): number {
    const id = this.nextRequestId;
    this.nextRequestId = id >= MAX_REQUEST_ID ? 1 : id + 1;
    return id;
  }

  private onData(chunk: Buffer): void {
    let frames: ReturnType<FrameDecoder["push"]>;
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      this.abort(error);
      return;
    }
    for (const frame of frames) {
      let message: Decoded | null;
      try {
        message = decodeMessage(frame);
      } catch (error) {
        this.abort(error);
        return;
      }
      // A type this SDK does not know (a newer node) is skipped: pushes may grow.
      if (message !== null) this.dispatch(message);
    }
    const failure = this.decoder.takeError();
    if (failure) this.abort(failure);
  }

  private dispatch(message: Decoded): void {
    if (message.requestId === NO_REQUEST) {
      if (message.name === "push") this.events.push(message.body);
      // A connection-level error: the node is about to close; that error is why.
      else if (message.name === "error") this.closeReason = errorFromProtocol(message.body.code, message.body.message);
      return;
    }
    const pending = this.pending.get(message.requestId);
    if (!pending) return; // timed out already
    this.pending.delete(message.requestId);
    pending.cancelTimer();
    if (message.name === "error") {
      const error = errorFromProtocol(message.body.code, message.body.message);
      pending.reject(error);
      // An error answer that ends the connection explains the close too.
      if (ERRORS_ENDING_CONNECTION.has(error.code)) this.closeReason = error;
    } else if (message.name !== pending.expected) {
      pending.reject(
        new AuthNexusError("PROTOCOL_ERROR", { message: `The node answered ${message.name} where ${pending.expected} was due.` }),
      );
    } else {
      pending.resolve(message.body);
    }
  }

  private abort(error: unknown): void {
    this.closeReason = isAuthNexusError(error)
      ? error
      : new AuthNexusError("PROTOCOL_ERROR", { message: `The node sent a frame this SDK cannot read: ${(error as Error).message}.` });
    this.socket.destroy();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    const reason = this.closeReason ?? closedError();
    for (const pending of this.pending.values()) {
      pending.cancelTimer();
      pending.reject(reason);
    }
    this.pending.clear();
    this.markClosed();
    this.events.closed(this.closedByUs ? null : reason);
  }
}

function closedError(): AuthNexusError {
  return new AuthNexusError("CONNECTION_CLOSED");
}
