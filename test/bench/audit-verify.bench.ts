/**
 * POST /admin/v1/audit/verify's work over a large trail (docs/benchmarks.md): N rows (default
 * 1,000,000) of agent_audit_logs in 4 chains, hashed as the writers hash them and inserted in
 * batches, then verifyAuditChains walks every chain a page at a time. Reports rows/s and the heap
 * before and after (flat: the walk holds one page). Then the filtered queries of
 * GET /admin/v1/agent-audit-logs over the same rows (first page of 50 with its total, median of 5
 * after one warm-up) against the 200 ms target. SQLite by default, a throwaway PostgreSQL with
 * BENCH_DB=postgres.
 *
 * While it runs it holds /tmp/authnexus-bench.lock (created exclusively, removed at the end), so
 * two benches never share the machine.
 *
 * Run: node --import tsx test/bench/audit-verify.bench.ts [rows=1000000]
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { closeSync, openSync, unlinkSync } from "node:fs";
import type { Kysely } from "kysely";
import { controlMigrationSet } from "../../migrations/control/index.js";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import { controlAuditKey } from "../../src/cp/services/audit/chains.js";
import { type AuditLogFilter, listAuditLog } from "../../src/cp/services/audit/log-queries.js";
import { verifyAuditChains } from "../../src/cp/services/audit/verify.js";
import type { CpContext } from "../../src/cp/services/context.js";
import { genesisHash, linkHash } from "../../src/shared/audit/chain-hash.js";
import { AUDIT_TABLE_COLUMNS } from "../../src/shared/audit/logs.js";
import { type ControlSchema, migrateDatabase, openDatabase, type RuntimeSchema } from "../../src/shared/db/index.js";
import { type DbVariant, dbVariants, postgresVariant } from "../helpers/databases.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";

const ROWS = Number(process.argv[2] ?? 1_000_000);
const CHAINS = 4;
const BATCH = 500;
const LOCK_FILE = "/tmp/authnexus-bench.lock";

type AuditRow = ControlSchema["agent_audit_logs"];

async function main(): Promise<void> {
  closeSync(openSync(LOCK_FILE, "wx"));
  let postgres: PostgresServer | null = null;
  try {
    if (process.env.BENCH_DB === "postgres") postgres = await startPostgres();
    const variant = postgres ? postgresVariant(postgres) : (dbVariants()[0] as DbVariant);
    const controlDb = await openDatabase<ControlSchema>(await variant.fresh("verify_control"));
    const runtimeDb = await openDatabase<RuntimeSchema>(await variant.fresh("verify_runtime"));
    try {
      await migrateDatabase(controlDb as Kysely<unknown>, controlMigrationSet, "bench control");
      await migrateDatabase(runtimeDb as Kysely<unknown>, runtimeMigrationSet, "bench runtime");
      const ctx = { controlDb, runtimeDb, masterKey: randomBytes(32) };
      const fillStarted = performance.now();
      await fill(controlDb, controlAuditKey(ctx));
      const fillS = (performance.now() - fillStarted) / 1000;
      console.log(`${variant.name}: ${ROWS} rows in ${CHAINS} chains written in ${fillS.toFixed(1)} s`);

      global.gc?.();
      const heapBefore = process.memoryUsage().heapUsed;
      let heapPeak = heapBefore;
      const sampler = setInterval(() => {
        heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
      }, 50);
      const started = performance.now();
      const report = await verifyAuditChains(ctx, ["agent-audit-logs"]);
      const seconds = (performance.now() - started) / 1000;
      clearInterval(sampler);
      assert.equal(report.ok, true, JSON.stringify(report.logs[0]?.problems));
      assert.equal(report.rows_checked, ROWS);
      const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
      console.log(
        `${variant.name}: verified ${report.rows_checked} rows in ${seconds.toFixed(2)} s = ${Math.round(report.rows_checked / seconds)} rows/s; ` +
          `heap ${mb(heapBefore)} MB before, ${mb(heapPeak)} MB peak`,
      );
      await timeFilteredQueries(variant.name, ctx as unknown as CpContext);
    } finally {
      await controlDb.destroy();
      await runtimeDb.destroy();
      await variant.cleanup();
    }
  } finally {
    await postgres?.stop();
    unlinkSync(LOCK_FILE);
  }
}

/** The log endpoint's query under the filters an operator uses, each over the million rows. */
async function timeFilteredQueries(name: string, ctx: CpContext): Promise<void> {
  const t0 = Date.UTC(2026, 0, 1);
  const window = { from: t0 + ROWS / 4, to: t0 + ROWS / 2 };
  const all = { from: undefined, to: undefined };
  const cases: Array<[string, AuditLogFilter]> = [
    ["no filter (newest page)", { ...all, equals: [] }],
    ["action", { ...all, equals: [["action", "node.create"]] }],
    ["target", { ...all, equals: [["target_id", "nod_5"]] }],
    ["result", { ...all, equals: [["result", "failure"]] }],
    ["actor", { ...all, equals: [["agent_id", "agt_bench"]] }],
    ["from/to (a quarter of the rows)", { ...window, equals: [] }],
    [
      "action + result + from/to",
      {
        ...window,
        equals: [
          ["action", "node.create"],
          ["result", "failure"],
        ],
      },
    ],
  ];
  for (const [label, filter] of cases) {
    const times: number[] = [];
    let total = 0;
    for (let i = 0; i <= 5; i += 1) {
      const started = performance.now();
      const page = await listAuditLog(ctx, "agent-audit-logs", filter, { page: 1, pageSize: 50 });
      if (i > 0) times.push(performance.now() - started);
      total = page.total;
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)] as number;
    console.log(`${name}: agent-audit-logs ${label}: ${total} rows match, first page in ${median.toFixed(1)} ms (median of 5)`);
  }
}

/** Rows as writeAgentAudit makes them, chained as the commit path chains them, in multi-row inserts. */
async function fill(db: Kysely<ControlSchema>, key: Buffer): Promise<void> {
  const columns = AUDIT_TABLE_COLUMNS.agent_audit_logs;
  const chains = Array.from({ length: CHAINS }, (_, i) => {
    const chainId = `cp_bench${i}.${randomBytes(6).toString("base64url")}`;
    return { chainId, seq: 0, hash: genesisHash(key, "agent_audit_logs", chainId) };
  });
  const t0 = Date.UTC(2026, 0, 1);
  for (let start = 0; start < ROWS; start += BATCH) {
    const rows: AuditRow[] = [];
    for (let i = start; i < Math.min(ROWS, start + BATCH); i += 1) {
      const chain = chains[i % CHAINS] as (typeof chains)[number];
      const row = {
        id: `aud_${i.toString(36).padStart(8, "0")}${randomBytes(8).toString("base64url")}`,
        created_at: t0 + i,
        agent_id: "agt_bench",
        agent_username: "root",
        action: i % 3 === 0 ? "node.create" : "app.update",
        target_type: "node",
        target_id: `nod_${i % 97}`,
        result: i % 11 === 0 ? "failure" : "success",
        error_code: i % 11 === 0 ? "NOT_FOUND" : null,
        request_id: `req_${i}`,
        ip: "127.0.0.1",
        detail: i % 5 === 0 ? JSON.stringify({ n: i }) : null,
      };
      chain.seq += 1;
      chain.hash = linkHash(
        key,
        chain.hash,
        "agent_audit_logs",
        chain.chainId,
        chain.seq,
        columns.map((c) => (row as Record<string, string | number | null>)[c] ?? null),
      );
      rows.push({ ...row, chain_id: chain.chainId, chain_seq: chain.seq, chain_hash: chain.hash.toString("hex") });
    }
    await db.insertInto("agent_audit_logs").values(rows).execute();
  }
}

await main();
