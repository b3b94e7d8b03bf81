/**
 * What each request on an SDK connection means: the business handshake (hello, layer 4), the
 * logins, heartbeats and logout. The security rules run on every request: the blacklist (IP and
 * device from the connection, the user from the session), the user's auth epoch, the session's
 * expiry, and fail-closed when the node's security caches are not current. A login is checked
 * once more after its session is on the connection, so a security change that arrived while it
 * was being written cannot leave it live.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Kysely } from "kysely";
import { SESSION_TOUCH_INTERVAL_MS } from "../../shared/config/defaults.js";
import type { RuntimeSchema } from "../../shared/db/index.js";
import { findCardById } from "../../shared/db/runtime/index.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import type { Logger } from "../../shared/log/index.js";
import { type Decoded, encodeMessage, LIMITS, type Message, type Value } from "../../shared/protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { NodeMetrics } from "../metrics.js";
import type { AppliedConfigStore } from "../state/config-store.js";
import type { AuthFlows, Caller, LoginResult } from "./auth-flows.js";
import type { CloudCaller, CloudCalls } from "./cloud-calls.js";
import type { BusinessConnection, ConnectionHost, LiveSession } from "./connection.js";
import type { ConnectionRegistry } from "./registry.js";
import type { SecurityState } from "./security-state.js";

export interface BusinessServiceOptions {
  nodeId: string;
  db: Kysely<RuntimeSchema>;
  store: AppliedConfigStore;
  registry: ConnectionRegistry;
  auth: AuthFlows;
  cloud: CloudCalls;
  security: SecurityState;
  clock: Clock;
  maxFrameBytes: number;
  log: { tls: Logger; security: Logger; server: Logger };
  /** Counts every answered request and every error answer, for the checkin's rates. */
  onRequest?: (failed: boolean) => void;
  /** Requests, logins and layer-4 handshake verdicts, for GET /metrics. */
  metrics?: NodeMetrics;
}

const DEVICE_ID = /^[\x21-\x7e]{1,128}$/;

export class BusinessService implements Omit<ConnectionHost, "scheduler" | "closed"> {
  readonly maxFrameBytes: number;

  constructor(private readonly options: BusinessServiceOptions) {
    this.maxFrameBytes = options.maxFrameBytes;
  }

  idleTimeoutMs(): number {
    return this.options.store.serverRuntimeSettings().heartbeat_timeout_seconds * 1000;
  }

  internalError(connection: BusinessConnection, error: AuthNexusError): void {
    const cause = error.cause instanceof Error ? error.cause : error;
    this.options.log.server.error("request.failed", {
      connection: connection.id,
      app_id: connection.appId,
      error: cause.message,
      stack: cause.stack,
    });
  }

  async serve(connection: BusinessConnection, request: Decoded): Promise<Buffer> {
    const started = performance.now();
    try {
      const answer = await this.dispatch(connection, request);
      this.options.onRequest?.(false);
      this.options.metrics?.request(request.name, (performance.now() - started) / 1000);
      return answer;
    } catch (error) {
      this.options.onRequest?.(true);
      this.options.metrics?.request(request.name, (performance.now() - started) / 1000, error);
      throw error;
    }
  }

  heartbeat(connection: BusinessConnection, requestId: number): Buffer {
    const metrics = this.options.metrics;
    if (!metrics) return this.answerHeartbeat(connection, requestId);
    const started = performance.now();
    try {
      const answer = this.answerHeartbeat(connection, requestId);
      metrics.request("heartbeat", (performance.now() - started) / 1000);
      return answer;
    } catch (error) {
      metrics.request("heartbeat", (performance.now() - started) / 1000, error);
      throw error;
    }
  }

  private answerHeartbeat(connection: BusinessConnection, requestId: number): Buffer {
    this.options.security.assertServing();
    this.refuseBlocked(connection);
    const session = connection.session;
    if (session) {
      this.checkSession(connection, session);
      const now = this.options.clock.now();
      if (now - session.touchedAt >= SESSION_TOUCH_INTERVAL_MS) {
        session.touchedAt = now;
        this.options.auth
          .touch(session.sessionId, now)
          .catch((error: unknown) =>
            this.options.log.server.warn("session.touch_failed", { session_id: session.sessionId, error: (error as Error).message }),
          );
      }
    }
    this.options.onRequest?.(false);
    return encodeMessage("heartbeat_ack", requestId, { server_time: this.options.clock.now() });
  }

  private async dispatch(connection: BusinessConnection, request: Decoded): Promise<Buffer> {
    if (request.name === "hello") return this.hello(connection, request.requestId, request.body);
    this.options.security.assertServing();
    const caller = this.caller(connection);
    this.refuseBlocked(connection);
    switch (request.name) {
      case "register":
        return this.loggedIn(connection, request.requestId, "register", await this.options.auth.register(caller, request.body));
      case "login_password":
        return this.loggedIn(connection, request.requestId, "password", await this.options.auth.loginPassword(caller, request.body));
      case "login_card":
        return this.loggedIn(connection, request.requestId, "card", await this.options.auth.loginCard(caller, request.body));
      case "login_token":
        return this.loggedIn(connection, request.requestId, "token", await this.options.auth.loginToken(caller, request.body));
      case "call_function":
        return encodeMessage("function_result", request.requestId, {
          value: await this.options.cloud.callFunction(this.cloudCaller(connection), request.body),
        });
      case "get_variables":
        return variablesAnswer(request.requestId, this.options.cloud.variables(this.cloudCaller(connection), request.body.name));
      case "get_user_variables":
        return variablesAnswer(request.requestId, await this.options.cloud.userVariables(this.cloudCaller(connection), request.body.key));
      case "set_user_variable":
        await this.options.cloud.setUserVariable(this.cloudCaller(connection), request.body);
        return encodeMessage("ok", request.requestId, {});
      case "logout": {
        const session = connection.session;
        if (!session) throw new AuthNexusError("NOT_LOGGED_IN");
        await this.options.auth.logout(session);
        this.setSession(connection, null);
        this.endOtherConnections(connection, session.sessionId);
        return encodeMessage("ok", request.requestId, {});
      }
      default:
        // Answers and pushes are refused by the connection; hello and heartbeat never get here.
        throw new AuthNexusError("MESSAGE_UNSUPPORTED", { message: `${request.name} is not a request.` });
    }
  }

  /** Layer 4: the first frame names the application, proves its secret, and names the device. */
  private hello(connection: BusinessConnection, requestId: number, body: Message<"hello">): Buffer {
    const { store, security, log } = this.options;
    const refuse = (code: "APP_CREDENTIALS_INVALID" | "APP_DISABLED", reason: string) => {
      log.tls.warn("client.refused", { layer: 4, reason, ip: connection.ip, app_id: body.app_id, cert_app_id: connection.certAppId });
      this.options.metrics?.handshakeRefused("4");
      return new AuthNexusError(code);
    };
    if (body.app_id !== connection.certAppId)
      throw refuse("APP_CREDENTIALS_INVALID", "the hello names another application than the certificate");
    const app = store.application(body.app_id);
    if (!app) throw refuse("APP_CREDENTIALS_INVALID", "no such live application");
    if (!secretMatches(body.app_secret, app.secret_sha256)) throw refuse("APP_CREDENTIALS_INVALID", "wrong application secret");
    if (app.status !== "active") throw refuse("APP_DISABLED", "application disabled");
    if (!DEVICE_ID.test(body.device_id))
      throw new AuthNexusError("PROTOCOL_ERROR", { message: "device_id must be 1-128 printable ASCII characters." });
    security.assertServing();
    const blocked = security.blocksConnection(connection.ip, body.device_id);
    if (blocked) {
      log.security.info("connection.blacklisted", {
        entry_id: blocked.entryId,
        kind: blocked.kind,
        ip: connection.ip,
        device_id: body.device_id,
        app_id: body.app_id,
      });
      throw new AuthNexusError("ACCESS_DENIED");
    }
    connection.appId = body.app_id;
    connection.deviceId = body.device_id;
    const settings = store.serverRuntimeSettings();
    connection.deadline = this.options.clock.now() + settings.heartbeat_timeout_seconds * 1000;
    this.options.metrics?.handshakeAccepted();
    return encodeMessage("hello_ok", requestId, {
      node_id: this.options.nodeId.slice(0, LIMITS.nodeId),
      server_time: this.options.clock.now(),
      heartbeat_interval_ms: settings.heartbeat_interval_seconds * 1000,
      idle_timeout_ms: settings.heartbeat_timeout_seconds * 1000,
      max_frame_bytes: this.maxFrameBytes,
    });
  }

  /**
   * Puts the new session on the connection, then checks it once more. A security change that
   * reached the node while the login was still writing found no session to end (an epoch bump,
   * a user blacklist entry, a card key's force_logout): from the moment the session is set,
   * pushes and security changes find it, and what arrived before is caught here. A session
   * already ended this way is revoked and the login fails.
   */
  private async loggedIn(
    connection: BusinessConnection,
    requestId: number,
    method: Message<"auth_ok">["method"],
    result: LoginResult,
  ): Promise<Buffer> {
    const session = result.session;
    this.setSession(connection, session);
    const superseded = this.sessionProblem(session) ?? (await this.cardWithdrawn(session));
    if (superseded !== null) {
      if (connection.session === session) this.setSession(connection, null);
      this.options.log.security.info("login.superseded", {
        session_id: session.sessionId,
        user_id: session.userId,
        card_key_id: session.cardKeyId,
        app_id: connection.appId,
        device_id: connection.deviceId,
        reason: superseded,
      });
      // Already unusable (its epoch, the blacklist or its card says so); revoking keeps it so.
      await this.options.auth
        .logout(session, superseded)
        .catch((error: unknown) =>
          this.options.log.server.warn("session.revoke_failed", { session_id: session.sessionId, error: (error as Error).message }),
        );
      throw new AuthNexusError("LOGIN_FAILED", { detail: { reason: superseded } });
    }
    return encodeMessage("auth_ok", requestId, {
      method,
      token: result.token,
      session_expires_at: result.session.expiresAt,
      user_id: result.session.userId,
      username: result.session.username,
      card_expires_at: result.cardExpiresAt,
    });
  }

  /** The same session live on another connection of this node (a token login elsewhere) ends with it. */
  private endOtherConnections(connection: BusinessConnection, sessionId: string): void {
    for (const other of this.options.registry.matching({ session_id: sessionId })) {
      if (other === connection || other.closed) continue;
      const message = "logged out on another connection";
      if (other.ready) other.push("force_logout", { level: "warning", message, reason: message });
      other.end(null, 0, "force_logout");
    }
  }

  private setSession(connection: BusinessConnection, session: LiveSession | null): void {
    const previous = connection.session?.userId ?? null;
    connection.session = session;
    this.options.registry.sessionChanged(connection, previous);
  }

  private caller(connection: BusinessConnection): Caller {
    if (connection.appId === null || connection.deviceId === null) throw new AuthNexusError("HANDSHAKE_REQUIRED");
    return { appId: connection.appId, deviceId: connection.deviceId, ip: connection.ip };
  }

  /** The caller of a variables or function request, its session checked as every request's is. */
  private cloudCaller(connection: BusinessConnection): CloudCaller {
    const { appId, deviceId } = this.caller(connection);
    const session = connection.session;
    if (session) this.checkSession(connection, session);
    const stillLoggedIn = () => session !== null && connection.session === session && this.sessionProblem(session) === null;
    return { appId, deviceId, session, stillLoggedIn };
  }

  /** The blacklist may have changed since hello: an IP or device blocked now is refused now. */
  private refuseBlocked(connection: BusinessConnection): void {
    if (this.options.security.blocksConnection(connection.ip, connection.deviceId)) throw new AuthNexusError("ACCESS_DENIED");
  }

  /** A logged-in connection's session must still be good: not expired, epoch current, user not blacklisted. */
  private checkSession(connection: BusinessConnection, session: LiveSession): void {
    const ended = this.sessionProblem(session);
    if (ended === null) return;
    this.setSession(connection, null);
    throw new AuthNexusError("SESSION_ENDED", { detail: { reason: ended } });
  }

  /** Why the session is no longer good by the node's security state, or null. */
  private sessionProblem(session: LiveSession): string | null {
    const { security, clock } = this.options;
    if (session.expiresAt <= clock.now()) return "session expired";
    if (session.userId !== null && !security.epochValid(session.userId, session.authEpoch)) return "auth epoch bumped";
    if (session.userId !== null && security.blocksUser(session.userId)) return "user blacklisted";
    return null;
  }

  /** For a card key session: why the card no longer carries it (disabled or deleted meanwhile), or null. */
  private async cardWithdrawn(session: LiveSession): Promise<string | null> {
    if (session.cardKeyId === null) return null;
    const card = await findCardById(this.options.db, session.cardKeyId);
    if (!card) return "card key deleted";
    return card.status === "active" ? null : `card key ${card.status}`;
  }
}

/** A `variables` answer; one that would not fit in a frame is refused with a clear code instead. */
function variablesAnswer(requestId: number, values: Value): Buffer {
  try {
    return encodeMessage("variables", requestId, { values });
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    throw new AuthNexusError("ANSWER_TOO_LARGE", { message: "These variables do not fit in one answer; read them one at a time." });
  }
}

/** Constant-time check of an application secret against its SHA-256 verifier. */
function secretMatches(secret: string, verifierHex: string): boolean {
  const verifier = Buffer.from(verifierHex, "hex");
  const digest = createHash("sha256").update(secret, "utf8").digest();
  return verifier.length === digest.length && timingSafeEqual(digest, verifier);
}
