/**
 * End-user authentication on a node: registration, password, card key and saved-token logins,
 * logout. Sessions live in the Runtime DB every node of the deployment shares, so a token minted
 * here works on any node. Every attempt writes the login log (time, app, user, method, result,
 * reason, IP, device, node) — refusals included, whatever refused them: the policy, the throttle
 * (result "throttled"), the device cap. A failed login is one outward answer (LOGIN_FAILED) whose
 * real reason goes only to the log and the login log, and counts toward the brute-force throttle.
 */
import { randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import { USER_PASSWORD_MAX_LENGTH, USER_PASSWORD_MIN_LENGTH } from "../../shared/config/defaults.js";
import {
  CARD_KEY_GROUPS,
  canonicalCode,
  codeHash,
  emailProblem,
  hashPassword,
  INVITE_CODE_GROUPS,
  normalizeUsername,
  PASSWORD_HASH_PREFIX,
  usernameProblem,
  verifyPassword,
} from "../../shared/credentials/index.js";
import { type GroupCommit, isUniqueViolation, type RuntimeSchema } from "../../shared/db/index.js";
import {
  activateCard,
  bindDevice,
  consumeInvite,
  findCardByHash,
  findCardById,
  findInviteByHash,
  findSessionForLogin,
  findUserByName,
  insertSession,
  type LoginLogEntry,
  recordUserLogin,
  resumeSession,
  revokeSession,
  touchSession,
  writeLoginLog,
} from "../../shared/db/runtime/index.js";
import type { CardKeysTable, UsersTable } from "../../shared/db/runtime-schema.js";
import { AuthNexusError, type ErrorCode, fieldInvalid, isAuthNexusError } from "../../shared/errors/index.js";
import { newId, newTimeOrderedId, sha256Hex } from "../../shared/ids.js";
import type { Logger } from "../../shared/log/index.js";
import type { AppPolicy, ServerRuntimeSettings } from "../../shared/node-protocol/index.js";
import type { LoginMethod, Message } from "../../shared/protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { LiveSession } from "./connection.js";
import type { LoginThrottle, ThrottledAttempt } from "./login-throttle.js";
import type { SecurityState } from "./security-state.js";

/** Who is asking: the connection's application, device and address. */
export interface Caller {
  appId: string;
  deviceId: string;
  ip: string;
}

export interface LoginResult {
  session: LiveSession;
  token: Buffer;
  cardExpiresAt: number | null;
}

export interface AuthFlowsOptions {
  db: Kysely<RuntimeSchema>;
  /** Every write a login makes goes through here: logins arriving together commit together. */
  writes: GroupCommit<RuntimeSchema>;
  nodeId: string;
  clock: Clock;
  log: Logger;
  passwordHashKey: Buffer;
  security: SecurityState;
  throttle: LoginThrottle;
  policy: (appId: string) => AppPolicy;
  settings: () => ServerRuntimeSettings;
}

const TOKEN_BYTES = 32;

type Who = { id: string | null; username: string | null };

/**
 * Why an attempt was refused, for the login log and the [Security] log. A failed login answers
 * LOGIN_FAILED whatever the reason; other refusals (the device cap, an invite code) keep their
 * own answer. `counts`: whether the refusal counts toward the brute-force throttle.
 */
class Refused extends Error {
  readonly answer: AuthNexusError;
  readonly counts: boolean;

  constructor(
    readonly reason: string,
    readonly user: Who = { id: null, username: null },
    options: { answer?: ErrorCode; message?: string; counts?: boolean } = {},
  ) {
    super(reason);
    this.answer = new AuthNexusError(options.answer ?? "LOGIN_FAILED", {
      detail: { reason },
      ...(options.message === undefined ? {} : { message: options.message }),
    });
    this.counts = options.counts ?? true;
  }
}

/** What the login log says of refusals that are not a Refused. */
const REFUSAL_REASONS: Partial<Record<ErrorCode, string>> = {
  REGISTRATION_DISABLED: "registration disabled",
  LOGIN_METHOD_DISABLED: "login method disabled",
  USERNAME_TAKEN: "username taken",
};

/** One attempt: its method, the name it gives, the throttle keys it counts against. */
interface Attempt {
  method: LoginMethod;
  /** The name the client typed (password logins and registrations), for the login log. */
  username: string | null;
  keys: string[];
  /** Cleared on success: the user's key; null when the attempt names no user. */
  userKey: string | null;
}

export class AuthFlows {
  /** Verified against when the user does not exist, so an unknown name costs what a wrong password does. */
  private readonly decoyHash: string;

  constructor(private readonly options: AuthFlowsOptions) {
    this.decoyHash = hashPassword(randomBytes(16).toString("hex"), options.passwordHashKey);
  }

  async register(caller: Caller, body: Message<"register">): Promise<LoginResult> {
    const attempt: Attempt = { method: "register", username: body.username, keys: [ipKey(caller.ip)], userKey: null };
    return this.attempt(caller, attempt, async (policy) => {
      const { db, clock } = this.options;
      const problem = usernameProblem(body.username);
      if (problem) throw fieldInvalid("username", problem);
      checkPassword(body.password);
      if (body.email !== null && emailProblem(body.email)) throw fieldInvalid("email", emailProblem(body.email) ?? "");
      if (policy.invite_code_required && body.invite_code === null)
        throw new Refused("invite code required", undefined, {
          answer: "INVITE_CODE_INVALID",
          message: "An invite code is required.",
          counts: false,
        });
      const canonicalInvite = body.invite_code === null ? null : canonicalCode(body.invite_code, INVITE_CODE_GROUPS);
      if (body.invite_code !== null && canonicalInvite === null) throw inviteRefused("not an invite code");
      const invite = canonicalInvite === null ? undefined : await findInviteByHash(db, caller.appId, codeHash(canonicalInvite));
      if (canonicalInvite !== null && !invite) throw inviteRefused("unknown invite code");

      const now = clock.now();
      const user: UsersTable = {
        id: newId("usr"),
        app_id: caller.appId,
        // The spelling given is kept for display; the name is compared in its normalised form.
        username: body.username,
        username_normalized: normalizeUsername(body.username),
        email: body.email,
        password_hash: hashPassword(body.password, this.options.passwordHashKey),
        auth_epoch: 0,
        status: "active",
        invite_code_id: invite?.id ?? null,
        created_at: now,
        updated_at: now,
        last_login_at: now,
      };
      const issued = this.newSession(
        caller,
        { userId: user.id, username: user.username, cardKeyId: null, method: "register", authEpoch: 0 },
        now,
      );
      try {
        await this.options.writes.run(async (trx) => {
          if (invite && !(await consumeInvite(trx, invite.id, now))) throw inviteRefused("invite code used up or expired");
          await trx.insertInto("users").values(user).execute();
          await trx
            .insertInto("device_bindings")
            .values({ app_id: caller.appId, user_id: user.id, device_id: caller.deviceId, created_at: now, last_seen_at: now })
            .execute();
          await insertSession(trx, issued.row);
          await writeLoginLog(trx, this.logEntry(caller, "register", "success", null, user.id, user.username));
        });
      } catch (error) {
        if (isUniqueViolation(error)) throw new AuthNexusError("USERNAME_TAKEN");
        throw error;
      }
      this.options.log.info("user.registered", { app_id: caller.appId, user_id: user.id, device_id: caller.deviceId, ip: caller.ip });
      return issued.result;
    });
  }

  async loginPassword(caller: Caller, body: Message<"login_password">): Promise<LoginResult> {
    const normalized = normalizeUsername(body.username);
    const key = userKey(caller.appId, normalized);
    const attempt: Attempt = { method: "password", username: body.username, keys: [key, ipKey(caller.ip)], userKey: key };
    return this.attempt(caller, attempt, async (policy) => {
      // A name no account can have is not looked up (PostgreSQL text cannot even hold a NUL).
      const user = usernameProblem(body.username) === null ? await findUserByName(this.options.db, caller.appId, normalized) : undefined;
      const matches = verifyPassword(body.password, user?.password_hash ?? this.decoyHash, this.options.passwordHashKey);
      if (!user) throw new Refused("unknown user", { id: null, username: body.username });
      const who = { id: user.id, username: user.username };
      if (!matches)
        throw new Refused(user.password_hash.startsWith(PASSWORD_HASH_PREFIX) ? "wrong password" : "unsupported password hash format", who);
      if (user.status !== "active") throw new Refused(`user ${user.status}`, who);
      if (this.options.security.blocksUser(user.id)) throw new Refused("user blacklisted", who);
      const now = this.options.clock.now();
      const epoch = this.options.security.currentEpoch(user.id, Number(user.auth_epoch));
      const issued = this.newSession(
        caller,
        { userId: user.id, username: user.username, cardKeyId: null, method: "password", authEpoch: epoch },
        now,
      );
      // One transaction: the device cap's check, the binding, the session and the log row.
      await this.options.writes.run(async (trx) => {
        const binding = { appId: caller.appId, userId: user.id, deviceId: caller.deviceId };
        if (!(await bindDevice(trx, binding, policy.max_devices_per_user, now)))
          throw new Refused("device limit reached", who, { answer: "DEVICE_LIMIT_REACHED", counts: false });
        await insertSession(trx, issued.row);
        await recordUserLogin(trx, user.id, now);
        await writeLoginLog(trx, this.logEntry(caller, "password", "success", null, user.id, user.username));
      });
      return issued.result;
    });
  }

  async loginCard(caller: Caller, body: Message<"login_card">): Promise<LoginResult> {
    const attempt: Attempt = { method: "card", username: null, keys: [ipKey(caller.ip)], userKey: null };
    return this.attempt(caller, attempt, async () => {
      const canonical = canonicalCode(body.card_key, CARD_KEY_GROUPS);
      if (canonical === null) throw new Refused("not a card key");
      const found = await findCardByHash(this.options.db, caller.appId, codeHash(canonical));
      if (!found) throw new Refused("unknown card key");
      const now = this.options.clock.now();
      const card = await this.activated(found, caller.deviceId, now);
      if (card.status === "disabled") throw new Refused("card key disabled");
      if (card.status !== "active" || card.expires_at === null) throw new Refused(`card key ${card.status}`);
      if (card.expires_at <= now) throw new Refused("card key expired");
      if (card.bound_device_id !== caller.deviceId) throw new Refused("card key bound to another device");
      const issued = this.newSession(
        caller,
        { userId: null, username: null, cardKeyId: card.id, method: "card", authEpoch: 0 },
        now,
        card.expires_at,
      );
      await this.options.writes.run(async (trx) => {
        await insertSession(trx, issued.row);
        await writeLoginLog(trx, this.logEntry(caller, "card", "success", `card ${card.id}`, null, null));
      });
      return { ...issued.result, cardExpiresAt: card.expires_at };
    });
  }

  async loginToken(caller: Caller, body: Message<"login_token">): Promise<LoginResult> {
    const attempt: Attempt = { method: "token", username: null, keys: [ipKey(caller.ip)], userKey: null };
    return this.attempt(caller, attempt, async () => {
      if (body.token.length !== TOKEN_BYTES) throw new Refused("token is not 32 bytes");
      const row = await findSessionForLogin(this.options.db, sha256Hex(body.token));
      if (!row || row.app_id !== caller.appId) throw new Refused("unknown token");
      const who = { id: row.user_id, username: row.username };
      const now = this.options.clock.now();
      const { security } = this.options;
      if (row.revoked_at !== null) throw new Refused("session revoked", who);
      if (security.tokenExpiry(row.created_at, row.expires_at) <= now)
        throw new Refused(row.expires_at <= now ? "session expired" : "session too old while auth epochs are not current", who);
      if (row.device_id !== caller.deviceId) throw new Refused("token bound to another device", who);
      if (row.user_id !== null) {
        if (row.user_status !== "active") throw new Refused(`user ${row.user_status ?? "deleted"}`, who);
        if (!security.epochValid(row.user_id, row.auth_epoch, row.user_epoch ?? 0)) throw new Refused("auth epoch bumped since login", who);
        if (security.blocksUser(row.user_id)) throw new Refused("user blacklisted", who);
      }
      if (row.card_key_id !== null) {
        if (row.card_status !== "active") throw new Refused(`card key ${row.card_status ?? "deleted"}`, who);
        if (row.card_expires_at !== null && row.card_expires_at <= now) throw new Refused("card key expired", who);
        if (row.card_device_id !== caller.deviceId) throw new Refused("card key bound to another device", who);
      }
      await this.options.writes.run(async (trx) => {
        // Only a session still live: a revoke committed since the read above wins.
        if (!(await resumeSession(trx, row.id, { now, nodeId: this.options.nodeId, ip: caller.ip })))
          throw new Refused("session revoked", who);
        await writeLoginLog(trx, this.logEntry(caller, "token", "success", null, row.user_id, row.username));
      });
      const session: LiveSession = {
        sessionId: row.id,
        userId: row.user_id,
        username: row.username,
        cardKeyId: row.card_key_id,
        method: "token",
        authEpoch: row.auth_epoch,
        expiresAt: row.expires_at,
        touchedAt: now,
      };
      return { session, token: Buffer.from(body.token), cardExpiresAt: row.card_expires_at };
    });
  }

  /** Ends the session for good: its token no longer logs in anywhere. */
  async logout(session: LiveSession, reason = "logout"): Promise<void> {
    const now = this.options.clock.now();
    await this.options.writes.run((trx) => revokeSession(trx, session.sessionId, reason, now));
  }

  /** Records that a live session was seen (heartbeats write it at most every SESSION_TOUCH_INTERVAL_MS). */
  async touch(sessionId: string, now: number): Promise<void> {
    await this.options.writes.run((trx) => touchSession(trx, sessionId, now));
  }

  /**
   * Runs one attempt: the application's policy first (is the method enabled), then the throttle
   * (which counts the attempt from here on), then `run`. A success takes the attempt back from
   * the throttle and clears the user's count; a failed login stays counted and answers
   * LOGIN_FAILED. Every refusal — policy, throttle, credentials, device cap, invite code, input —
   * writes its login log row and a [Security] log line; only failures count toward the throttle.
   * The node's own failures (the database down, an internal error) are no refusal: they pass
   * through unlogged here, and count for nothing.
   */
  private async attempt(caller: Caller, attempt: Attempt, run: (policy: AppPolicy) => Promise<LoginResult>): Promise<LoginResult> {
    let throttled: ThrottledAttempt | null = null;
    try {
      const policy = this.options.policy(caller.appId);
      if (!methodEnabled(policy, attempt.method))
        throw new AuthNexusError(attempt.method === "register" ? "REGISTRATION_DISABLED" : "LOGIN_METHOD_DISABLED");
      throttled = this.options.throttle.begin(attempt.keys);
      const result = await run(policy);
      throttled.succeeded(attempt.userKey);
      return result;
    } catch (error) {
      const counted = error instanceof Refused && error.counts;
      if (!counted) throttled?.withdrawn();
      throw await this.refused(caller, attempt, error);
    }
  }

  /** Logs a refused attempt; returns what the client is answered. */
  private async refused(caller: Caller, attempt: Attempt, error: unknown): Promise<unknown> {
    const refusal = describeRefusal(error);
    if (refusal === null) return error;
    const { result, reason } = refusal;
    const user: Who = { id: refusal.user.id, username: printable(refusal.user.username ?? attempt.username) };
    this.options.log.info("login.refused", {
      app_id: caller.appId,
      method: attempt.method,
      result,
      reason,
      user_id: user.id,
      device_id: caller.deviceId,
      ip: caller.ip,
    });
    const entry = this.logEntry(caller, attempt.method, result, reason, user.id, user.username);
    await this.options.writes
      .run((trx) => writeLoginLog(trx, entry))
      .catch((cause: unknown) => this.options.log.error("login_log.write_failed", { error: (cause as Error).message }));
    return refusal.answer;
  }

  /** The card after its first use activated it (by this login or a racing one on any node). */
  private async activated(card: CardKeysTable, deviceId: string, now: number): Promise<CardKeysTable> {
    if (card.status !== "unused") return card;
    await activateCard(this.options.db, card, deviceId, now);
    // Re-read either way: when another login won the race, its binding is the one in force.
    return (await findCardById(this.options.db, card.id)) ?? card;
  }

  private newSession(
    caller: Caller,
    who: { userId: string | null; username: string | null; cardKeyId: string | null; method: LoginMethod; authEpoch: number },
    now: number,
    notAfter = Number.POSITIVE_INFINITY,
  ) {
    const token = randomBytes(TOKEN_BYTES);
    const ttlSeconds = this.options.policy(caller.appId).session_ttl_seconds ?? this.options.settings().session_ttl_seconds;
    const expiresAt = Math.min(now + ttlSeconds * 1000, notAfter);
    const sessionId = newTimeOrderedId("ses", now);
    const row = {
      id: sessionId,
      token_hash: sha256Hex(token),
      app_id: caller.appId,
      user_id: who.userId,
      card_key_id: who.cardKeyId,
      device_id: caller.deviceId,
      auth_epoch: who.authEpoch,
      node_id: this.options.nodeId,
      ip: caller.ip,
      created_at: now,
      expires_at: expiresAt,
      last_heartbeat_at: now,
      revoked_at: null,
      revoke_reason: null,
    };
    const session: LiveSession = {
      sessionId,
      userId: who.userId,
      username: who.username,
      cardKeyId: who.cardKeyId,
      method: who.method,
      authEpoch: who.authEpoch,
      expiresAt,
      touchedAt: now,
    };
    return { row, result: { session, token, cardExpiresAt: null } satisfies LoginResult };
  }

  private logEntry(
    caller: Caller,
    method: LoginMethod,
    result: "success" | "failure" | "throttled",
    reason: string | null,
    userId: string | null,
    username: string | null,
  ): LoginLogEntry {
    return {
      created_at: this.options.clock.now(),
      app_id: caller.appId,
      user_id: userId,
      username,
      method,
      result,
      reason,
      ip: caller.ip,
      device_id: caller.deviceId,
      node_id: this.options.nodeId,
    };
  }
}

interface Refusal {
  result: "failure" | "throttled";
  reason: string;
  user: Who;
  answer: AuthNexusError;
}

/** How a refusal is logged and answered; null for the node's own failures, which are no refusal. */
function describeRefusal(error: unknown): Refusal | null {
  if (error instanceof Refused) return { result: "failure", reason: error.reason, user: error.user, answer: error.answer };
  if (!isAuthNexusError(error) || !error.expose || error.retryable) return null;
  const nobody = { id: null, username: null };
  if (error.code === "LOGIN_THROTTLED") {
    const reason = error.detail?.key === "user" ? "too many failures for the user" : "too many failures from the address";
    return { result: "throttled", reason, user: nobody, answer: error };
  }
  const reason = REFUSAL_REASONS[error.code] ?? (error.code === "VALIDATION_FAILED" ? error.message : error.code);
  return { result: "failure", reason, user: nobody, answer: error };
}

function methodEnabled(policy: AppPolicy, method: LoginMethod): boolean {
  switch (method) {
    case "register":
      return policy.registration_enabled;
    case "password":
      return policy.password_login_enabled;
    case "card":
      return policy.card_login_enabled;
    case "token":
      return policy.token_login_enabled;
  }
}

/** An invite code that was given and refused: INVITE_CODE_INVALID outward, counted toward the throttle. */
function inviteRefused(reason: string): Refused {
  return new Refused(reason, undefined, { answer: "INVITE_CODE_INVALID" });
}

/** A name as the client typed it, fit for the logs: control characters (PostgreSQL text refuses NUL) replaced. */
function printable(text: string | null): string | null {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
  return text === null ? null : text.replace(/[\u0000-\u001f\u007f]/g, "\uFFFD");
}

function checkPassword(password: string): void {
  const length = [...password].length;
  if (length < USER_PASSWORD_MIN_LENGTH || length > USER_PASSWORD_MAX_LENGTH) {
    throw fieldInvalid("password", `must be ${USER_PASSWORD_MIN_LENGTH}-${USER_PASSWORD_MAX_LENGTH} characters`);
  }
}

const userKey = (appId: string, normalizedName: string) => `user:${appId}:${normalizedName}`;
const ipKey = (ip: string) => `ip:${ip}`;
