/**
 * Agent login, token refresh and logout. Tokens are opaque random strings stored only as
 * SHA-256 hashes; access tokens are short-lived, refresh tokens rotate on every use, and a
 * rotated-out refresh token presented again revokes the whole session (it was stolen or
 * replayed). Unknown user, wrong password and disabled agent all answer the same.
 */
import { AGENT_ACCESS_TOKEN_TTL_MS, AGENT_REFRESH_TOKEN_TTL_MS, AGENT_SESSION_MAX_LIFETIME_MS } from "../../../shared/config/defaults.js";
import type { ControlSchema } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId, randomToken, sha256Hex } from "../../../shared/ids.js";
import type { CpContext } from "../context.js";
import { normalizeUsername } from "./agents.js";
import { type PasswordCheckResult, runThrottledPasswordCheck } from "./login-throttle.js";
import { decoyPasswordHash, verifyAgentPassword } from "./passwords.js";

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: "Bearer";
  expires_in: number;
  refresh_expires_in: number;
}

export interface LoginAttempt {
  username: string;
  password: string;
  ip: string | null;
  userAgent: string | null;
}

export interface AuthenticatedAgent {
  agentId: string;
  username: string;
  role: string;
  sessionId: string;
}

export async function loginAgent(ctx: CpContext, attempt: LoginAttempt): Promise<TokenPair> {
  const username = normalizeUsername(attempt.username);
  const { result, agent } = await runThrottledPasswordCheck(
    ctx,
    { username, ip: attempt.ip, userAgent: attempt.userAgent, purpose: "login" },
    async () => {
      const agent = await ctx.controlDb
        .selectFrom("agents")
        .select(["id", "password_hash", "status"])
        .where("username", "=", username)
        .executeTakeFirst();
      const passwordOk = await verifyAgentPassword(attempt.password, agent?.password_hash ?? (await decoyPasswordHash()));
      const result: PasswordCheckResult = !agent
        ? "unknown_user"
        : !passwordOk
          ? "bad_credentials"
          : agent.status !== "active"
            ? "disabled"
            : "success";
      return { result, agentId: agent?.id ?? null, agent };
    },
  );
  if (result !== "success" || !agent) throw new AuthNexusError("INVALID_CREDENTIALS", { detail: { reason: result } });

  const tokens = issueTokens(ctx.clock.now(), ctx.clock.now());
  await ctx.controlDb.transaction().execute(async (tx) => {
    await tx
      .insertInto("agent_sessions")
      .values({
        id: newId("ses"),
        agent_id: agent.id,
        ...tokens.rows,
        created_at: ctx.clock.now(),
        last_used_at: ctx.clock.now(),
        revoked_at: null,
        revoke_reason: null,
        ip: attempt.ip,
        user_agent: attempt.userAgent?.slice(0, 512) ?? null,
      })
      .execute();
    await tx.updateTable("agents").set({ last_login_at: ctx.clock.now() }).where("id", "=", agent.id).execute();
  });
  return tokens.pair;
}

export async function refreshAgentSession(ctx: CpContext, refreshToken: string): Promise<TokenPair> {
  const hash = sha256Hex(refreshToken);
  const now = ctx.clock.now();
  const session = await ctx.controlDb
    .selectFrom("agent_sessions")
    .innerJoin("agents", "agents.id", "agent_sessions.agent_id")
    .select([
      "agent_sessions.id",
      "agent_sessions.created_at",
      "agent_sessions.refresh_expires_at",
      "agent_sessions.revoked_at",
      "agents.status",
      "agents.id as agent_id",
    ])
    .where("agent_sessions.refresh_token_hash", "=", hash)
    .executeTakeFirst();
  if (!session) {
    await revokeReplayedSession(ctx, hash, now);
    throw new AuthNexusError("INVALID_REFRESH_TOKEN");
  }
  if (session.revoked_at !== null || session.refresh_expires_at <= now || session.status !== "active") {
    throw new AuthNexusError("INVALID_REFRESH_TOKEN");
  }
  const tokens = issueTokens(now, session.created_at);
  const rotated = await ctx.controlDb.transaction().execute(async (tx) => {
    // The WHERE on the old hash makes rotation single-use even under concurrent refreshes.
    const updated = await tx
      .updateTable("agent_sessions")
      .set({ ...tokens.rows, last_used_at: now })
      .where("id", "=", session.id)
      .where("refresh_token_hash", "=", hash)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) return false;
    await tx.insertInto("agent_spent_refresh_tokens").values({ token_hash: hash, session_id: session.id, spent_at: now }).execute();
    return true;
  });
  if (!rotated) throw new AuthNexusError("INVALID_REFRESH_TOKEN");
  return tokens.pair;
}

/** A spent refresh token presented again, however many rotations ago: revoke its session. */
async function revokeReplayedSession(ctx: CpContext, hash: string, now: number): Promise<void> {
  const spent = await ctx.controlDb
    .selectFrom("agent_spent_refresh_tokens")
    .select("session_id")
    .where("token_hash", "=", hash)
    .executeTakeFirst();
  if (!spent) return;
  const revoked = await ctx.controlDb
    .updateTable("agent_sessions")
    .set({ revoked_at: now, revoke_reason: "refresh_token_reused" })
    .where("id", "=", spent.session_id)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  if (Number(revoked.numUpdatedRows) > 0) ctx.log.warn("agent.refresh_token_reused", { session_id: spent.session_id });
}

export async function logoutAgent(ctx: CpContext, sessionId: string): Promise<void> {
  await ctx.controlDb
    .updateTable("agent_sessions")
    .set({ revoked_at: ctx.clock.now(), revoke_reason: "logout" })
    .where("id", "=", sessionId)
    .where("revoked_at", "is", null)
    .execute();
}

/** Resolves a bearer access token to its agent, or fails with UNAUTHENTICATED. */
export async function authenticateAccessToken(ctx: CpContext, accessToken: string): Promise<AuthenticatedAgent> {
  const now = ctx.clock.now();
  const row = await ctx.controlDb
    .selectFrom("agent_sessions")
    .innerJoin("agents", "agents.id", "agent_sessions.agent_id")
    .select([
      "agent_sessions.id as session_id",
      "agent_sessions.access_expires_at",
      "agent_sessions.revoked_at",
      "agent_sessions.last_used_at",
      "agents.id as agent_id",
      "agents.username",
      "agents.role",
      "agents.status",
    ])
    .where("agent_sessions.access_token_hash", "=", sha256Hex(accessToken))
    .executeTakeFirst();
  if (!row || row.revoked_at !== null || row.access_expires_at <= now || row.status !== "active") {
    throw new AuthNexusError("UNAUTHENTICATED", { message: "Access token is invalid or expired." });
  }
  // Touch at most once a minute: a write per request would serialise every admin call on SQLite.
  if (now - row.last_used_at > 60_000) {
    await ctx.controlDb.updateTable("agent_sessions").set({ last_used_at: now }).where("id", "=", row.session_id).execute();
  }
  return { agentId: row.agent_id, username: row.username, role: row.role, sessionId: row.session_id };
}

/**
 * A fresh token pair. Refresh tokens rotate but never outlive the session's absolute lifetime,
 * so a stolen refresh token that keeps being used still dies within AGENT_SESSION_MAX_LIFETIME_MS.
 */
function issueTokens(
  now: number,
  sessionCreatedAt: number,
): {
  pair: TokenPair;
  rows: Pick<ControlSchema["agent_sessions"], "access_token_hash" | "access_expires_at" | "refresh_token_hash" | "refresh_expires_at">;
} {
  const access = randomToken();
  const refresh = randomToken();
  const refreshExpiresAt = Math.min(now + AGENT_REFRESH_TOKEN_TTL_MS, sessionCreatedAt + AGENT_SESSION_MAX_LIFETIME_MS);
  const accessExpiresAt = Math.min(now + AGENT_ACCESS_TOKEN_TTL_MS, refreshExpiresAt);
  return {
    pair: {
      access_token: access,
      refresh_token: refresh,
      token_type: "Bearer",
      expires_in: Math.floor((accessExpiresAt - now) / 1000),
      refresh_expires_in: Math.floor((refreshExpiresAt - now) / 1000),
    },
    rows: {
      access_token_hash: sha256Hex(access),
      access_expires_at: accessExpiresAt,
      refresh_token_hash: sha256Hex(refresh),
      refresh_expires_at: refreshExpiresAt,
    },
  };
}
