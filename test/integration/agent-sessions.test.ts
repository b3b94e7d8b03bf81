/**
 * Agent sessions through the real service: rotating refresh tokens and replay detection at any
 * depth of the rotation chain. Attack: a refresh token copied from a laptop several rotations
 * ago is presented by an attacker; the session it belongs to must die.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { authenticateAccessToken, loginAgent, refreshAgentSession } from "../../src/cp/services/agent-sessions.js";
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

    test("an unknown refresh token is refused without revoking anything", async () => {
      const pair = await login();
      await assert.rejects(refreshAgentSession(cp.ctx, "A".repeat(43)), (e) => isAuthNexusError(e, "INVALID_REFRESH_TOKEN"));
      await authenticateAccessToken(cp.ctx, pair.access_token);
    });
  });
}
