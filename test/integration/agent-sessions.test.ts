/**
 * Agent sessions through the real service: rotating refresh tokens and replay detection at any
 * depth of the rotation chain. Attack: a refresh token copied from a laptop several rotations
 * ago is presented by an attacker; the session it belongs to must die.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { changeAgentPassword, createAgent, updateAgent } from "../../src/cp/services/agents/agents.js";
import { authenticateAccessToken, loginAgent, refreshAgentSession } from "../../src/cp/services/agents/sessions.js";
import { AGENT_SESSION_MAX_LIFETIME_MS } from "../../src/shared/config/defaults.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

for (const variant of dbVariants()) {
  describe(`agent sessions on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    before(async () => {
      cp = await createTestCp(variant, "sessions");
      await completeSetup(cp.ctx);
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });
    const login = () => loginAgent(cp.ctx, { username: ROOT_USERNAME, password: ROOT_PASSWORD, ip: "192.0.2.1", userAgent: "test" });

    test("replaying a refresh token spent two rotations ago revokes the session", async () => {
      const a = await login();
      const b = await refreshAgentSession(cp.ctx, a.refresh_token);
      const c = await refreshAgentSession(cp.ctx, b.refresh_token);
      await authenticateAccessToken(cp.ctx, c.access_token);
      await assert.rejects(refreshAgentSession(cp.ctx, a.refresh_token), (e) => isAuthNexusError(e, "INVALID_REFRESH_TOKEN"));
      await assert.rejects(authenticateAccessToken(cp.ctx, c.access_token), (e) => isAuthNexusError(e, "UNAUTHENTICATED"));
      await assert.rejects(refreshAgentSession(cp.ctx, c.refresh_token), (e) => isAuthNexusError(e, "INVALID_REFRESH_TOKEN"));
      assert.ok(cp.logLines.some((l) => l.includes("agent.refresh_token_reused")));
    });

    test("a replay does not touch the agent's other sessions", async () => {
      const victim = await login();
      const other = await login();
      const rotated = await refreshAgentSession(cp.ctx, victim.refresh_token);
      await assert.rejects(refreshAgentSession(cp.ctx, victim.refresh_token));
      await assert.rejects(authenticateAccessToken(cp.ctx, rotated.access_token));
      const stillFine = await authenticateAccessToken(cp.ctx, other.access_token);
      assert.equal(stillFine.username, ROOT_USERNAME);
    });

    test("access tokens expire on the clock; refresh tokens outlive them, then expire too", async () => {
      const pair = await login();
      cp.clock.advance(pair.expires_in * 1000 + 1);
      await assert.rejects(authenticateAccessToken(cp.ctx, pair.access_token), (e) => isAuthNexusError(e, "UNAUTHENTICATED"));
      const next = await refreshAgentSession(cp.ctx, pair.refresh_token);
      await authenticateAccessToken(cp.ctx, next.access_token);
      cp.clock.advance(next.refresh_expires_in * 1000 + 1);
      await assert.rejects(refreshAgentSession(cp.ctx, next.refresh_token), (e) => isAuthNexusError(e, "INVALID_REFRESH_TOKEN"));
    });

    test("attack: a burst of parallel guesses gets no more than the five tries a sequential attacker gets", async () => {
      await createAgent(cp.ctx, { username: "burst-target", password: "Sturdy-Guard-Pass-1", role: "operator", createdBy: null });
      const guess = (i: number) =>
        loginAgent(cp.ctx, { username: "burst-target", password: `wrong guess ${i}`, ip: "203.0.113.7", userAgent: null });
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => guess(i)));
      const codes = results.map((r) => (r.status === "rejected" && isAuthNexusError(r.reason) ? r.reason.code : "OK"));
      const guessed = codes.filter((c) => c === "INVALID_CREDENTIALS").length;
      assert.ok(guessed <= 5, `at most 5 password checks ran, got ${guessed}: ${codes.join(",")}`);
      assert.equal(codes.filter((c) => c === "LOGIN_THROTTLED").length, 20 - guessed);
      // Whatever the burst used up, the attacker's total stays at five before the lock.
      for (let i = guessed; i < 5; i++) await assert.rejects(guess(100 + i), (e) => isAuthNexusError(e, "INVALID_CREDENTIALS"));
      await assert.rejects(
        loginAgent(cp.ctx, { username: "burst-target", password: "Sturdy-Guard-Pass-1", ip: "203.0.113.7", userAgent: null }),
        (e) => isAuthNexusError(e, "LOGIN_THROTTLED"),
      );
      const pending = await cp.ctx.controlDb.selectFrom("agent_login_logs").select("id").where("result", "=", "pending").execute();
      assert.equal(pending.length, 0, "every reserved attempt is finished");
    });

    test("attack: a stolen access token cannot guess the current password without limit", async () => {
      const victim = await createAgent(cp.ctx, {
        username: "pw-victim",
        password: "Quiet-Harbor-Pass-123",
        role: "admin",
        createdBy: null,
      });
      const origin = { ip: "203.0.113.8", userAgent: "curl" };
      for (let i = 0; i < 5; i++) {
        await assert.rejects(
          changeAgentPassword(cp.ctx, { agentId: victim.id, currentPassword: `guess ${i}`, newPassword: "Fresh-Harbor-Pass-456", origin }),
          (e) => isAuthNexusError(e, "INVALID_CREDENTIALS"),
        );
      }
      await assert.rejects(
        changeAgentPassword(cp.ctx, {
          agentId: victim.id,
          currentPassword: "Quiet-Harbor-Pass-123",
          newPassword: "Fresh-Harbor-Pass-456",
          origin,
        }),
        (e) => isAuthNexusError(e, "LOGIN_THROTTLED"),
      );
      const rows = await cp.ctx.controlDb.selectFrom("agent_login_logs").select(["reason"]).where("username", "=", "pw-victim").execute();
      assert.equal(rows.filter((r) => r.reason === "bad_current_password").length, 5);
    });

    test("a session ends at its absolute lifetime however often it is refreshed", async () => {
      let pair = await login();
      const step = 6 * 24 * 3600 * 1000;
      let elapsed = 0;
      while (elapsed + step < AGENT_SESSION_MAX_LIFETIME_MS) {
        cp.clock.advance(step);
        elapsed += step;
        pair = await refreshAgentSession(cp.ctx, pair.refresh_token);
      }
      assert.ok(pair.refresh_expires_in * 1000 <= AGENT_SESSION_MAX_LIFETIME_MS - elapsed);
      cp.clock.advance(AGENT_SESSION_MAX_LIFETIME_MS - elapsed + 1);
      await assert.rejects(refreshAgentSession(cp.ctx, pair.refresh_token), (e) => isAuthNexusError(e, "INVALID_REFRESH_TOKEN"));
    });

    test("two roots demoting each other at once leave one root standing", async () => {
      const second = await createAgent(cp.ctx, {
        username: "second-root",
        password: "Another-Keeper-Pass-1",
        role: "root",
        createdBy: null,
      });
      const roots = await cp.ctx.controlDb
        .selectFrom("agents")
        .select("id")
        .where("role", "=", "root")
        .where("status", "=", "active")
        .execute();
      const others = roots.filter((r) => r.id !== second.id);
      for (const r of others.slice(1)) await updateAgent(cp.ctx, r.id, { role: "admin" });
      const first = others[0]?.id ?? "";
      const results = await Promise.allSettled([
        updateAgent(cp.ctx, first, { role: "admin" }),
        updateAgent(cp.ctx, second.id, { status: "disabled" }),
      ]);
      assert.equal(results.filter((r) => r.status === "fulfilled").length, 1, JSON.stringify(results.map((r) => r.status)));
      const loser = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      assert.ok(isAuthNexusError(loser.reason, "LAST_ROOT_AGENT"), String(loser.reason));
      const left = await cp.ctx.controlDb
        .selectFrom("agents")
        .select("id")
        .where("role", "=", "root")
        .where("status", "=", "active")
        .execute();
      assert.equal(left.length, 1);
    });

    test("an unknown refresh token is refused without revoking anything", async () => {
      const pair = await login();
      await assert.rejects(refreshAgentSession(cp.ctx, "A".repeat(43)), (e) => isAuthNexusError(e, "INVALID_REFRESH_TOKEN"));
      await authenticateAccessToken(cp.ctx, pair.access_token);
    });
  });
}
