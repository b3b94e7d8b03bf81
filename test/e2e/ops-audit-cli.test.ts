/**
 * `authnexus ops audit verify` and `ops audit <log>` as a script sees them: exit 0 while every
 * chain is intact, exit 1 naming the row once a row was edited in the database behind the CP's
 * back, exit 1 for an unknown --log. The CLI runs from source (node --import tsx) against a real
 * Control Plane in this process (test/helpers/deployment.ts, SQLite).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { REPO_ROOT, runProcess } from "../helpers/authnexus-process.js";
import { ROOT_PASSWORD } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { type Deployment, startDeployment } from "../helpers/deployment.js";

describe("authnexus ops audit", () => {
  const variant = dbVariants()[0] as NonNullable<ReturnType<typeof dbVariants>[number]>;
  let d: Deployment;
  let token = "";
  const cli = (args: string[]) =>
    runProcess(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args, "--admin-url", d.adminUrl, "--token", token], {
      cwd: REPO_ROOT,
      timeoutMs: 60_000,
    });

  before(async () => {
    d = await startDeployment(variant, { label: "audit_cli" });
    token = (await d.admin("POST", "/auth/login", { username: "root", password: ROOT_PASSWORD })).access_token;
    await d.admin("POST", "/applications", { name: "Audited One" });
    await d.admin("POST", "/applications", { name: "Audited Two" });
  });
  after(async () => {
    await d?.stop();
    await variant.cleanup();
  });

  test("a log lists as JSON (the API's answer) and as a table", async () => {
    const json = await cli(["ops", "audit", "agent-audit-logs", "--action", "application.create", "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const page = JSON.parse(json.stdout) as { items: Array<{ action: string; chain_id: string | null }>; total: number };
    assert.equal(page.total, 2);
    assert.ok(page.items.every((i) => i.action === "application.create" && typeof i.chain_id === "string"));
    const table = await cli(["ops", "audit", "agent-audit-logs", "--limit", "1"]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /page 1, 1 of \d+/);
    const refused = await cli(["ops", "audit", "agent-login-logs", "--target", "x"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /VALIDATION_FAILED.*target/);
  });

  test("verify exits 0 on intact chains and 1 naming an edited row; an unknown --log is an error", async () => {
    const intact = await cli(["ops", "audit", "verify"]);
    assert.equal(intact.code, 0, `${intact.stdout}${intact.stderr}`);
    assert.match(intact.stdout, /every chain is intact/);

    const db = d.cp.context.controlDb;
    const row = await db.selectFrom("agent_audit_logs").selectAll().where("action", "=", "application.create").executeTakeFirstOrThrow();
    await db.updateTable("agent_audit_logs").set({ target_id: "app_someone_else" }).where("id", "=", row.id).execute();
    const broken = await cli(["ops", "audit", "verify", "--log", "agent-audit-logs"]);
    assert.equal(broken.code, 1);
    assert.match(broken.stdout, new RegExp(`agent-audit-logs: edited row ${row.id}`));
    assert.match(broken.stdout, /TAMPERING DETECTED/);
    const json = await cli(["ops", "audit", "verify", "--log", "agent-audit-logs", "--json"]);
    assert.equal(json.code, 1);
    assert.equal((JSON.parse(json.stdout) as { ok: boolean }).ok, false);
    await db.updateTable("agent_audit_logs").set({ target_id: row.target_id }).where("id", "=", row.id).execute();

    const unknown = await cli(["ops", "audit", "verify", "--log", "everything"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /--log must be one of/);
  });
});
