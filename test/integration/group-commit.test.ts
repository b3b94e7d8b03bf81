/**
 * Group commit on SQLite (src/shared/db/group-commit.ts): units asked for in the same turn of
 * the event loop share one transaction; a unit that throws undoes only its own writes and
 * rejects only its caller; callers hear back only once the COMMIT is durable (another
 * connection sees the rows); a COMMIT that fails rejects every unit of the batch and leaves
 * nothing behind.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import SqliteDatabase from "better-sqlite3";
import { type Generated, type Kysely, sql } from "kysely";
import { GROUP_COMMIT_MAX_UNITS, groupCommit, openDatabase } from "../../src/shared/db/index.js";

interface Schema {
  parent: { id: number };
  child: { id: number; parent_id: number };
  note: { id: Generated<number>; text: string };
}

const dir = mkdtempSync(join(tmpdir(), "authnexus-group-commit-"));
const file = join(dir, "g.db");
let db: Kysely<Schema>;

before(async () => {
  db = await openDatabase<Schema>({ type: "sqlite", path: file, busyTimeoutMs: 5000 });
  await sql`create table note (id integer primary key, text text not null unique)`.execute(db);
  await sql`create table parent (id integer primary key)`.execute(db);
  // Checked at COMMIT, not at the statement: the way to make a COMMIT fail on purpose.
  await sql`create table child (id integer primary key, parent_id integer not null references parent (id) deferrable initially deferred)`.execute(
    db,
  );
});
after(async () => {
  await db.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** Rows as a separate connection sees them: only what was committed. */
function committedNotes(): string[] {
  const other = new SqliteDatabase(file, { fileMustExist: true, readonly: true });
  try {
    return (other.prepare("select text from note order by id").all() as { text: string }[]).map((row) => row.text);
  } finally {
    other.close();
  }
}

test("units asked for together share one transaction, and each caller hears back after the COMMIT", async () => {
  const writes = groupCommit(db);
  const transactions = new Set<unknown>();
  const results = await Promise.all(
    ["a", "b", "c", "d"].map((text) =>
      writes.run(async (trx) => {
        transactions.add(trx);
        await trx.insertInto("note").values({ text }).execute();
        assert.deepEqual(committedNotes(), [], "nothing is visible outside before the batch commits");
        return text.toUpperCase();
      }),
    ),
  );
  assert.deepEqual(results, ["A", "B", "C", "D"]);
  assert.equal(transactions.size, 1, "one transaction for the four units");
  assert.deepEqual(committedNotes(), ["a", "b", "c", "d"]);
});

test("a unit that throws undoes only its own writes and rejects only its caller", async () => {
  const writes = groupCommit(db);
  const outcomes = await Promise.allSettled([
    writes.run((trx) => trx.insertInto("note").values({ text: "e" }).execute()),
    writes.run(async (trx) => {
      await trx.insertInto("note").values({ text: "half-done" }).execute();
      throw new Error("refused after writing");
    }),
    // A unique violation inside the batch: the statement fails, the batch goes on.
    writes.run((trx) => trx.insertInto("note").values({ text: "a" }).execute()),
    writes.run((trx) => trx.insertInto("note").values({ text: "f" }).execute()),
  ]);
  assert.deepEqual(
    outcomes.map((o) => o.status),
    ["fulfilled", "rejected", "rejected", "fulfilled"],
  );
  assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /refused after writing/);
  assert.match(String((outcomes[2] as PromiseRejectedResult).reason), /UNIQUE/);
  assert.deepEqual(committedNotes(), ["a", "b", "c", "d", "e", "f"]);
});

test("a COMMIT that fails rejects every unit of its batch and leaves nothing behind", async () => {
  const writes = groupCommit(db);
  const outcomes = await Promise.allSettled([
    writes.run((trx) => trx.insertInto("note").values({ text: "lost-1" }).execute()),
    writes.run((trx) => trx.insertInto("child").values({ id: 1, parent_id: 404 }).execute()),
    writes.run((trx) => trx.insertInto("note").values({ text: "lost-2" }).execute()),
  ]);
  assert.deepEqual(
    outcomes.map((o) => o.status),
    ["rejected", "rejected", "rejected"],
  );
  assert.match(String((outcomes[0] as PromiseRejectedResult).reason), /FOREIGN KEY/);
  assert.deepEqual(committedNotes(), ["a", "b", "c", "d", "e", "f"]);
  // The connection is usable afterwards.
  await writes.run((trx) => trx.insertInto("note").values({ text: "g" }).execute());
  assert.deepEqual(committedNotes().at(-1), "g");
});

test("a burst larger than one batch is split into batches of at most GROUP_COMMIT_MAX_UNITS", async () => {
  const writes = groupCommit(db);
  const perTransaction = new Map<unknown, number>();
  const count = GROUP_COMMIT_MAX_UNITS * 2 + 5;
  await Promise.all(
    Array.from({ length: count }, (_, i) =>
      writes.run(async (trx) => {
        perTransaction.set(trx, (perTransaction.get(trx) ?? 0) + 1);
        await trx
          .insertInto("note")
          .values({ text: `burst-${i}` })
          .execute();
      }),
    ),
  );
  assert.deepEqual([...perTransaction.values()], [GROUP_COMMIT_MAX_UNITS, GROUP_COMMIT_MAX_UNITS, 5]);
  assert.equal(committedNotes().filter((text) => text.startsWith("burst-")).length, count);
});

test("a unit during which SQLite undoes the whole transaction (disk full) gets its own error; the others commit in the next batch", async () => {
  const writes = groupCommit(db);
  const [{ page_count: pages }] = (await sql<{ page_count: number }>`pragma page_count`.execute(db)).rows as [{ page_count: number }];
  // Room for small rows, not for a megabyte: the big insert fails with SQLITE_FULL, which
  // rolls back the whole transaction, the other units' savepoints with it.
  await sql.raw(`pragma max_page_count = ${pages + 8}`).execute(db);
  try {
    const outcomes = await Promise.allSettled([
      writes.run((trx) => trx.insertInto("note").values({ text: "before-full" }).execute()),
      writes.run((trx) => sql`insert into note (text) values (hex(randomblob(1000000)))`.execute(trx)),
      writes.run((trx) => trx.insertInto("note").values({ text: "after-full" }).execute()),
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ["fulfilled", "rejected", "fulfilled"],
    );
    assert.equal((outcomes[1] as PromiseRejectedResult).reason.code, "SQLITE_FULL", "the failing unit sees what failed");
    const committed = committedNotes();
    assert.ok(committed.includes("before-full") && committed.includes("after-full"));
  } finally {
    await sql.raw("pragma max_page_count = 1073741823").execute(db);
  }
});
