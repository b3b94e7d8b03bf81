import assert from "node:assert/strict";
import path from "node:path";
import { describe, test } from "node:test";
import { resolveCpConfig } from "../../src/cp/config.js";
import { parseHostPort } from "../../src/shared/config/host-port.js";
import { envNameForFlag } from "../../src/shared/config/options.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";

describe("serve-cp configuration", () => {
  test("defaults: SQLite files in ./authnexus-data and the documented ports", () => {
    const config = resolveCpConfig({}, {});
    assert.equal(config.dataDir, path.resolve("authnexus-data"));
    assert.deepEqual(config.adminListen, { host: "127.0.0.1", port: 9090 });
    assert.deepEqual(config.cpListen, { host: "0.0.0.0", port: 9091 });
    assert.deepEqual(config.ocspListen, { host: "0.0.0.0", port: 9092 });
    assert.deepEqual(config.controlDb, { type: "sqlite", path: path.resolve("authnexus-data/control.db"), busyTimeoutMs: 5000 });
    assert.equal(config.runtimeDb.type === "sqlite" && config.runtimeDb.path, path.resolve("authnexus-data/runtime.db"));
  });

  test("flags win over AUTHNEXUS_* variables, which win over defaults", () => {
    const env = {
      AUTHNEXUS_DB_TYPE: "postgres",
      AUTHNEXUS_DB_HOST: "db.internal",
      AUTHNEXUS_DB_PORT: "6543",
      AUTHNEXUS_RUNTIME_DB_TYPE: "postgres",
      AUTHNEXUS_RUNTIME_DB_NAME: "rt",
      AUTHNEXUS_DB_STATEMENT_TIMEOUT: "2000",
    };
    const config = resolveCpConfig({ "db-host": "flag.internal" }, env);
    assert.equal(config.controlDb.type, "postgres");
    if (config.controlDb.type !== "postgres" || config.runtimeDb.type !== "postgres") return;
    assert.equal(config.controlDb.host, "flag.internal");
    assert.equal(config.controlDb.port, 6543);
    assert.equal(config.controlDb.database, "authnexus_control");
    assert.equal(config.controlDb.statementTimeoutMs, 2000);
    assert.equal(config.controlDb.lockTimeoutMs, 5000);
    assert.equal(config.controlDb.connectTimeoutS, 5);
    assert.equal(config.runtimeDb.database, "rt");
    assert.equal(envNameForFlag("--runtime-sqlite-busy-timeout"), "AUTHNEXUS_RUNTIME_SQLITE_BUSY_TIMEOUT");
  });

  test("every problem is reported at once", () => {
    try {
      resolveCpConfig(
        {
          "db-type": "mysql",
          "admin-listen": "nonsense",
          "sqlite-busy-timeout": "-3",
          "public-cp-url": "ftp://x",
          "log-level": "loud",
          "runtime-db-port": "70000",
          "runtime-db-type": "postgres",
        },
        {},
      );
      assert.fail("expected CONFIG_INVALID");
    } catch (error) {
      assert.ok(isAuthNexusError(error, "CONFIG_INVALID"));
      for (const flag of ["--db-type", "--admin-listen", "--public-cp-url", "--log-level", "--runtime-db-port"])
        assert.ok(error.message.includes(flag), flag);
    }
  });

  test("the Control DB and the Runtime DB may not be the same database", () => {
    assert.throws(() => resolveCpConfig({ "db-path": "same.db", "runtime-db-path": "same.db" }, {}), /must be separate databases/);
    const pg = { "db-type": "postgres", "runtime-db-type": "postgres", "db-name": "one", "runtime-db-name": "one" };
    assert.throws(() => resolveCpConfig(pg, {}), /must be separate databases/);
    assert.doesNotThrow(() => resolveCpConfig({ ...pg, "runtime-db-name": "two" }, {}));
  });

  test("listen addresses", () => {
    const problems: string[] = [];
    assert.deepEqual(parseHostPort("127.0.0.1:0", "--x", problems), { host: "127.0.0.1", port: 0 });
    assert.deepEqual(parseHostPort("[::1]:9090", "--x", problems), { host: "::1", port: 9090 });
    assert.deepEqual(parseHostPort(":9091", "--x", problems), { host: "0.0.0.0", port: 9091 });
    assert.deepEqual(problems, []);
    parseHostPort("host:99999", "--x", problems);
    parseHostPort("no-port", "--y", problems);
    assert.equal(problems.length, 2);
  });
});
