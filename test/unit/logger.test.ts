import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createLogger, createMemoryLogger, isSensitiveKey, REDACTED } from "../../src/shared/log/index.js";

describe("structured logger", () => {
  test("writes one JSON object per event with category, level and fields", () => {
    const { logger, events } = createMemoryLogger("Setup");
    logger.info("setup.completed", { root_agent_id: "agt_1" });
    logger.category("PKI").warn("cert.revoked", { certificate_id: "crt_1" });
    const [first, second] = events();
    assert.deepEqual(
      { ...first, ts: undefined },
      { ts: undefined, level: "info", category: "Setup", msg: "setup.completed", root_agent_id: "agt_1" },
    );
    assert.equal(second?.category, "PKI");
    assert.equal(second?.level, "warn");
  });

  test("never writes secrets: sensitive field names are redacted at any depth", () => {
    const { logger, lines } = createMemoryLogger();
    logger.info("x", {
      password: "hunter2hunter2",
      access_token: "tok-123",
      nested: { refresh_token: "tok-456", app_secret: "ans_s", master_key: "k", key_pem: "-----BEGIN" },
      authorization: "Bearer abc",
      console_token_path: "/data/console-token",
    });
    const out = lines.join("\n");
    for (const secret of ["hunter2hunter2", "tok-123", "tok-456", "ans_s", "Bearer abc", "-----BEGIN"])
      assert.ok(!out.includes(secret), secret);
    assert.ok(out.includes(REDACTED));
    assert.ok(out.includes("/data/console-token"), "paths to secrets are not secrets");
  });

  test("client-supplied CR/LF cannot forge a second line", () => {
    const lines: string[] = [];
    const logger = createLogger({ category: "Admin", format: "pretty", sink: (l) => lines.push(l) });
    logger.warn("agent.login_failed", { username: "eve\n2026-01-01 INFO [Setup] setup.completed" });
    assert.equal(lines.length, 1);
    assert.ok(!lines[0]?.includes("\n"));
    assert.ok(lines[0]?.includes("\\n"));
  });

  test("respects the level threshold", () => {
    const lines: string[] = [];
    const logger = createLogger({ category: "DB", level: "warn", format: "json", sink: (l) => lines.push(l) });
    logger.debug("a");
    logger.info("b");
    logger.error("c");
    assert.deepEqual(
      lines.map((l) => JSON.parse(l).msg),
      ["c"],
    );
  });

  test("classifies keys", () => {
    for (const key of ["password", "admin_password", "access_token", "Authorization", "secret", "private_key", "api_key"])
      assert.ok(isSensitiveKey(key), key);
    for (const key of ["console_token_path", "agent_id", "expires_at", "username", "fingerprint_sha256"])
      assert.ok(!isSensitiveKey(key), key);
  });
});
