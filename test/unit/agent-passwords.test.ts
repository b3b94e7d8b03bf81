import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { assertPasswordPolicy, hashAgentPassword, verifyAgentPassword } from "../../src/cp/services/agents/passwords.js";
import { roleAllows } from "../../src/cp/services/agents/roles.js";
import { parsePageRequest, parseTimeRange } from "../../src/cp/services/pagination.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";

describe("agent passwords", () => {
  test("scrypt hashes verify, carry their parameters and differ per salt", async () => {
    const a = await hashAgentPassword("correct horse battery staple");
    const b = await hashAgentPassword("correct horse battery staple");
    assert.match(a, /^\$scrypt-sha256\$n=16384,r=8,p=1\$[0-9a-f]{32}\$[0-9a-f]{64}$/);
    assert.notEqual(a, b);
    assert.equal(await verifyAgentPassword("correct horse battery staple", a), true);
    assert.equal(await verifyAgentPassword("correct horse battery stapl", a), false);
    assert.equal(await verifyAgentPassword("x", "plaintext"), false, "an unknown format never verifies");
    assert.equal(await verifyAgentPassword("correct horse battery staple\u0000", a), false, "a trailing NUL is a different password");
  });

  test("the policy names every unmet rule", () => {
    assert.doesNotThrow(() => assertPasswordPolicy("correct horse battery staple", "root"));
    try {
      assertPasswordPolicy("rootaaaa", "root");
      assert.fail("expected WEAK_PASSWORD");
    } catch (error) {
      assert.ok(isAuthNexusError(error, "WEAK_PASSWORD"));
      assert.match(error.message, /at least 12 characters/);
      assert.match(error.message, /must not contain the username/);
      assert.match(error.message, /distinct characters/);
    }
  });
});

describe("roles", () => {
  test("operator reads, admin writes, only root manages agents", () => {
    assert.equal(roleAllows("operator", "read"), true);
    assert.equal(roleAllows("operator", "write"), false);
    assert.equal(roleAllows("admin", "write"), true);
    assert.equal(roleAllows("admin", "manage_agents"), false);
    assert.equal(roleAllows("root", "manage_agents"), true);
    assert.equal(roleAllows("superuser", "read"), false);
  });
});

describe("pagination and time ranges", () => {
  test("page and page_size are validated and capped", () => {
    assert.deepEqual(parsePageRequest({}), { page: 1, pageSize: 50 });
    assert.deepEqual(parsePageRequest({ page: "3", page_size: "200" }), { page: 3, pageSize: 200 });
    for (const bad of [{ page: "0" }, { page: "-1" }, { page_size: "201" }, { page: "abc" }, { page_size: "1e3" }]) {
      assert.throws(
        () => parsePageRequest(bad),
        (e) => isAuthNexusError(e, "VALIDATION_FAILED"),
        JSON.stringify(bad),
      );
    }
  });

  test("from/to accept epoch ms or ISO-8601 and must be ordered", () => {
    assert.deepEqual(parseTimeRange({ from: "1000", to: "2026-01-01T00:00:00Z" }), { from: 1000, to: Date.UTC(2026, 0, 1) });
    assert.throws(() => parseTimeRange({ from: "yesterday" }), /from must be/);
    assert.throws(() => parseTimeRange({ from: "2000", to: "1000" }), /must not be after/);
  });
});
