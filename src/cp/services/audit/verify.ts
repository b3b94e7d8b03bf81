/**
 * Verifies the hash chains of the audit trails (shared/audit/chain-hash.ts): every chain of every
 * log, read in chain order a page at a time (memory stays flat however long the trail), each
 * row's hash recomputed from the one before it.
 *
 * What a broken chain says, per chain the first problem only (the rows after it cannot be
 * judged against it):
 * - `deleted`: a gap in chain_seq (rows missing before the row named, or at the chain's start);
 * - `edited`: the row's content does not match its hash, but its hash still links the row after
 *   it: the row is in its place and was changed;
 * - `inserted`: a row whose hash does not chain (neither from the row before nor to the row after,
 *   or a chain that never started from its genesis), or a second row with a chain_seq already
 *   taken.
 * A row at the end of its chain that does not match its hash has no row after it to tell the
 * two apart; it is reported as edited (or inserted when it is its chain's only row).
 * Rows without a chain (written before chains existed) are counted as legacy, not judged. What
 * verify cannot see: a chain cut off at its end or removed whole (no later row remembers it).
 */
import type { Kysely } from "kysely";
import { type ChainValue, genesisHash, linkHash } from "../../../shared/audit/chain-hash.js";
import { AUDIT_LOGS, AUDIT_TABLE_COLUMNS, type AuditLogName } from "../../../shared/audit/logs.js";
import type { CpContext } from "../context.js";
import { controlAuditKey, runtimeAuditKey } from "./chains.js";

export type ChainProblemKind = "edited" | "deleted" | "inserted";

export interface ChainProblem {
  kind: ChainProblemKind;
  log: AuditLogName;
  chain_id: string;
  chain_seq: number;
  /** The row named: the one edited or inserted, or the first row after the deleted ones. */
  row_id: string;
  message: string;
}

export interface LogVerification {
  log: AuditLogName;
  table: string;
  database: "control" | "runtime";
  ok: boolean;
  chains: number;
  rows_checked: number;
  /** Rows written before the chains existed (chain_id null): counted, not judged. */
  legacy_unchained: number;
  problems: ChainProblem[];
}

export interface VerifyReport {
  ok: boolean;
  rows_checked: number;
  duration_ms: number;
  logs: LogVerification[];
}

/** Rows read per query. */
export const VERIFY_PAGE_ROWS = 2000;

export async function verifyAuditChains(
  ctx: Pick<CpContext, "controlDb" | "runtimeDb" | "masterKey">,
  logs: readonly AuditLogName[],
  pageRows = VERIFY_PAGE_ROWS,
): Promise<VerifyReport> {
  const started = performance.now();
  const keys: Partial<Record<"control" | "runtime", Buffer>> = {};
  const results: LogVerification[] = [];
  for (const log of logs) {
    const { database } = AUDIT_LOGS[log];
    keys[database] ??= database === "control" ? controlAuditKey(ctx) : await runtimeAuditKey(ctx);
    // biome-ignore lint/suspicious/noExplicitAny: the seven tables are read by name
    const db = (database === "control" ? ctx.controlDb : ctx.runtimeDb) as unknown as Kysely<any>;
    results.push(await verifyLog(db, log, keys[database] as Buffer, pageRows));
  }
  return {
    ok: results.every((r) => r.ok),
    rows_checked: results.reduce((n, r) => n + r.rows_checked, 0),
    duration_ms: Math.round(performance.now() - started),
    logs: results,
  };
}

interface ChainRow {
  id: string;
  chain_id: string;
  chain_seq: number;
  chain_hash: string;
  [column: string]: unknown;
}

// biome-ignore lint/suspicious/noExplicitAny: as above
async function verifyLog(db: Kysely<any>, log: AuditLogName, key: Buffer, pageRows: number): Promise<LogVerification> {
  const { table, database } = AUDIT_LOGS[log];
  const columns = AUDIT_TABLE_COLUMNS[table];
  const legacy = await db
    .selectFrom(table)
    .select((eb) => eb.fn.countAll<number | string>().as("n"))
    .where("chain_id", "is", null)
    .executeTakeFirstOrThrow();
  const result: LogVerification = {
    log,
    table,
    database,
    ok: true,
    chains: 0,
    rows_checked: 0,
    legacy_unchained: Number(legacy.n),
    problems: [],
  };
  let chainId: string | null = null;
  for (;;) {
    // The next chain id after the last: one index probe each, however many rows a chain has.
    const next: { chain_id: string | null } | undefined = await db
      .selectFrom(table)
      .select((eb) => eb.fn.min("chain_id").as("chain_id"))
      .where("chain_id", "is not", null)
      .$if(chainId !== null, (q) => q.where("chain_id", ">", chainId))
      .executeTakeFirst();
    if (!next?.chain_id) break;
    chainId = next.chain_id;
    result.chains += 1;
    const checker = new ChainChecker(key, log, table, chainId, columns);
    let after: { seq: number; id: string } | null = null;
    for (;;) {
      const cursor = after;
      const rows = (await db
        .selectFrom(table)
        .select([...columns, "chain_id", "chain_seq", "chain_hash"])
        .where("chain_id", "=", chainId)
        .$if(cursor !== null, (q) =>
          q
            .where("chain_seq", ">=", cursor?.seq ?? 0)
            .where((eb) => eb.or([eb("chain_seq", ">", cursor?.seq ?? 0), eb("id", ">", cursor?.id ?? "")])),
        )
        .orderBy("chain_seq")
        .orderBy("id")
        .limit(pageRows)
        .execute()) as ChainRow[];
      for (const row of rows) checker.push(row);
      result.rows_checked += rows.length;
      const last = rows[rows.length - 1];
      if (!last || rows.length < pageRows) break;
      after = { seq: Number(last.chain_seq), id: last.id };
    }
    const problem = checker.finish();
    if (problem) result.problems.push(problem);
  }
  result.ok = result.problems.length === 0;
  return result;
}

interface Suspect {
  row: ChainRow;
  seq: number;
  /** The hash of the row before it (what a genuine row at its place would link from). */
  previous: Buffer;
}

/** Walks one chain's rows in (chain_seq, id) order; remembers the first problem. */
class ChainChecker {
  private expected = 1;
  private previous: Buffer;
  private suspect: Suspect | null = null;
  private problem: ChainProblem | null = null;
  private rows = 0;

  constructor(
    private readonly key: Buffer,
    private readonly log: AuditLogName,
    private readonly table: string,
    private readonly chainId: string,
    private readonly columns: readonly string[],
  ) {
    this.previous = genesisHash(key, table, chainId);
  }

  push(row: ChainRow): void {
    this.rows += 1;
    if (this.problem) return;
    const seq = Number(row.chain_seq);
    if (this.suspect) {
      this.resolve(row, seq);
    } else if (seq < this.expected) {
      this.report("inserted", row, seq, `chain_seq ${seq} is taken twice: this row is not part of the chain`);
    } else if (seq > this.expected) {
      const missing = seq - 1 === this.expected ? `${this.expected}` : `${this.expected} to ${seq - 1}`;
      this.report("deleted", row, seq, `rows with chain_seq ${missing} are missing before this row`);
    } else if (this.hashOf(row, seq, this.previous).toString("hex") === row.chain_hash) {
      this.accept(row, seq);
    } else {
      this.suspect = { row, seq, previous: this.previous };
    }
  }

  /** The row after a suspect decides what the suspect was. */
  private resolve(row: ChainRow, seq: number): void {
    const suspect = this.suspect as Suspect;
    this.suspect = null;
    if (seq === suspect.seq) {
      // Two rows at one seq: the one that chains is the original.
      if (this.hashOf(row, seq, suspect.previous).toString("hex") === row.chain_hash) {
        this.report("inserted", suspect.row, suspect.seq, `chain_seq ${seq} is taken twice: this row does not chain`);
      } else {
        this.report("inserted", suspect.row, suspect.seq, `chain_seq ${seq} is taken twice and neither row chains`);
      }
      return;
    }
    if (seq === suspect.seq + 1 && this.hashOf(row, seq, Buffer.from(suspect.row.chain_hash, "hex")).toString("hex") === row.chain_hash) {
      this.report("edited", suspect.row, suspect.seq, "the row's content does not match its hash (the chain around it is intact)");
      return;
    }
    this.report("inserted", suspect.row, suspect.seq, "the row's hash does not chain: it is not the row the chain recorded here");
  }

  finish(): ChainProblem | null {
    if (this.suspect && !this.problem) {
      const { row, seq } = this.suspect;
      if (this.rows === 1) this.report("inserted", row, seq, "a chain of one row that does not start from its genesis");
      else this.report("edited", row, seq, "the last row of its chain does not match its hash (edited, or added without the key)");
    }
    return this.problem;
  }

  private accept(row: ChainRow, seq: number): void {
    this.previous = Buffer.from(row.chain_hash, "hex");
    this.expected = seq + 1;
  }

  private hashOf(row: ChainRow, seq: number, previous: Buffer): Buffer {
    const values = this.columns.map((c) => (row[c] ?? null) as ChainValue);
    return linkHash(this.key, previous, this.table, this.chainId, seq, values);
  }

  private report(kind: ChainProblemKind, row: ChainRow, seq: number, message: string): void {
    this.problem = { kind, log: this.log, chain_id: this.chainId, chain_seq: seq, row_id: row.id, message };
  }
}
