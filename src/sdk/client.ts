/**
 * The client a vendor's program holds: one persistent, trusted connection to a node of the
 * deployment, the logins as typed async calls, automatic heartbeats, pushes as events, and
 * reconnection — to the next node when one is lost, logging back in with the session's token.
 *
 *   const client = await AuthNexusClient.connect({ config: "authnexus-sdk.json", appSecret, deviceId });
 *   const session = await client.loginPassword("alice", "correct horse");
 *   client.on("announcement", (push) => showBanner(push.message));
 *
 * Pushes: `announcement` is informational; `force_logout` ends the session (the node closes
 * the connection, and the client stays disconnected until the next call); `kill_process` ends
 * the session and closes this client for good — a program honouring it exits in its handler.
 */
import { EventEmitter } from "node:events";
import { SDK_CONNECT_TIMEOUT_MS, SDK_RECONNECT_BASE_MS, SDK_RECONNECT_MAX_MS, SDK_REQUEST_TIMEOUT_MS } from "../shared/config/defaults.js";
import { AuthNexusError, type ErrorCode, isAuthNexusError } from "../shared/errors/index.js";
import { DEFAULT_MAX_FRAME_BYTES, LIMITS, type LoginMethod, type Message, type PushKind, type Value } from "../shared/protocol/index.js";
import { type CancelTimer, every, type Scheduler, systemScheduler } from "../shared/time/index.js";
import { loadSdkConfig, type NodeAddress, type SdkConfig } from "./config.js";
import { type AnswerOf, NodeConnection, type RequestName } from "./connection.js";
import { openTrustedSocket } from "./transport.js";

export const SDK_VERSION = "authnexus-sdk-ts/1";

export interface ConnectOptions {
  /** Path of authnexus-sdk.json, or a config loaded with loadSdkConfig(). */
  config: string | SdkConfig;
  /** The application secret (never in the config file). */
  appSecret: string;
  /** A stable id of this installation: 1-128 printable ASCII characters. Sessions and card keys bind to it. */
  deviceId: string;
  /** Reconnect after a lost connection and log back in with the session's token (default true). */
  reconnect?: boolean;
  requestTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Timers and the clock staples are judged by (default: the system's). */
  scheduler?: Scheduler;
}

export interface Session {
  method: LoginMethod;
  /** Null for a card key login of a card not tied to an account. */
  userId: string | null;
  username: string | null;
  /** The 32-byte session token: save it to log in again with loginToken() without a password. */
  token: Buffer;
  /** Epoch ms. */
  expiresAt: number;
  /** Epoch ms, for card key logins. */
  cardExpiresAt: number | null;
}

export interface ConnectedNode extends NodeAddress {
  nodeId: string;
  /** "verified": the node stapled a good, fresh OCSP response; "unstapled": none, with must-staple off. */
  staple: "verified" | "unstapled";
  heartbeatIntervalMs: number;
}

export interface Push {
  kind: PushKind;
  level: "info" | "warning" | "critical";
  message: string;
  reason: string | null;
  data: Value;
}

export interface Registration {
  username: string;
  password: string;
  email?: string;
  inviteCode?: string;
}

type ClientEvents = {
  announcement: [Push];
  force_logout: [Push];
  kill_process: [Push];
  /** The connection was lost; the client reconnects unless told not to. */
  disconnected: [AuthNexusError];
  /** A lost connection was re-established (and the session restored when there was one). */
  reconnected: [ConnectedNode];
  /** The session ended without a push: it expired, was revoked, or could not be restored. */
  session_ended: [AuthNexusError];
};

/** Refusals no other node and no retry would change: the client stops trying. */
const FINAL_REFUSALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "APP_CREDENTIALS_INVALID",
  "APP_DISABLED",
  "CLIENT_CERT_REFUSED",
  "ACCESS_DENIED",
  "SDK_CONFIG_INVALID",
]);

export class AuthNexusClient extends EventEmitter<ClientEvents> {
  private connection: NodeConnection | null = null;
  private node_: ConnectedNode | null = null;
  private session_: Session | null = null;
  private connecting: Promise<NodeConnection> | null = null;
  private stopHeartbeats: CancelTimer | null = null;
  private cancelReconnect: CancelTimer | null = null;
  private reconnectAttempt = 0;
  /** Where the next connection attempt starts: the node after the one last lost. */
  private nextNode = 0;
  private closed_ = false;
  /** Set by a force_logout or kill_process push: the close that follows is not a loss to repair. */
  private pushedOut = false;
  private readonly requestTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly scheduler: Scheduler;

  private constructor(
    private readonly config: SdkConfig,
    private readonly options: ConnectOptions,
  ) {
    super();
    this.requestTimeoutMs = options.requestTimeoutMs ?? SDK_REQUEST_TIMEOUT_MS;
    this.connectTimeoutMs = options.connectTimeoutMs ?? SDK_CONNECT_TIMEOUT_MS;
    this.scheduler = options.scheduler ?? systemScheduler;
  }

  /** Loads the config, connects to the first node that accepts this application, and says hello. */
  static async connect(options: ConnectOptions): Promise<AuthNexusClient> {
    checkDeviceId(options.deviceId);
    checkLength("appSecret", options.appSecret, LIMITS.appSecret);
    const config = typeof options.config === "string" ? await loadSdkConfig(options.config) : options.config;
    if (config.nodes.length === 0) throw new AuthNexusError("SDK_CONFIG_INVALID", { message: "The SDK config names no node." });
    const client = new AuthNexusClient(config, options);
    await client.establish();
    return client;
  }

  /** The node this client is connected to, or null while disconnected. */
  get node(): ConnectedNode | null {
    return this.node_;
  }

  get session(): Session | null {
    return this.session_;
  }

  get connected(): boolean {
    return this.connection !== null && !this.connection.closed;
  }

  get closed(): boolean {
    return this.closed_;
  }

  async register(registration: Registration): Promise<Session> {
    const answer = await this.call("register", {
      username: registration.username,
      password: registration.password,
      email: registration.email ?? null,
      invite_code: registration.inviteCode ?? null,
    });
    return this.loggedIn(answer);
  }

  async loginPassword(username: string, password: string): Promise<Session> {
    return this.loggedIn(await this.call("login_password", { username, password }));
  }

  async loginCard(cardKey: string): Promise<Session> {
    return this.loggedIn(await this.call("login_card", { card_key: cardKey }));
  }

  /** Logs in with a saved session token (the Buffer from Session.token, or its base64). */
  async loginToken(token: Buffer | string): Promise<Session> {
    const bytes = typeof token === "string" ? Buffer.from(token, "base64") : token;
    if (bytes.length !== LIMITS.token)
      throw new AuthNexusError("VALIDATION_FAILED", { message: `A session token is ${LIMITS.token} bytes.` });
    return this.loggedIn(await this.call("login_token", { token: bytes }));
  }

  /** Ends the session on every node (the token stops working); the connection stays open. */
  async logout(): Promise<void> {
    await this.call("logout", {});
    this.session_ = null;
  }

  /**
   * Runs the application's cloud function `name` with `params` (a protocol value: nil, booleans,
   * numbers, strings, arrays and plain objects) and resolves with what it returned. Needs a
   * logged-in session. Fails with FUNCTION_NOT_FOUND (unknown or disabled), FUNCTION_TIMEOUT,
   * FUNCTION_BUSY (retryable), FUNCTION_ERROR (the script raised an error; its message is in the
   * error), FUNCTION_MEMORY_EXCEEDED or FUNCTION_RESULT_INVALID.
   */
  async callFunction(name: string, params: Value = null): Promise<Value> {
    return (await this.call("call_function", { name, params })).value;
  }

  /**
   * The application's cloud variables this client may read: every variable once logged in, only
   * the ones the vendor made public before. With `name`, that one variable (undefined when it
   * does not exist or is not readable yet).
   */
  async variables(): Promise<Record<string, Value>>;
  async variables(name: string): Promise<Value | undefined>;
  async variables(name?: string): Promise<Record<string, Value> | Value | undefined> {
    const values = asMap((await this.call("get_variables", { name: name ?? null })).values);
    return name === undefined ? values : values[name];
  }

  /** The logged-in user's own variables, or with `key` that one (undefined when unset). */
  async userVariables(): Promise<Record<string, string>>;
  async userVariables(key: string): Promise<string | undefined>;
  async userVariables(key?: string): Promise<Record<string, string> | string | undefined> {
    const values = asMap((await this.call("get_user_variables", { key: key ?? null })).values) as Record<string, string>;
    return key === undefined ? values : values[key];
  }

  /** Sets one of the logged-in user's variables, or deletes it with null. */
  async setUserVariable(key: string, value: string | null): Promise<void> {
    await this.call("set_user_variable", { key, value });
  }

  /** A heartbeat now; resolves with the node's clock. Heartbeats are also sent automatically. */
  async heartbeat(): Promise<number> {
    return (await this.call("heartbeat", {})).server_time;
  }

  /** Closes the connection for good; calls still waiting fail with CLIENT_CLOSED. */
  async close(): Promise<void> {
    if (this.closed_) return;
    this.closed_ = true;
    this.stopTimers();
    const connection = this.connection;
    this.connection = null;
    this.node_ = null;
    if (connection && !connection.closed) {
      connection.close();
      await connection.whenClosed;
    }
  }

  // ---- requests ----------------------------------------------------------------------------

  private async call<R extends Exclude<RequestName, "hello">>(name: R, body: Message<R>): Promise<AnswerOf<R>> {
    const connection = await this.ready();
    try {
      return await connection.request(name, body, this.requestTimeoutMs);
    } catch (error) {
      if (isAuthNexusError(error, "SESSION_ENDED")) this.endSession(error);
      throw error;
    }
  }

  private loggedIn(answer: Message<"auth_ok">): Session {
    this.session_ = {
      method: answer.method,
      userId: answer.user_id,
      username: answer.username,
      token: Buffer.from(answer.token),
      expiresAt: answer.session_expires_at,
      cardExpiresAt: answer.card_expires_at,
    };
    return this.session_;
  }

  /** The live connection; after a push ended the last one, a new one is made on demand. */
  private async ready(): Promise<NodeConnection> {
    if (this.closed_) throw new AuthNexusError("CLIENT_CLOSED");
    const current = this.connection;
    if (current && !current.closed) {
      if (!this.pushedOut) return current;
      // The node is closing this connection after its push: nothing more is sent on it.
      current.close();
      await current.whenClosed;
    }
    if (this.closed_) throw new AuthNexusError("CLIENT_CLOSED");
    if (this.connecting) return this.connecting;
    if (this.cancelReconnect) {
      // Waiting out a backoff: try now, a caller is waiting.
      this.cancelReconnect();
      this.cancelReconnect = null;
    }
    return this.establish();
  }

  // ---- connecting --------------------------------------------------------------------------

  /** Tries every node once, starting with `nextNode`; the first that accepts the hello wins. */
  private establish(): Promise<NodeConnection> {
    this.connecting ??= this.tryNodes().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async tryNodes(): Promise<NodeConnection> {
    const failures: AuthNexusError[] = [];
    const count = this.config.nodes.length;
    for (let i = 0; i < count; i++) {
      const index = (this.nextNode + i) % count;
      const address = this.config.nodes[index] as NodeAddress;
      try {
        const connection = await this.open(address);
        this.nextNode = index;
        return connection;
      } catch (error) {
        const failure = isAuthNexusError(error) ? error : new AuthNexusError("NODE_UNREACHABLE", { message: String(error), cause: error });
        if (FINAL_REFUSALS.has(failure.code) || this.closed_) throw failure;
        failures.push(failure);
      }
    }
    throw summarise(failures);
  }

  private async open(address: NodeAddress): Promise<NodeConnection> {
    const { socket, staple } = await openTrustedSocket(address, this.config.trust, {
      timeoutMs: this.connectTimeoutMs,
      scheduler: this.scheduler,
    });
    const connection = new NodeConnection(socket, this.scheduler, {
      push: (body) => this.pushed(body),
      closed: (error) => this.lost(connection, error),
    });
    let hello: Message<"hello_ok">;
    try {
      hello = await connection.request(
        "hello",
        { app_id: this.config.appId, app_secret: this.options.appSecret, device_id: this.options.deviceId, sdk_version: SDK_VERSION },
        this.connectTimeoutMs,
      );
    } catch (error) {
      connection.close();
      throw error;
    }
    if (this.closed_) {
      connection.close();
      throw new AuthNexusError("CLIENT_CLOSED");
    }
    connection.maxFrameBytes = Math.min(DEFAULT_MAX_FRAME_BYTES, hello.max_frame_bytes);
    this.connection = connection;
    this.pushedOut = false;
    this.node_ = { ...address, nodeId: hello.node_id, staple: staple.kind, heartbeatIntervalMs: hello.heartbeat_interval_ms };
    this.startHeartbeats(connection, hello.heartbeat_interval_ms);
    return connection;
  }

  // ---- heartbeats, pushes, losses ----------------------------------------------------------

  private startHeartbeats(connection: NodeConnection, intervalMs: number): void {
    this.stopHeartbeats?.();
    // Background: the socket keeps the program alive while connected; the timer need not.
    this.stopHeartbeats = every(
      this.scheduler,
      intervalMs,
      () => {
        if (connection.closed) return;
        connection.request("heartbeat", {}, this.requestTimeoutMs).catch((error: unknown) => {
          if (isAuthNexusError(error, "SESSION_ENDED")) this.endSession(error);
          // Anything else: the connection's close (if it comes) is handled by lost().
        });
      },
      { background: true },
    );
  }

  private pushed(body: Message<"push">): void {
    const push: Push = { kind: body.kind, level: body.level, message: body.message, reason: body.reason, data: body.data };
    if (push.kind === "force_logout" || push.kind === "kill_process") {
      this.pushedOut = true;
      this.session_ = null;
    }
    if (push.kind === "kill_process") void this.close();
    this.emit(push.kind, push);
  }

  private endSession(error: AuthNexusError): void {
    if (this.session_ === null) return;
    this.session_ = null;
    this.emit("session_ended", error);
  }

  private lost(connection: NodeConnection, error: AuthNexusError | null): void {
    if (this.connection !== connection) return; // a connection that never got past hello
    this.connection = null;
    this.node_ = null;
    this.stopHeartbeats?.();
    this.stopHeartbeats = null;
    if (this.closed_ || error === null) return;
    this.emit("disconnected", error);
    // After a push the node ended the session on purpose: the next call reconnects, if any comes.
    if (this.pushedOut || this.options.reconnect === false || FINAL_REFUSALS.has(error.code)) return;
    this.nextNode = (this.nextNode + 1) % this.config.nodes.length;
    this.scheduleReconnect(0);
  }

  private scheduleReconnect(delayMs: number): void {
    this.cancelReconnect = this.scheduler.setTimer(
      delayMs,
      () => {
        this.cancelReconnect = null;
        void this.reconnect();
      },
      { background: true },
    );
  }

  private async reconnect(): Promise<void> {
    if (this.closed_ || this.connection) return;
    try {
      await this.establish();
    } catch (error) {
      if (this.closed_ || (isAuthNexusError(error) && FINAL_REFUSALS.has(error.code))) return;
      this.reconnectAttempt += 1;
      const ceiling = Math.min(SDK_RECONNECT_MAX_MS, SDK_RECONNECT_BASE_MS * 2 ** Math.min(this.reconnectAttempt, 16));
      this.scheduleReconnect(Math.random() * ceiling);
      return;
    }
    this.reconnectAttempt = 0;
    await this.restoreSession();
    if (this.node_) this.emit("reconnected", this.node_);
  }

  /** Logs back in with the token of the session the lost connection carried. */
  private async restoreSession(): Promise<void> {
    const session = this.session_;
    const connection = this.connection;
    if (!session || !connection) return;
    try {
      const answer = await connection.request("login_token", { token: session.token }, this.requestTimeoutMs);
      this.loggedIn(answer);
    } catch (error) {
      const failure = isAuthNexusError(error) ? error : new AuthNexusError("SESSION_ENDED");
      // A retryable failure (node busy, connection lost again) keeps the session for the next try.
      if (!failure.retryable) this.endSession(failure);
    }
  }

  private stopTimers(): void {
    this.stopHeartbeats?.();
    this.cancelReconnect?.();
    this.stopHeartbeats = null;
    this.cancelReconnect = null;
  }
}

/** One error for "no node would do": the shared code when every node failed alike. */
function summarise(failures: AuthNexusError[]): AuthNexusError {
  const [first] = failures;
  if (first && failures.every((f) => f.code === first.code)) return first;
  return new AuthNexusError("NODE_UNREACHABLE", {
    message: `No node could be used: ${failures.map((f) => f.message).join(" | ")}`,
    detail: { codes: failures.map((f) => f.code) },
  });
}

function checkDeviceId(deviceId: string): void {
  if (!/^[\x21-\x7e]{1,128}$/.test(deviceId)) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: "deviceId must be 1-128 printable ASCII characters (no spaces)." });
  }
}

function checkLength(name: string, value: string, maxBytes: number): void {
  if (typeof value !== "string" || value.length === 0 || Buffer.byteLength(value) > maxBytes) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: `${name} must be 1-${maxBytes} bytes.` });
  }
}

/** A `variables` answer's map (the node always sends one; anything else is a protocol error). */
function asMap(values: Value): Record<string, Value> {
  if (values === null || typeof values !== "object" || Array.isArray(values))
    throw new AuthNexusError("PROTOCOL_ERROR", { message: "The node's variables answer is not a map." });
  return values;
}
