/**
 * Every agent password check (login, and the current password on a password change) runs
 * through here: it is reserved in the login log before the hash is computed, throttled on the
 * failures already recorded, and finished with its result. Reserving first matters: a burst of
 * parallel guesses sees its own pending rows, so it gets the same five tries as a sequential
 * one. The log is the only state, so the throttle survives restarts and is shared by every CP
 * process on one Control DB. A row joins the audit chain when it is finished (its result known):
 * a `pending` row is not chained yet.
 */
import { AGENT_LOGIN_FAILURE_WINDOW_MS, AGENT_LOGIN_MAX_FAILURES } from "../../../shared/config/defaults.js";
import { writeChained } from "../../../shared/db/audit-chains.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import type { CpContext } from "../context.js";

export type PasswordCheckResult = "success" | "bad_credentials" | "unknown_user" | "disabled" | "bad_current_password";

export interface PasswordAttempt {
  /** Already normalised. */
  username: string;
  ip: string | null;
  userAgent: string | null;
  /** What the attempt is for, in the log line: "login" or "password_change". */
  purpose: "login" | "password_change";
}

export interface PasswordCheckOutcome {
  result: PasswordCheckResult;
  agentId: string | null;
}

export async function runThrottledPasswordCheck<T extends PasswordCheckOutcome>(
  ctx: CpContext,
  attempt: PasswordAttempt,
  check: () => Promise<T>,
): Promise<T> {
  const reserved = await reserveAttempt(ctx, attempt);
  const retryAfterS = await throttleDelaySeconds(ctx, attempt, reserved.id);
  if (retryAfterS > 0) {
    await finishAttempt(ctx, reserved, attempt, { result: "throttled", agentId: null });
    throw new AuthNexusError("LOGIN_THROTTLED", { headers: { "Retry-After": String(retryAfterS) } });
  }
  const outcome = await check();
  await finishAttempt(ctx, reserved, attempt, outcome);
  return outcome;
}

interface ReservedAttempt {
  id: string;
  created_at: number;
  username: string;
  ip: string | null;
  user_agent: string | null;
}

async function reserveAttempt(ctx: CpContext, attempt: PasswordAttempt): Promise<ReservedAttempt> {
  const reserved = {
    id: newId("alg"),
    created_at: ctx.clock.now(),
    username: attempt.username.slice(0, 128),
    ip: attempt.ip,
    user_agent: attempt.userAgent?.slice(0, 512) ?? null,
  };
  await ctx.controlDb
    .insertInto("agent_login_logs")
    .values({ ...reserved, agent_id: null, result: "pending", reason: attempt.purpose === "login" ? null : attempt.purpose })
    .execute();
  return reserved;
}

async function finishAttempt(
  ctx: CpContext,
  reserved: ReservedAttempt,
  attempt: PasswordAttempt,
  outcome: { result: PasswordCheckResult | "throttled"; agentId: string | null },
): Promise<void> {
  const { result, agentId } = outcome;
  const finished = {
    ...reserved,
    agent_id: agentId,
    result: result === "success" ? "success" : result === "throttled" ? "throttled" : "failure",
    reason: result === "success" ? null : result,
  };
  await writeChained(ctx.controlDb, "agent_login_logs", finished, (row) =>
    ctx.controlDb
      .updateTable("agent_login_logs")
      .set({
        agent_id: row.agent_id,
        result: row.result,
        reason: row.reason,
        chain_id: row.chain_id,
        chain_seq: row.chain_seq,
        chain_hash: row.chain_hash,
      })
      .where("id", "=", row.id)
      .compile(),
  );
  const fields = { username: attempt.username.slice(0, 128), ip: attempt.ip, result, agent_id: agentId, purpose: attempt.purpose };
  if (result === "success") ctx.log.info(attempt.purpose === "login" ? "agent.login" : "agent.password_verified", fields);
  else ctx.log.warn(attempt.purpose === "login" ? "agent.login_failed" : "agent.password_check_failed", fields);
}

/**
 * Failures (pending attempts included) for this username+IP since the later of the window start
 * and the last success. Throttled attempts are not failures and do not extend the lock.
 */
async function throttleDelaySeconds(ctx: CpContext, attempt: PasswordAttempt, ownId: string): Promise<number> {
  const now = ctx.clock.now();
  const recent = await ctx.controlDb
    .selectFrom("agent_login_logs")
    .select(["created_at", "result"])
    .where("username", "=", attempt.username.slice(0, 128))
    .where((eb) => (attempt.ip === null ? eb("ip", "is", null) : eb("ip", "=", attempt.ip)))
    .where("created_at", ">", now - AGENT_LOGIN_FAILURE_WINDOW_MS)
    .where("result", "!=", "throttled")
    .where("id", "!=", ownId)
    .orderBy("created_at", "desc")
    .limit(AGENT_LOGIN_MAX_FAILURES)
    .execute();
  const failures = recent.filter((r) => r.result !== "success");
  if (failures.length < AGENT_LOGIN_MAX_FAILURES || recent.some((r) => r.result === "success")) return 0;
  const oldest = failures[failures.length - 1];
  const unlockAt = (oldest?.created_at ?? now) + AGENT_LOGIN_FAILURE_WINDOW_MS;
  return Math.max(1, Math.ceil((unlockAt - now) / 1000));
}
