/**
 * The write side of the audit hash chains (the hash itself: shared/audit/chain-hash.ts).
 *
 * Each database connection of a writer keeps one chain per table: `chain_id` is the writer's id
 * (the CP instance, or the node id), a nonce drawn when the database is opened and the
 * connection's number, `chain_seq` counts from 1, and the head (last seq and hash) lives in
 * memory. Several processes, or several pooled PostgreSQL connections of one process, writing one
 * table therefore never share a chain, never read one another's rows, and never wait for one
 * another's commits (a connection runs one transaction at a time). SQLite has one connection:
 * one chain per table and process.
 *
 * Chain order is commit order, and a transaction that rolls back leaves no hole: a chained row
 * written inside a transaction is not sent at once but kept with the transaction, and sent just
 * before its COMMIT, with the chain's lock held from there until the COMMIT has returned. The
 * numbers are taken from the head at that moment, and the head moves on only when the COMMIT
 * succeeded. A rollback (of the transaction, or of a savepoint the row was written after) drops
 * the row before it ever had a number. The lock is held for the row's INSERT and the COMMIT
 * only, so writers of one chain wait for one another's commits, never for the rest of one
 * another's work. A write outside any transaction gets a transaction of its own.
 *
 * Transactions are seen at the driver: openDatabase wraps the dialect's driver, so Kysely's
 * transaction().execute() and controlled transactions are followed without their callers doing
 * anything; code that issues BEGIN/COMMIT itself (group commit) uses openRawTransaction.
 *
 * The cost per chained row is one HMAC-SHA256 and no extra statement.
 */
import { randomBytes } from "node:crypto";
import type {
  CompiledQuery,
  DatabaseConnection,
  Dialect,
  DialectAdapter,
  Driver,
  Kysely,
  QueryCompiler,
  TransactionSettings,
} from "kysely";
import { type ChainValue, genesisHash, linkHash } from "../audit/chain-hash.js";
import { AUDIT_TABLE_COLUMNS, type AuditTable } from "../audit/logs.js";

export interface ChainColumns {
  chain_id: string | null;
  chain_seq: number | null;
  chain_hash: string | null;
}

export const UNCHAINED: ChainColumns = { chain_id: null, chain_seq: null, chain_hash: null };

export interface AuditChainConfig {
  /** Who writes: the CP instance id or the node id (a nonce is added per start). */
  writerId: string;
  /** The chain key (shared/audit/chain-hash.ts deriveAuditKey), or how to get it when first needed. */
  key: Buffer | (() => Promise<Buffer>);
}

/** Builds the statement that writes the row with its chain columns (an INSERT, or the UPDATE that finishes a reserved row). */
export type ChainedStatement = (row: Record<string, unknown>) => CompiledQuery;

// biome-ignore lint/suspicious/noExplicitAny: chains serve a database of any schema
type AnyDb = Kysely<any>;

interface Head {
  seq: number;
  hash: Buffer;
}

/** One chain: this process's rows of one table. */
class ChainSlot {
  head: Head | null = null;
  private tail: Promise<void> = Promise.resolve();

  constructor(readonly table: AuditTable) {}

  /** Resolves with the release function once every earlier holder has released. */
  lock(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const ready = this.tail.then(() => release);
    this.tail = this.tail.then(() => held);
    return ready;
  }
}

interface DeferredRow {
  table: AuditTable;
  row: Record<string, unknown>;
  values: ChainValue[];
  statement: ChainedStatement;
}

/** The chained rows written so far in one open transaction, waiting for its COMMIT. */
class OpenTransaction {
  deferred: DeferredRow[] = [];
  private savepoints = new Map<string, number>();

  mark(name: string): void {
    this.savepoints.set(name, this.deferred.length);
  }

  rewind(name: string): void {
    const at = this.savepoints.get(name);
    if (at !== undefined) this.deferred.length = at;
  }

  release(name: string): void {
    this.savepoints.delete(name);
  }
}

export class AuditChains {
  private config: AuditChainConfig | null = null;
  private key: Promise<Buffer> | null = null;
  private chainIdValue: string | null = null;
  /** Per connection: its chain id and its slot per table. */
  private connectionChains = new WeakMap<DatabaseConnection, { id: string; slots: Map<AuditTable, ChainSlot> }>();
  private connectionsSeen = 0;
  private readonly byConnection = new WeakMap<DatabaseConnection, OpenTransaction>();
  private readonly byHandle = new WeakMap<object, OpenTransaction>();
  root: AnyDb | null = null;

  configure(config: AuditChainConfig): void {
    this.config = config;
    this.key = null;
    this.chainIdValue = `${config.writerId}.${randomBytes(6).toString("base64url")}`;
    this.connectionChains = new WeakMap();
    this.connectionsSeen = 0;
  }

  get configured(): boolean {
    return this.config !== null;
  }

  /** The prefix of this process's chain ids on this database (null until configured). */
  get chainId(): string | null {
    return this.chainIdValue;
  }

  private chainKey(): Promise<Buffer> {
    const config = this.config;
    if (!config) throw new Error("audit chains are not configured");
    if (!this.key) {
      const key = typeof config.key === "function" ? config.key() : Promise.resolve(config.key);
      // A failed load (setup not complete yet) is tried again next time.
      this.key = key.catch((error: unknown) => {
        this.key = null;
        throw error;
      });
    }
    return this.key;
  }

  /** The chain of `table` on `connection`, and its id. */
  private slot(connection: DatabaseConnection, table: AuditTable): { chainId: string; slot: ChainSlot } {
    let chains = this.connectionChains.get(connection);
    if (!chains) {
      this.connectionsSeen += 1;
      chains = { id: `${this.chainIdValue}.${this.connectionsSeen}`, slots: new Map() };
      this.connectionChains.set(connection, chains);
    }
    let slot = chains.slots.get(table);
    if (!slot) {
      slot = new ChainSlot(table);
      chains.slots.set(table, slot);
    }
    return { chainId: chains.id, slot };
  }

  /** The open transaction `db` runs in, if any. */
  async transactionOf(db: AnyDb): Promise<OpenTransaction | null> {
    const known = this.byHandle.get(db);
    if (known) return known;
    if (db === this.root) return null;
    const connection = await db.getExecutor().provideConnection(async (c) => c);
    return this.byConnection.get(connection) ?? null;
  }

  begin(connection: DatabaseConnection, handle?: object): OpenTransaction {
    const tx = new OpenTransaction();
    this.byConnection.set(connection, tx);
    if (handle) this.byHandle.set(handle, tx);
    return tx;
  }

  end(connection: DatabaseConnection, handle?: object): void {
    this.byConnection.delete(connection);
    if (handle) this.byHandle.delete(handle);
  }

  openOn(connection: DatabaseConnection): OpenTransaction | undefined {
    return this.byConnection.get(connection);
  }

  /** Queues a chained row with the transaction `db` is in, or writes it in a transaction of its own. */
  async write(db: AnyDb, table: AuditTable, row: Record<string, unknown>, statement: ChainedStatement): Promise<void> {
    const values = AUDIT_TABLE_COLUMNS[table].map((column) => (row[column] ?? null) as ChainValue);
    const deferred: DeferredRow = { table, row, values, statement };
    const tx = await this.transactionOf(db);
    if (tx) {
      tx.deferred.push(deferred);
      return;
    }
    const root = this.root ?? db;
    await root.transaction().execute(async (trx) => {
      const own = await this.transactionOf(trx);
      if (!own) throw new Error("audit chains: the transaction was not seen by the driver");
      own.deferred.push(deferred);
    });
  }

  /**
   * Sends the transaction's chained rows, then COMMITs, holding the locks of their chains in
   * between (taken in table order, so two transactions never wait on each other crosswise).
   * The heads move on only once the COMMIT has returned.
   */
  async commit(
    tx: OpenTransaction,
    connection: DatabaseConnection,
    execute: (query: CompiledQuery) => Promise<unknown>,
    commit: () => Promise<void>,
  ): Promise<void> {
    if (tx.deferred.length === 0) return commit();
    const key = await this.chainKey();
    const chainOf = new Map(tx.deferred.map((d) => [d.table, this.slot(connection, d.table)]));
    const slots = [...chainOf.values()].map((c) => c.slot).sort((a, b) => (a.table < b.table ? -1 : 1));
    const releases: Array<() => void> = [];
    try {
      // Uncontended in practice (a connection runs one transaction at a time); kept for safety.
      for (const slot of slots) releases.push(await slot.lock());
      const heads = new Map<ChainSlot, Head>();
      for (const d of tx.deferred) {
        const { chainId, slot } = chainOf.get(d.table) as { chainId: string; slot: ChainSlot };
        const previous = heads.get(slot) ?? slot.head ?? { seq: 0, hash: genesisHash(key, d.table, chainId) };
        const seq = previous.seq + 1;
        const hash = linkHash(key, previous.hash, d.table, chainId, seq, d.values);
        await execute(d.statement({ ...d.row, chain_id: chainId, chain_seq: seq, chain_hash: hash.toString("hex") }));
        heads.set(slot, { seq, hash });
      }
      await commit();
      for (const [slot, head] of heads) slot.head = head;
    } finally {
      tx.deferred = [];
      for (const release of releases) release();
    }
  }
}

const byAdapter = new WeakMap<DialectAdapter, AuditChains>();

/** The chains of the database `db` was opened on (any handle: the database, a transaction, a connection). */
export function auditChainsOf(db: AnyDb): AuditChains | undefined {
  return byAdapter.get(db.getExecutor().adapter);
}

/** Turns chaining on for `db` (opened with openDatabase): every chained trail written through it from now on. */
export function configureAuditChains(db: AnyDb, config: AuditChainConfig): AuditChains {
  const chains = auditChainsOf(db);
  if (!chains) throw new Error("audit chains need a database opened with openDatabase");
  chains.configure(config);
  return chains;
}

/**
 * Writes one row of an audit trail through `db` (a database, a transaction or a connection).
 * `statement` gets the row with its chain columns; on a database without chains configured the
 * row is written unchained, at once.
 */
export async function writeChained<Row extends object>(
  db: AnyDb,
  table: AuditTable,
  row: Row,
  statement: (row: Row & ChainColumns) => CompiledQuery,
): Promise<void> {
  const chains = auditChainsOf(db);
  if (!chains?.configured) {
    await db.executeQuery(statement({ ...row, ...UNCHAINED }));
    return;
  }
  await chains.write(db, table, row as Record<string, unknown>, statement as ChainedStatement);
}

/** For code that sends BEGIN and COMMIT itself (group commit): follow the transaction it opened on `db`'s connection. */
export interface RawTransaction {
  /** Before a unit's savepoint: what is queued after it can be dropped with rewind(). */
  mark(name: string): void;
  rewind(name: string): void;
  release(name: string): void;
  /** Sends the queued chained rows, then runs `sendCommit`. */
  commit(sendCommit: () => Promise<void>): Promise<void>;
  /** The transaction is over (committed or rolled back): forget it. */
  close(): void;
}

export async function openRawTransaction(db: AnyDb): Promise<RawTransaction | null> {
  const chains = auditChainsOf(db);
  if (!chains?.configured) return null;
  const connection = await db.getExecutor().provideConnection(async (c) => c);
  const tx = chains.begin(connection, db);
  return {
    mark: (name) => tx.mark(name),
    rewind: (name) => tx.rewind(name),
    release: (name) => tx.release(name),
    commit: (sendCommit) => chains.commit(tx, connection, (query) => db.executeQuery(query), sendCommit),
    close: () => chains.end(connection, db),
  };
}

/** Wraps a dialect so its driver reports transactions to the database's chains (openDatabase does this). */
export function withAuditChains(dialect: Dialect): { dialect: Dialect; attach(db: AnyDb): void } {
  const chains = new AuditChains();
  return {
    dialect: {
      createAdapter: () => dialect.createAdapter(),
      createDriver: () => new ChainFollowingDriver(dialect.createDriver(), chains),
      createIntrospector: (db) => dialect.createIntrospector(db),
      createQueryCompiler: () => dialect.createQueryCompiler(),
    },
    attach(db) {
      chains.root = db;
      byAdapter.set(db.getExecutor().adapter, chains);
    },
  };
}

class ChainFollowingDriver implements Driver {
  constructor(
    private readonly inner: Driver,
    private readonly chains: AuditChains,
  ) {}

  init(): Promise<void> {
    return this.inner.init();
  }

  acquireConnection(): Promise<DatabaseConnection> {
    return this.inner.acquireConnection();
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    await this.inner.beginTransaction(connection, settings);
    this.chains.begin(connection);
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const tx = this.chains.openOn(connection);
    if (!tx) return this.inner.commitTransaction(connection);
    try {
      await this.chains.commit(
        tx,
        connection,
        (query) => connection.executeQuery(query),
        () => this.inner.commitTransaction(connection),
      );
    } finally {
      this.chains.end(connection);
    }
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    this.chains.end(connection);
    await this.inner.rollbackTransaction(connection);
  }

  async savepoint(connection: DatabaseConnection, name: string, compile: QueryCompiler["compileQuery"]): Promise<void> {
    if (!this.inner.savepoint) throw new Error("this driver has no savepoints");
    await this.inner.savepoint(connection, name, compile);
    this.chains.openOn(connection)?.mark(name);
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string, compile: QueryCompiler["compileQuery"]): Promise<void> {
    if (!this.inner.rollbackToSavepoint) throw new Error("this driver has no savepoints");
    await this.inner.rollbackToSavepoint(connection, name, compile);
    this.chains.openOn(connection)?.rewind(name);
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string, compile: QueryCompiler["compileQuery"]): Promise<void> {
    if (!this.inner.releaseSavepoint) throw new Error("this driver has no savepoints");
    await this.inner.releaseSavepoint(connection, name, compile);
    this.chains.openOn(connection)?.release(name);
  }

  releaseConnection(connection: DatabaseConnection): Promise<void> {
    return this.inner.releaseConnection(connection);
  }

  destroy(): Promise<void> {
    return this.inner.destroy();
  }
}
