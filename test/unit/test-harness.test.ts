/**
 * The test harness itself: the PostgreSQL that run-tests.ts starts is reachable through
 * connectionFromEnv(), and a per-suite database can be created, used and dropped.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import pg from "pg";
import { connectionFromEnv, uniqueDatabaseName } from "../helpers/postgres.js";
import { makeTempDir } from "../helpers/temp-dir.js";

test("uniqueDatabaseName gives distinct, valid PostgreSQL identifiers", () => {
  const a = uniqueDatabaseName("Harness-Test");
  const b = uniqueDatabaseName("Harness-Test");
  assert.notEqual(a, b);
  assert.match(a, /^harness_test_\d+_[0-9a-f]+$/);
  const long = uniqueDatabaseName("x".repeat(100));
  assert.ok(long.length <= 63, `${long} is ${long.length} chars`);
  assert.match(long, new RegExp(`_${process.pid}_[0-9a-f]+$`), "the unique suffix survives truncation");
  assert.match(uniqueDatabaseName("9lives"), /^[a-z_]/);
});

test("makeTempDir creates a directory and cleanup removes it", async () => {
  const dir = await makeTempDir("authnexus-harness");
  assert.ok(existsSync(dir.path));
  await dir.cleanup();
  assert.ok(!existsSync(dir.path));
  await dir.cleanup(); // idempotent
});

test("PostgreSQL from run-tests.ts: create database, write, read, drop", async (t) => {
  const conn = connectionFromEnv();
  if (!conn) {
    t.skip("no PostgreSQL in this run");
    return;
  }
  const name = uniqueDatabaseName("harness");
  await conn.createDatabase(name);
  try {
    const client = new pg.Client({ connectionString: conn.url(name) });
    await client.connect();
    try {
      const db = await client.query<{ db: string }>("SELECT current_database() AS db");
      assert.equal(db.rows[0]?.db, name);
      await client.query("CREATE TABLE items (id text PRIMARY KEY, n bigint NOT NULL, body bytea)");
      await client.query("INSERT INTO items (id, n, body) VALUES ($1, $2, $3), ($4, $5, $6)", [
        "a",
        1,
        Buffer.from([0, 1, 2]),
        "b",
        9_007_199_254_740_991,
        null,
      ]);
      const rows = await client.query<{ id: string; n: string; body: Buffer | null }>("SELECT id, n, body FROM items ORDER BY id");
      assert.deepEqual(
        rows.rows.map((r) => [r.id, String(r.n), r.body && [...r.body]]),
        [
          ["a", "1", [0, 1, 2]],
          ["b", "9007199254740991", null],
        ],
      );
      await assert.rejects(client.query("INSERT INTO items (id, n) VALUES ('a', 2)"), { code: "23505" });
    } finally {
      await client.end();
    }
  } finally {
    await conn.dropDatabase(name);
  }
  // Gone: connecting to it now fails with invalid_catalog_name.
  const after = new pg.Client({ connectionString: conn.url(name) });
  await assert.rejects(after.connect(), { code: "3D000" });
  await after.end().catch(() => {});
});
