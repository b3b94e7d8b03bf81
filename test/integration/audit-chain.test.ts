/**
 * Tamper-evident audit trails. The attack: someone with write access to a database (a stolen
 * backup restored and edited, a compromised DBA account) rewrites history — changes what a row
 * says, removes a row, or adds one — without the chain key. Verify must name the log and the row
 * each time, and must not cry wolf over what honest writers do: two processes writing one table
 * at once, a transaction that rolls back, rows older than the chains.
 *
 * On SQLite and PostgreSQL: a Control DB trail written by the CP (agent_audit_logs), two writer
 * processes on one table, rollbacks (a Kysely transaction and a group-commit unit), legacy rows;
 * and the Runtime DB's login log written by a real node on SDK logins, verified by the CP through
 * POST /admin/v1/audit/verify.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { Kysely } from "kysely";
import { controlMigrationSet } from "../../migrations/control/index.js";
import { writeAgentAudit } from "../../src/cp/services/audit/agent-audit.js";
import { controlAuditKey, runtimeAuditKey } from "../../src/cp/services/audit/chains.js";
import { type VerifyReport, verifyAuditChains } from "../../src/cp/services/audit/verify.js";
import type { Actor } from "../../src/cp/services/context.js";
import { auditChainsOf, configureAuditChains } from "../../src/shared/db/audit-chains.js";
import { type ControlSchema, groupCommit, migrateDatabase, openDatabase, type RuntimeSchema } from "../../src/shared/db/index.js";
import { writeLoginLog } from "../../src/shared/db/runtime/index.js";
import { newId } from "../../src/shared/ids.js";
import { completeSetup, createTestCp, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { type ClientMaterial, type DeployedNode, type Deployment, startDeployment, type TestApplication } from "../helpers/deployment.js";
import { connectProbe, expectCode } from "../helpers/sdk-clients.js";

const ACTOR: Actor = { agentId: "agt_chain", username: "root", ip: "127.0.0.1", requestId: null };

type AgentAuditRow = ControlSchema["agent_audit_logs"];

function onlyProblem(report: VerifyReport, log: string) {
  const entry = report.logs.find((l) => l.log === log);
  assert.ok(entry, `${log} was verified`);
  assert.equal(report.ok, false, "verify fails");
  assert.equal(entry.problems.length, 1, JSON.stringify(entry.problems));
  return entry.problems[0] as NonNullable<(typeof entry.problems)[number]>;
}

for (const variant of dbVariants()) {
  describe(`audit chains of a Control DB trail on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    const verify = () => verifyAuditChains(cp.ctx, ["agent-audit-logs"], 7);
    /** This process's longest chain (one per pooled connection: on SQLite there is one). */
    const rowsInChainOrder = async () => {
      const rows = await cp.ctx.controlDb
        .selectFrom("agent_audit_logs")
        .selectAll()
        .where("chain_id", "like", `${auditChainsOf(cp.ctx.controlDb)?.chainId ?? ""}.%`)
        .orderBy("chain_id")
        .orderBy("chain_seq")
        .execute();
      const byChain = new Map<string, typeof rows>();
      for (const row of rows) byChain.set(row.chain_id as string, [...(byChain.get(row.chain_id as string) ?? []), row]);
      return [...byChain.values()].sort((x, y) => y.length - x.length)[0] ?? [];
    };
    const write = async (n: number, tag: string) => {
      for (let i = 0; i < n; i += 1) {
        cp.clock.advance(1000);
        await writeAgentAudit(cp.ctx.controlDb, cp.clock, ACTOR, { action: `test.${tag}`, targetId: `t_${i}`, result: "success" });
      }
    };

    before(async () => {
      cp = await createTestCp(variant, "chain");
      await completeSetup(cp.ctx);
      await write(30, "base");
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });

    test("an untouched chain verifies, read in pages smaller than the chain", async () => {
      const report = await verify();
      assert.equal(report.ok, true, JSON.stringify(report));
      const log = report.logs[0];
      assert.ok(log && log.rows_checked >= 30 && log.chains >= 1);
      assert.equal(log.legacy_unchained, 0);
      const rows = await rowsInChainOrder();
      assert.deepEqual(
        rows.map((r) => r.chain_seq),
        rows.map((_, i) => i + 1),
        "sequence numbers start at 1 with no gap",
      );
    });

    test("an edited row is named as edited; restored, the chain verifies again", async () => {
      const victim = (await rowsInChainOrder())[12] as AgentAuditRow;
      await cp.ctx.controlDb.updateTable("agent_audit_logs").set({ result: "failure" }).where("id", "=", victim.id).execute();
      const problem = onlyProblem(await verify(), "agent-audit-logs");
      assert.equal(problem.kind, "edited");
      assert.equal(problem.row_id, victim.id);
      assert.equal(problem.chain_seq, victim.chain_seq);
      await cp.ctx.controlDb.updateTable("agent_audit_logs").set({ result: victim.result }).where("id", "=", victim.id).execute();
      assert.equal((await verify()).ok, true);
    });

    test("a deleted row is named by the gap it leaves, and the row after it", async () => {
      const rows = await rowsInChainOrder();
      const victim = rows[20] as AgentAuditRow;
      const next = rows[21] as AgentAuditRow;
      await cp.ctx.controlDb.deleteFrom("agent_audit_logs").where("id", "=", victim.id).execute();
      const problem = onlyProblem(await verify(), "agent-audit-logs");
      assert.equal(problem.kind, "deleted");
      assert.equal(problem.row_id, next.id);
      assert.match(problem.message, new RegExp(`chain_seq ${victim.chain_seq} `));
      await cp.ctx.controlDb.insertInto("agent_audit_logs").values(victim).execute();
      assert.equal((await verify()).ok, true);
    });

    test("an inserted row is named: a copied seq, a forged hash, or a chain of its own", async () => {
      const rows = await rowsInChainOrder();
      const model = rows[5] as AgentAuditRow;
      const forged = [
        // Takes a seq already taken, with a hash copied from its neighbour.
        { ...model, id: newId("aud"), action: "agent.create" },
        // At the end of the chain, with a made-up hash.
        { ...model, id: newId("aud"), chain_seq: rows.length + 1, chain_hash: randomBytes(32).toString("hex") },
        // A chain of its own that never started from the key's genesis.
        { ...model, id: newId("aud"), chain_id: "cp_forged.x", chain_seq: 1, chain_hash: randomBytes(32).toString("hex") },
      ];
      for (const row of forged) {
        await cp.ctx.controlDb.insertInto("agent_audit_logs").values(row).execute();
        const problem = onlyProblem(await verify(), "agent-audit-logs");
        assert.equal(problem.row_id, row.id, JSON.stringify(problem));
        assert.ok(problem.kind === "inserted" || (row.chain_seq === rows.length + 1 && problem.kind === "edited"), problem.kind);
        await cp.ctx.controlDb.deleteFrom("agent_audit_logs").where("id", "=", row.id).execute();
      }
      assert.equal((await verify()).ok, true);
    });

    test("a transaction that rolls back after writing a row leaves no hole", async () => {
      await assert.rejects(
        cp.ctx.controlDb.transaction().execute(async (tx) => {
          await writeAgentAudit(tx, cp.clock, ACTOR, { action: "test.rolled_back", result: "success" });
          throw new Error("the change failed");
        }),
        /the change failed/,
      );
      await write(2, "after_rollback");
      const rows = await rowsInChainOrder();
      assert.equal(rows.filter((r) => r.action === "test.rolled_back").length, 0);
      assert.equal((await verify()).ok, true);
    });

    test("rows from before the chains are counted as legacy, not flagged", async () => {
      for (let i = 0; i < 3; i += 1) {
        await cp.ctx.controlDb
          .insertInto("agent_audit_logs")
          .values({ id: newId("aud"), created_at: 1, action: "legacy", result: "success" })
          .execute();
      }
      const report = await verify();
      assert.equal(report.ok, true);
      assert.equal(report.logs[0]?.legacy_unchained, 3);
    });

    test("two writer processes interleaving on one table each keep a valid chain", async () => {
      const options = await variant.fresh("chain_two");
      const opened: Kysely<ControlSchema>[] = [];
      try {
        for (let i = 0; i < 2; i += 1) opened.push(await openDatabase<ControlSchema>(options));
        const [a, b] = opened as [Kysely<ControlSchema>, Kysely<ControlSchema>];
        await migrateDatabase(a as Kysely<unknown>, controlMigrationSet, "test control");
        configureAuditChains(a, { writerId: "cp_one", key: controlAuditKey(cp.ctx) });
        configureAuditChains(b, { writerId: "cp_two", key: controlAuditKey(cp.ctx) });
        const writes: Promise<void>[] = [];
        for (let i = 0; i < 40; i += 1) {
          const db = i % 2 === 0 ? a : b;
          // Half in transactions of their own making, half alone.
          const write =
            i % 4 < 2
              ? db.transaction().execute((tx) => writeAgentAudit(tx, cp.clock, ACTOR, { action: `test.tx_${i}`, result: "success" }))
              : writeAgentAudit(db, cp.clock, ACTOR, { action: `test.alone_${i}`, result: "success" });
          // PostgreSQL: all at once. SQLite: one after the other, alternating. Two SQLite
          // connections in one process cannot overlap their transactions: better-sqlite3 waits
          // for a lock synchronously, so the holder could never reach its COMMIT (separate
          // processes, which is what two CPs are, wait for each other through busy_timeout).
          if (variant.name === "sqlite") await write;
          else writes.push(write);
        }
        await Promise.all(writes);
        const report = await verifyAuditChains(
          { controlDb: a, runtimeDb: cp.ctx.runtimeDb, masterKey: cp.ctx.masterKey },
          ["agent-audit-logs"],
          5,
        );
        assert.equal(report.ok, true, JSON.stringify(report));
        // One chain per writer and connection: two writers, each with one or more pooled connections.
        assert.ok((report.logs[0]?.chains ?? 0) >= 2, JSON.stringify(report.logs[0]));
        const chainIds = await a.selectFrom("agent_audit_logs").select("chain_id").distinct().execute();
        assert.ok(chainIds.some((r) => r.chain_id?.startsWith("cp_one.")) && chainIds.some((r) => r.chain_id?.startsWith("cp_two.")));
        assert.equal(report.logs[0]?.rows_checked, 40);
      } finally {
        for (const db of opened) await db.destroy();
      }
    });

    test("a group-commit unit that fails takes its login-log row with it, and the batch's chain stays whole", async () => {
      const options = await variant.fresh("chain_group");
      const db = await openDatabase<RuntimeSchema>(options);
      try {
        const { runtimeMigrationSet } = await import("../../migrations/runtime/index.js");
        await migrateDatabase(db as Kysely<unknown>, runtimeMigrationSet, "test runtime");
        const key = await runtimeAuditKey(cp.ctx);
        configureAuditChains(db, { writerId: "nod_group", key });
        const writes = groupCommit(db);
        const entry = (i: number) => ({
          created_at: 1000 + i,
          app_id: "app_x",
          user_id: null,
          username: `u${i}`,
          method: "password",
          result: "failure",
          reason: "bad_credentials",
          ip: null,
          device_id: null,
          node_id: "nod_group",
        });
        const outcomes = await Promise.allSettled(
          Array.from({ length: 30 }, (_, i) =>
            writes.run(async (trx) => {
              await writeLoginLog(trx, entry(i));
              if (i % 3 === 1) throw new Error(`unit ${i} refused`);
            }),
          ),
        );
        assert.equal(outcomes.filter((o) => o.status === "rejected").length, 10);
        const rows = await db
          .selectFrom("login_logs")
          .select(["username", "chain_id", "chain_seq"])
          .orderBy("chain_id")
          .orderBy("chain_seq")
          .execute();
        assert.equal(rows.length, 20);
        // Each chain (one per connection: on PostgreSQL each unit is a transaction on a pooled one) counts from 1 with no hole.
        const byChain = new Map<string, number[]>();
        for (const r of rows) byChain.set(r.chain_id as string, [...(byChain.get(r.chain_id as string) ?? []), r.chain_seq as number]);
        for (const seqs of byChain.values())
          assert.deepEqual(
            seqs,
            seqs.map((_, i) => i + 1),
          );
        const report = await verifyAuditChains(
          { controlDb: cp.ctx.controlDb, runtimeDb: db, masterKey: cp.ctx.masterKey },
          ["login-logs"],
          6,
        );
        assert.equal(report.ok, true, JSON.stringify(report));
        assert.equal(report.logs[0]?.rows_checked, 20);
      } finally {
        await db.destroy();
      }
    });
  });

  describe(`audit chains of the login log written by a real node on ${variant.name}`, { skip: variant.skip }, () => {
    let d: Deployment;
    let node: DeployedNode;
    let app: TestApplication;
    let material: ClientMaterial;
    type Problem = { kind: string; log: string; row_id: string; chain_id: string; chain_seq: number };
    type Report = { ok: boolean; logs: Array<{ log: string; ok: boolean; chains: number; rows_checked: number; problems: Problem[] }> };
    const verify = async (): Promise<Report> => d.admin("POST", "/audit/verify", { log: "login-logs" });
    const runtimeDb = () => d.cp.context.runtimeDb;
    const nodeRows = async () =>
      runtimeDb().selectFrom("login_logs").selectAll().where("node_id", "=", node.nodeId).orderBy("chain_seq").execute();

    before(async () => {
      d = await startDeployment(variant, { label: `chain_${variant.name}` });
      node = await d.addNode("node-1");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: { login_attempts_per_minute: 100_000 } });
      app = await d.createApp("Chained");
      material = await d.issueClient(app.appId);
      await d.createUser(app.appId, "alice", "correct-horse-1");
      await d.waitForApp(app.appId);
      const probe = await connectProbe({ appId: app.appId, appSecret: app.secret, material, node: node.address, deviceId: "dev-1" });
      try {
        for (let i = 0; i < 6; i += 1) {
          if (i % 3 === 2) await expectCode(probe.client.loginPassword("alice", "wrong-password"), "LOGIN_FAILED");
          else await probe.client.loginPassword("alice", "correct-horse-1");
        }
      } finally {
        await probe.client.close();
      }
    });
    after(async () => {
      await d?.stop();
      await variant.cleanup();
    });

    test("the node chains every login row under its own chain id, and the CP verifies it", async () => {
      const rows = await nodeRows();
      assert.equal(rows.length, 6);
      assert.ok(
        rows.every((r) => r.chain_id?.startsWith(`${node.nodeId}.`)),
        "one chain per node process",
      );
      assert.deepEqual(
        rows.map((r) => r.chain_seq),
        [1, 2, 3, 4, 5, 6],
      );
      const report = await verify();
      assert.equal(report.ok, true, JSON.stringify(report));
      assert.equal(report.logs[0]?.rows_checked, 6);
    });

    test("an edited, a deleted and an inserted login row are each named with the log", async () => {
      const rows = await nodeRows();
      const edited = rows[1] as (typeof rows)[number];
      await runtimeDb()
        .updateTable("login_logs")
        .set({ result: "success", reason: null })
        .where("id", "=", rows[2]?.id as string)
        .execute();
      let report = await verify();
      let problem = report.logs[0]?.problems[0];
      assert.equal(report.ok, false);
      assert.deepEqual([problem?.kind, problem?.log, problem?.row_id], ["edited", "login-logs", rows[2]?.id]);
      await runtimeDb()
        .updateTable("login_logs")
        .set({ result: rows[2]?.result, reason: rows[2]?.reason })
        .where("id", "=", rows[2]?.id as string)
        .execute();

      await runtimeDb().deleteFrom("login_logs").where("id", "=", edited.id).execute();
      report = await verify();
      problem = report.logs[0]?.problems[0];
      assert.deepEqual([problem?.kind, problem?.row_id], ["deleted", rows[2]?.id]);
      await runtimeDb().insertInto("login_logs").values(edited).execute();

      const forged = { ...edited, id: newId("lgl"), username: "mallory" };
      await runtimeDb().insertInto("login_logs").values(forged).execute();
      report = await verify();
      problem = report.logs[0]?.problems[0];
      assert.deepEqual([problem?.kind, problem?.row_id], ["inserted", forged.id]);
      await runtimeDb().deleteFrom("login_logs").where("id", "=", forged.id).execute();
      assert.equal((await verify()).ok, true);
    });
  });
}
