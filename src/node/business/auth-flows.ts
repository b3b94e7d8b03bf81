/**
 * End-user authentication on a node: registration, password, card key and saved-token logins,
 * logout. Sessions live in the Runtime DB every node of the deployment shares, so a token minted
 * here works on any node. Every attempt writes the login log (time, app, user, method, result,
 * reason, IP, device, node); every failure is one outward answer (LOGIN_FAILED) whose real
 * reason goes only to the log and the login log, and counts toward the brute-force throttle.
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
  usernameProblem,
  verifyPassword,
} from "../../shared/credentials/index.js";
import { isUniqueViolation, type RuntimeSchema } from "../../shared/db/index.js";
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
  revokeSession,
  writeLoginLog,
} from "../../shared/db/runtime/index.js";
import type { CardKeysTable, UsersTable } from "../../shared/db/runtime-schema.js";
import { AuthNexusError, fieldInvalid } from "../../shared/errors/index.js";
import { newId, sha256Hex } from "../../shared/ids.js";
import type { Logger } from "../../shared/log/index.js";
import type { AppPolicy, ServerRuntimeSettings } from "../../shared/node-protocol/index.js";
import type { LoginMethod, Message } from "../../shared/protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { LiveSession } from "./connection.js";
import type { LoginThrottle } from "./login-throttle.js";
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

/** Why a login failed, for the login log and the [Security] log; the client only ever hears LOGIN_FAILED. */
class LoginRefused extends Error {
  constructor(
    readonly reason: string,
    readonly user: { id: string | null; username: string | null } = { id: null, username: null },
  ) {
    super(reason);
  }
}

export class AuthFlows {
  /** Verified against when the user does not exist, so an unknown name costs what a wrong password does. */
  private readonly decoyHash: string;

  constructor(private readonly options: AuthFlowsOptions) {
    this.decoyHash = hashPassword(randomBytes(16).toString("hex"), options.passwordHashKey);
  }

  async register(caller: Caller, body: Message<"register">): Promise<LoginResult> {
    const { db, clock } = this.options;
    const policy = this.options.policy(caller.appId);
    if (!policy.registration_enabled) throw new AuthNexusError("REGISTRATION_DISABLED");
    this.options.throttle.check([ipKey(caller.ip)]);
    const problem = usernameProblem(body.username);
    if (problem) throw fieldInvalid("username", problem);
    checkPassword(body.password);
    if (body.email !== null && emailProblem(body.email)) throw fieldInvalid("email", emailProblem(body.email) ?? "");
    if (policy.invite_code_required && body.invite_code === null)
      throw new AuthNexusError("INVITE_CODE_INVALID", { message: "An invite code is required." });
    const inviteHash = body.invite_code === null ? null : canonicalCode(body.invite_code, INVITE_CODE_GROUPS);
    if (body.invite_code !== null && inviteHash === null) throw this.inviteRefused(caller);
    const invite = inviteHash === null ? undefined : await findInviteByHash(db, caller.appId, codeHash(inviteHash));
    if (inviteHash !== null && !invite) throw this.inviteRefused(caller);

    const now = clock.now();
    const user: UsersTable = {
      id: newId("usr"),
      app_id: caller.appId,
      username: body.username.normalize("NFKC"),
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
      await db.transaction().execute(async (trx) => {
        if (invite && !(await consumeInvite(trx, invite.id, now))) throw this.inviteRefused(caller);
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
  }

  async loginPassword(caller: Caller, body: Message<"login_password">): Promise<LoginResult> {
    const policy = this.options.policy(caller.appId);
    if (!policy.password_login_enabled) throw new AuthNexusError("LOGIN_METHOD_DISABLED");
    const normalized = normalizeUsername(body.username);
    const keys = [userKey(caller.appId, normalized), ipKey(caller.ip)];
    this.options.throttle.check(keys);
    return this.attempt(caller, "password", keys, body.username, async () => {
      const user = await findUserByName(this.options.db, caller.appId, normalized);
      const matches = verifyPassword(body.password, user?.password_hash ?? this.decoyHash, this.options.passwordHashKey);
      if (!user) throw new LoginRefused("unknown user", { id: null, username: body.username });
      const who = { id: user.id, username: user.username };
      if (!matches)
        throw new LoginRefused(
          user.password_hash.startsWith("$authnexus-fast-hmac-sha256$v=1$") ? "wrong password" : "unsupported password hash format",
          who,
        );
      if (user.status !== "active") throw new LoginRefused(`user ${user.status}`, who);
      if (this.options.security.blocksUser(user.id)) throw new LoginRefused("user blacklisted", who);
      const now = this.options.clock.now();
      if (
        !(await bindDevice(
          this.options.db,
          { appId: caller.appId, userId: user.id, deviceId: caller.deviceId },
          policy.max_devices_per_user,
          now,
        ))
      ) {
        throw new AuthNexusError("DEVICE_LIMIT_REACHED");
      }
      const epoch = this.options.security.currentEpoch(user.id, Number(user.auth_epoch));
      const issued = this.newSession(
        caller,
        { userId: user.id, username: user.username, cardKeyId: null, method: "password", authEpoch: epoch },
        now,
      );
      await this.options.db.transaction().execute(async (trx) => {
        await insertSession(trx, issued.row);
        await trx.updateTable("users").set({ last_login_at: now }).where("id", "=", user.id).execute();
        await writeLoginLog(trx, this.logEntry(caller, "password", "success", null, user.id, user.username));
      });
      this.options.throttle.succeed(keys[0] as string);
      return issued.result;
    });
  }

  async loginCard(caller: Caller, body: Message<"login_card">): Promise<LoginResult> {
    const policy = this.options.policy(caller.appId);
    if (!policy.card_login_enabled) throw new AuthNexusError("LOGIN_METHOD_DISABLED");
    const keys = [ipKey(caller.ip)];
    this.options.throttle.check(keys);
    return this.attempt(caller, "card", keys, null, async () => {
      const canonical = canonicalCode(body.card_key, CARD_KEY_GROUPS);
      if (canonical === null) throw new LoginRefused("not a card key");
      const found = await findCardByHash(this.options.db, caller.appId, codeHash(canonical));
      if (!found) throw new LoginRefused("unknown card key");
      const now = this.options.clock.now();
      const card = await this.activated(found, caller.deviceId, now);
      if (card.status === "disabled") throw new LoginRefused("card key disabled");
      if (card.status !== "active" || card.expires_at === null) throw new LoginRefused(`card key ${card.status}`);
      if (card.expires_at <= now) throw new LoginRefused("card key expired");
      if (card.bound_device_id !== caller.deviceId) throw new LoginRefused("card key bound to another device");
      const issued = this.newSession(
        caller,
        { userId: null, username: null, cardKeyId: card.id, method: "card", authEpoch: 0 },
        now,
        card.expires_at,
      );
      await this.options.db.transaction().execute(async (trx) => {
        await insertSession(trx, issued.row);
        await writeLoginLog(trx, this.logEntry(caller, "card", "success", `card ${card.id}`, null, null));
      });
      return { ...issued.result, cardExpiresAt: card.expires_at };
    });
  }

  async loginToken(caller: Caller, body: Message<"login_token">): Promise<LoginResult> {
    const policy = this.options.policy(caller.appId);
    if (!policy.token_login_enabled) throw new AuthNexusError("LOGIN_METHOD_DISABLED");
    const keys = [ipKey(caller.ip)];
    this.options.throttle.check(keys);
    return this.attempt(caller, "token", keys, null, async () => {
      if (body.token.length !== TOKEN_BYTES) throw new LoginRefused("token is not 32 bytes");
      const row = await findSessionForLogin(this.options.db, sha256Hex(body.token));
      if (!row || row.app_id !== caller.appId) throw new LoginRefused("unknown token");
      const who = { id: row.user_id, username: row.username };
      const now = this.options.clock.now();
      const { security } = this.options;
      if (row.revoked_at !== null) throw new LoginRefused("session revoked", who);
      if (security.tokenExpiry(row.created_at, row.expires_at) <= now)
        throw new LoginRefused(row.expires_at <= now ? "session expired" : "session too old while auth epochs are not current", who);
      if (row.device_id !== caller.deviceId) throw new LoginRefused("token bound to another device", who);
      if (row.user_id !== null) {
        if (row.user_status !== "active") throw new LoginRefused(`user ${row.user_status ?? "deleted"}`, who);
        if (!security.epochValid(row.user_id, row.auth_epoch, row.user_epoch ?? 0))
          throw new LoginRefused("auth epoch bumped since login", who);
        if (security.blocksUser(row.user_id)) throw new LoginRefused("user blacklisted", who);
      }
      if (row.card_key_id !== null) {
        if (row.card_status !== "active") throw new LoginRefused(`card key ${row.card_status ?? "deleted"}`, who);
        if (row.card_expires_at !== null && row.card_expires_at <= now) throw new LoginRefused("card key expired", who);
        if (row.card_device_id !== caller.deviceId) throw new LoginRefused("card key bound to another device", who);
      }
      await this.options.db.transaction().execute(async (trx) => {
        await trx
          .updateTable("sessions")
          .set({ last_heartbeat_at: now, node_id: this.options.nodeId, ip: caller.ip })
          .where("id", "=", row.id)
          .execute();
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
    await revokeSession(this.options.db, session.sessionId, reason, this.options.clock.now());
  }

  /**
   * Runs one login attempt: a refusal becomes LOGIN_FAILED outward, with its reason in the login
   * log and the [Security] log, and counts toward the throttle. Other errors (a disabled method,
   * the device cap, a database outage) pass through as they are.
   */
  private async attempt(
    caller: Caller,
    method: LoginMethod,
    keys: string[],
    username: string | null,
    run: () => Promise<LoginResult>,
  ): Promise<LoginResult> {
    try {
      return await run();
    } catch (error) {
      if (!(error instanceof LoginRefused)) throw error;
      this.options.throttle.fail(keys);
      this.options.log.info("login.refused", {
        app_id: caller.appId,
        method,
        reason: error.reason,
        user_id: error.user.id,
        device_id: caller.deviceId,
        ip: caller.ip,
      });
      await writeLoginLog(
        this.options.db,
        this.logEntry(caller, method, "failure", error.reason, error.user.id, error.user.username ?? username),
      ).catch((cause: unknown) => this.options.log.error("login_log.write_failed", { error: (cause as Error).message }));
      throw new AuthNexusError("LOGIN_FAILED", { detail: { reason: error.reason } });
    }
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
    const sessionId = newId("ses");
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
    result: "success" | "failure",
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

  private inviteRefused(caller: Caller): AuthNexusError {
    this.options.throttle.fail([ipKey(caller.ip)]);
    return new AuthNexusError("INVITE_CODE_INVALID");
  }
}

function checkPassword(password: string): void {
  const length = [...password].length;
  if (length < USER_PASSWORD_MIN_LENGTH || length > USER_PASSWORD_MAX_LENGTH) {
    throw fieldInvalid("password", `must be ${USER_PASSWORD_MIN_LENGTH}-${USER_PASSWORD_MAX_LENGTH} characters`);
  }
}

const userKey = (appId: string, normalizedName: string) => `user:${appId}:${normalizedName}`;
const ipKey = (ip: string) => `ip:${ip}`;
