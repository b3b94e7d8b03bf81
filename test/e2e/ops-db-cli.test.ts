/**
 * `authnexus ops db …` against a REAL `serve-cp` child on SQLite (the built CLI: run
 * `npm run build` first).
 *
 * - backup of both databases while the CP is being written to (applications into the Control
 *   DB, users into the Runtime DB, in a loop): each copy is mode 0600 and passes
 *   integrity_check, and a CP started on the two copies (in a fresh data dir, with the same
 *   master key) serves what was written before the backup;
 * - checkpoint, vacuum, status and migrate on the running CP's files;
 * - the wrong role's database is refused (DB_MIGRATION_MISMATCH), a missing --db is a usage error.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import SqliteDatabase from "better-sqlite3";
import { type CpProcess, runCli, startCpProcess } from "../helpers/cp-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

type Obj = Record<string, any>;
const PASSWORD = "correct horse battery staple";
const MASTER_KEY = randomBytes(32).toString("hex");

describe("authnexus ops db (SQLite)", () => {
  let dir: TempDir;
  let cp: CpProcess;
  let restored: CpProcess | undefined;
  let token = "";
  let dataDir = "";
  const db = (args: string[]) => runCli(["ops", "db", ...args, "--data-dir", dataDir], { timeoutMs: 60_000 });
  const json = (r: { code: number; stdout: string; stderr: string }): Obj => {
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    return JSON.parse(r.stdout) as Obj;
  };

  before(async () => {
    dir = await makeTempDir("authnexus-e2e-ops-db");
    dataDir = join(dir.path, "cp");
    mkdirSync(dataDir);
    cp = await startCpProcess({ dataDir, env: { AUTHNEXUS_MASTER_KEY: MASTER_KEY } });
    const setup = await runCli(
      ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", dataDir, "--username", "root", "--password-stdin"],
      {
        input: PASSWORD,
      },
    );
    assert.equal(setup.code, 0, setup.stderr);
    token = (await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: PASSWORD } })).json.access_token;
  });
  after(async () => {
    await restored?.stop("SIGTERM");
    await cp?.stop("SIGTERM");
    await dir?.cleanup();
  });

  test("backup under write load: 0600 copies that pass integrity_check, and a CP restored from them serves the data", async () => {
    const first = await cp.adminFetch("POST", "/admin/v1/applications", { token, body: { name: "Before Backup" } });
    assert.equal(first.status, 201, first.text);
    const appId = first.json.app_id as string;
    const user = await cp.adminFetch("POST", `/admin/v1/applications/${appId}/users`, {
      token,
      body: { username: "kept", password: "kept password 1" },
    });
    assert.equal(user.status, 201, user.text);

    // Writers into both databases until the backups are done.
    let writing = true;
    let writes = 0;
    const writer = async (n: number) => {
      for (let i = 0; writing; i++) {
        const app = await cp.adminFetch("POST", "/admin/v1/applications", { token, body: { name: `Load ${n}-${i}` } });
        assert.equal(app.status, 201, app.text);
        const u = await cp.adminFetch("POST", `/admin/v1/applications/${appId}/users`, {
          token,
          body: { username: `load${n}x${i}`, password: "load password 1" },
        });
        assert.equal(u.status, 201, u.text);
        writes += 2;
      }
    };
    const writers = [writer(1), writer(2)];
    const backups: Record<string, Obj> = {};
    try {
      while (writes < 20) await new Promise((resolve) => setTimeout(resolve, 20));
      for (const role of ["control", "runtime"]) {
        const out = join(dir.path, `${role}-backup.db`);
        backups[role] = json(await db(["backup", "--db", role, "--out", out, "--json"]));
        assert.equal(backups[role]?.file, out);
        assert.equal(backups[role]?.integrity_check, "ok");
        assert.equal((statSync(out).mode & 0o777).toString(8), "600");
      }
      const writesDuringBackup = writes;
      while (writes < writesDuringBackup + 4) await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      writing = false;
      await Promise.all(writers);
    }

    // The copies stand on their own.
    for (const role of ["control", "runtime"]) {
      const copy = new SqliteDatabase(backups[role]?.file as string, { readonly: true, fileMustExist: true });
      try {
        assert.equal(copy.pragma("integrity_check", { simple: true }), "ok");
        assert.equal(copy.pragma("journal_mode", { simple: true }), "delete", "one self-contained file");
      } finally {
        copy.close();
      }
    }
    const existing = await runCli(["ops", "db", "backup", "--db", "control", "--data-dir", dataDir, "--out", backups.control?.file]);
    assert.equal(existing.code, 1);
    assert.match(existing.stderr, /exists: pass --force/);

    // Restore: the two copies in a fresh data dir, the same master key.
    const restoredDir = join(dir.path, "restored");
    mkdirSync(restoredDir);
    copyFileSync(backups.control?.file, join(restoredDir, "control.db"));
    copyFileSync(backups.runtime?.file, join(restoredDir, "runtime.db"));
    restored = await startCpProcess({ dataDir: restoredDir, env: { AUTHNEXUS_MASTER_KEY: MASTER_KEY } });
    const login = await restored.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: PASSWORD } });
    assert.equal(login.status, 200, login.text);
    const restoredToken = login.json.access_token as string;
    const app = await restored.adminFetch("GET", `/admin/v1/applications/${appId}`, { token: restoredToken });
    assert.equal(app.status, 200, app.text);
    assert.equal(app.json.name, "Before Backup");
    const users = await restored.adminFetch("GET", `/admin/v1/applications/${appId}/users?q=kept`, { token: restoredToken });
    assert.equal(users.status, 200, users.text);
    assert.deepEqual(
      users.json.items.map((u: Obj) => u.username),
      ["kept"],
    );
    const cas = await restored.adminFetch("GET", "/admin/v1/pki/cas", { token: restoredToken });
    assert.equal(cas.json.items.length, 4, "the sealed CA keys came along");
    await restored.stop("SIGTERM");
    restored = undefined;
  });

  test("checkpoint, vacuum, status and migrate on the running CP's databases", async () => {
    const checkpoint = json(await db(["checkpoint", "--db", "runtime", "--json"]));
    assert.equal(checkpoint.busy, false);
    assert.equal(checkpoint.checkpointed_frames, checkpoint.wal_frames);
    const text = await db(["checkpoint", "--db", "control"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^checkpointed .*control\.db: \d+ of \d+ WAL frames copied, WAL truncated$/m);

    const vacuum = json(await db(["vacuum", "--db", "control", "--json"]));
    assert.equal(vacuum.role, "control");
    assert.ok(vacuum.bytes_after > 0);

    const status = json(await db(["status", "--json"]));
    assert.deepEqual(
      status.databases.map((d: Obj) => [d.role, d.pending.length, d.unknown.length, d.applied.length === d.known]),
      [
        ["control", 0, 0, true],
        ["runtime", 0, 0, true],
      ],
    );
    const table = await db(["status"]);
    assert.match(table.stdout, /^control +sqlite:\S+control\.db +(\d+)\/\1 /m);

    const migrate = await db(["migrate", "--db", "runtime"]);
    assert.equal(migrate.code, 0, migrate.stderr);
    assert.match(migrate.stdout, /up to date; nothing applied/);
  });

  test("the other role's database is refused, and --db is required", async () => {
    const runtimeFile = join(dataDir, "runtime.db");
    for (const command of ["backup", "vacuum", "checkpoint", "status", "migrate"]) {
      const out = command === "backup" ? ["--out", join(dir.path, "never.db")] : [];
      const r = await db([command, "--db", "control", "--db-path", runtimeFile, ...out]);
      assert.equal(r.code, 1, `${command}: ${r.stdout}`);
      assert.match(r.stderr, /is the runtime database .*not the control database/, command);
    }
    const noRole = await db(["vacuum"]);
    assert.equal(noRole.code, 2);
    assert.match(noRole.stderr, /--db control or --db runtime/);
    const missing = await db(["status", "--db", "control", "--db-path", join(dir.path, "nothing.db")]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no control database at/);
  });
});
