/**
 * `authnexus ops presence` and `ops reports …` against a real `serve-cp` child (the built CLI:
 * run `npm run build` first), logged in with `ops login`: the answers as tables and as JSON,
 * a time zone per request, and the refusals (unknown report, a bad zone, an app filter on the
 * agent report) with exit 1 and one clear line.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type CpProcess, runCli, startCpProcess } from "../helpers/cp-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

const PASSWORD = "correct horse battery staple";

describe("authnexus ops presence and ops reports", () => {
  let dir: TempDir;
  let cp: CpProcess;
  const cli = (args: string[], input?: string) =>
    runCli(args, {
      env: { XDG_CONFIG_HOME: join(dir.path, "config"), AUTHNEXUS_SESSION_FILE: "", AUTHNEXUS_ADMIN_TOKEN: "", AUTHNEXUS_ADMIN_URL: "" },
      timeoutMs: 30_000,
      ...(input !== undefined ? { input } : {}),
    });

  before(async () => {
    dir = await makeTempDir("authnexus-e2e-reports");
    mkdirSync(join(dir.path, "cp"));
    cp = await startCpProcess({ dataDir: join(dir.path, "cp"), env: { AUTHNEXUS_MASTER_KEY: randomBytes(32).toString("hex") } });
    const setup = await cli(
      ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", join(dir.path, "cp"), "--username", "root", "--password-stdin"],
      PASSWORD,
    );
    assert.equal(setup.code, 0, setup.stderr);
    const login = await cli(["ops", "login", "--admin-url", cp.adminUrl, "--username", "root", "--password-stdin"], PASSWORD);
    assert.equal(login.code, 0, login.stderr);
  });
  after(async () => {
    await cp?.stop("SIGTERM");
    await dir?.cleanup();
  });

  test("presence with no node: nothing online, as a table and as JSON", async () => {
    const table = await cli(["ops", "presence"]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^0 online users on 0 online nodes$/m);
    const json = await cli(["ops", "presence", "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const answer = JSON.parse(json.stdout);
    assert.equal(answer.online_users, 0);
    assert.deepEqual(answer.nodes, []);
  });

  test("the agent login report counts today's logins in the zone asked for; refusals exit 1 with one line", async () => {
    const today = new Date().toISOString().slice(0, 10);
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const json = await cli(["ops", "reports", "agent-login-daily", "--from", yesterday, "--to", today, "--tz", "UTC", "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const answer = JSON.parse(json.stdout);
    assert.equal(answer.time_zone, "UTC");
    assert.deepEqual(
      answer.days.map((d: { date: string }) => d.date),
      [yesterday, today],
    );
    // ops login's login (yesterday too, should the run straddle midnight UTC).
    assert.ok(answer.totals.success >= 1, json.stdout);

    const table = await cli(["ops", "reports", "agent-login-daily", "--from", yesterday, "--to", today, "--tz", "UTC"]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`^${today}\\s+24\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\d+`, "m"));
    assert.match(table.stdout, new RegExp(`^agent-login-daily ${yesterday}\\.\\.${today} \\(UTC\\): [1-9]\\d* success`, "m"));

    const cards = await cli(["ops", "reports", "card-generated-daily", "--to", today, "--tz", "Europe/Berlin", "--json"]);
    assert.equal(cards.code, 0, cards.stderr);
    assert.equal(JSON.parse(cards.stdout).time_zone, "Europe/Berlin");

    for (const [args, message] of [
      [["ops", "reports", "nope"], /unknown report "nope"/],
      [["ops", "reports", "login-daily", "--tz", "Mars/Olympus"], /VALIDATION_FAILED/],
      [["ops", "reports", "agent-login-daily", "--app", "app_x"], /VALIDATION_FAILED/],
      [["ops", "reports", "login-daily", "--from", "2026-13-01"], /VALIDATION_FAILED/],
    ] as const) {
      const refused = await cli([...args]);
      assert.equal(refused.code, 1, `${args.join(" ")}: ${refused.stdout}${refused.stderr}`);
      assert.match(refused.stderr, message);
    }
  });
});
