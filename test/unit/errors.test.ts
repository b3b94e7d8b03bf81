/**
 * The error catalogue and its two transports. What must hold: every code has an HTTP status and
 * a binary-protocol status, the protocol statuses are unique (an SDK maps them back), the public
 * detail is sent and the internal detail never is, a database that cannot be reached is a
 * retryable 503 on both transports, and anything unexpected is a fixed INTERNAL answer.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isDatabaseUnavailable } from "../../src/shared/db/errors.js";
import {
  AuthNexusError,
  ERROR_CATALOGUE,
  type ErrorCode,
  errorCodeForWire,
  errorFromProtocol,
  errorToProtocol,
  fieldInvalid,
  normalizeError,
  publicError,
} from "../../src/shared/errors/index.js";

const codes = Object.keys(ERROR_CATALOGUE) as ErrorCode[];

describe("error catalogue", () => {
  it("every entry has an HTTP status and a unique 16-bit protocol status", () => {
    const seen = new Map<number, ErrorCode>();
    for (const code of codes) {
      const entry = ERROR_CATALOGUE[code];
      assert.ok(entry.http >= 400 && entry.http <= 599, `${code} http`);
      assert.ok(Number.isInteger(entry.wire) && entry.wire > 0 && entry.wire <= 0xffff, `${code} wire`);
      assert.equal(seen.get(entry.wire), undefined, `${code} reuses wire status ${entry.wire} of ${seen.get(entry.wire)}`);
      seen.set(entry.wire, code);
      assert.equal(errorCodeForWire(entry.wire), code);
      assert.ok(entry.message.length > 0);
    }
  });

  it("retryable codes say when to come back; others do not", () => {
    for (const code of codes) {
      const entry = ERROR_CATALOGUE[code];
      assert.equal(entry.retryable, entry.retryAfterS !== undefined, code);
    }
    assert.equal(ERROR_CATALOGUE.DB_UNAVAILABLE.retryable, true);
    assert.equal(ERROR_CATALOGUE.DB_UNAVAILABLE.http, 503);
  });
});

describe("public and internal detail", () => {
  it("the public detail is the client's `details`; the internal detail never leaves", () => {
    const error = new AuthNexusError("VALIDATION_FAILED", { publicDetail: [{ field: "x", problem: "bad" }], detail: { secret_row_id: 7 } });
    const answer = publicError(error);
    assert.deepEqual(answer.details, [{ field: "x", problem: "bad" }]);
    assert.equal(JSON.stringify(answer).includes("secret_row_id"), false);
  });

  it("an unexposed code is answered as INTERNAL with the fixed message, whatever it says inside", () => {
    const answer = publicError(new AuthNexusError("PKI_DECRYPT_FAILED", { message: "key for ca_123 failed", publicDetail: { leak: 1 } }));
    assert.equal(answer.code, "INTERNAL");
    assert.equal(answer.message, "Internal error.");
    assert.equal(answer.details, undefined);
    assert.equal(answer.concealed, true);
  });

  it("fieldInvalid names the field in the message and in the details", () => {
    const error = fieldInvalid("since", "must be an integer", { head: 4 });
    assert.equal(error.code, "VALIDATION_FAILED");
    assert.match(error.message, /since: must be an integer/);
    assert.deepEqual(error.publicDetail, [{ field: "since", problem: "must be an integer", head: 4 }]);
  });
});

describe("normalizeError", () => {
  const unavailable = [
    Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }),
    Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }),
    Object.assign(new Error("the database system is starting up"), { code: "57P03" }),
    Object.assign(new Error("connection failure"), { code: "08006" }),
    new Error("Connection terminated unexpectedly"),
    new Error("timeout exceeded when trying to connect"),
    Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" }),
    Object.assign(new Error("disk I/O error"), { code: "SQLITE_IOERR_WRITE" }),
    new Error("query failed", { cause: Object.assign(new Error("refused"), { code: "ECONNREFUSED" }) }),
  ];

  it("a database that cannot be reached is DB_UNAVAILABLE: 503, retryable, with Retry-After", () => {
    for (const error of unavailable) {
      assert.equal(isDatabaseUnavailable(error), true, error.message);
      const normal = normalizeError(error);
      assert.equal(normal.code, "DB_UNAVAILABLE", error.message);
      const answer = publicError(normal);
      assert.equal(answer.status, 503);
      assert.equal(answer.retryable, true);
      assert.equal(answer.retryAfterS, 5);
    }
  });

  it("a query the database refused is not 'unavailable'", () => {
    for (const error of [
      Object.assign(new Error("duplicate key"), { code: "23505" }),
      Object.assign(new Error("UNIQUE constraint failed"), { code: "SQLITE_CONSTRAINT_UNIQUE" }),
      Object.assign(new Error("syntax error"), { code: "42601" }),
      new TypeError("x is undefined"),
    ]) {
      assert.equal(isDatabaseUnavailable(error), false, error.message);
      assert.equal(normalizeError(error).code, "INTERNAL");
    }
  });

  it("our own errors pass through unchanged", () => {
    const error = new AuthNexusError("NOT_FOUND");
    assert.equal(normalizeError(error), error);
  });
});

describe("the binary protocol's mapping", () => {
  it("carries the catalogue's wire status and public message; an SDK maps it back to the same code", () => {
    for (const code of codes) {
      const mapped = errorToProtocol(new AuthNexusError(code));
      const back = errorFromProtocol(mapped.wire, mapped.message);
      if (ERROR_CATALOGUE[code].expose) {
        assert.equal(mapped.wire, ERROR_CATALOGUE[code].wire, code);
        assert.equal(back.code, code);
        assert.equal(mapped.concealed, false);
      } else {
        assert.equal(back.code, "INTERNAL", `${code} is concealed on the wire too`);
        assert.equal(mapped.concealed, true);
      }
    }
  });

  it("anything unexpected goes out as INTERNAL, a lost database as retryable DB_UNAVAILABLE", () => {
    const internal = errorToProtocol(new Error("boom at row 7"));
    assert.equal(internal.wire, ERROR_CATALOGUE.INTERNAL.wire);
    assert.equal(internal.message, "Internal error.");
    assert.equal(internal.concealed, true);
    const down = errorToProtocol(Object.assign(new Error("refused"), { code: "ECONNREFUSED" }));
    assert.equal(down.wire, ERROR_CATALOGUE.DB_UNAVAILABLE.wire);
    assert.equal(down.retryable, true);
  });

  it("a status this build does not know becomes INTERNAL with the server's text", () => {
    const unknown = errorFromProtocol(65000, "something new");
    assert.equal(unknown.code, "INTERNAL");
    assert.equal(unknown.message, "something new");
  });
});
