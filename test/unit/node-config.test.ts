/**
 * serve-node's configuration: --agent is required, defaults (health on loopback 9093, SQLite
 * Runtime DB in the data dir), the DB flags name the Runtime DB, environment variables work,
 * and every problem is reported at once.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { describe, test } from "node:test";
import { resolveNodeConfig } from "../../src/node/config.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";

describe("resolveNodeConfig", () => {
  test("defaults: loopback health on 9093, SQLite runtime.db in the data dir", () => {
    const config = resolveNodeConfig({ agent: "pkg/node_agent.json", "data-dir": "/var/lib/an" }, {});
    assert.equal(config.agentFile, path.resolve("pkg/node_agent.json"));
    assert.deepEqual(config.healthListen, { host: "127.0.0.1", port: 9093 });
    assert.deepEqual(config.runtimeDb, { type: "sqlite", path: "/var/lib/an/runtime.db", busyTimeoutMs: 5000 });
    assert.equal(config.logLevel, "info");
  });

  test("the plain DB flags name the Runtime DB (PostgreSQL), also from the environment", () => {
    const config = resolveNodeConfig(
      { agent: "a.json", "db-type": "postgres", "db-host": "db.internal" },
      { AUTHNEXUS_DB_NAME: "rt", AUTHNEXUS_HEALTH_LISTEN: "0.0.0.0:7000" },
    );
    assert.equal(config.runtimeDb.type, "postgres");
    assert.equal(config.runtimeDb.type === "postgres" && config.runtimeDb.host, "db.internal");
    assert.equal(config.runtimeDb.type === "postgres" && config.runtimeDb.database, "rt");
    assert.deepEqual(config.healthListen, { host: "0.0.0.0", port: 7000 });
  });

  test("lists every problem at once", () => {
    assert.throws(
      () => resolveNodeConfig({ "health-listen": "nope", "db-type": "mysql", "log-level": "loud" }, {}),
      (error: unknown) => {
        assert.ok(isAuthNexusError(error, "CONFIG_INVALID"));
        for (const needle of ["--agent is required", "--health-listen", "--db-type", "--log-level"])
          assert.match(error.message, new RegExp(needle));
        return true;
      },
    );
  });
});
