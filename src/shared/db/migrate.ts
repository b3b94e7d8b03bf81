/**
 * Runs one database's migrations at start. The Control DB and the Runtime DB keep separate
 * migration tables, and a database that already carries the other role's table is refused:
 * pointing both roles at one database would silently mix two schemas.
 */
import { type Kysely, type Migration, type MigrationProvider, Migrator } from "kysely";
import { type DbOptions, describeDb } from "../config/db-options.js";
import { AuthNexusError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { openDatabase } from "./connect.js";

export type DatabaseRole = "control" | "runtime";

/**
 * One database's migrations, named in order. The lists live in migrations/ and each role hands
 * its own to the migrator (migrations/ imports shared/db, so shared/db must not import it).
 */
export interface MigrationSet {
  role: DatabaseRole;
  migrations: Record<string, Migration>;
}

export function migrationTableName(role: DatabaseRole): string {
  return `authnexus_${role}_migrations`;
}

export interface MigrationReport {
  applied: string[];
}

export async function migrateDatabase(db: Kysely<unknown>, set: MigrationSet, location: string): Promise<MigrationReport> {
  const { role } = set;
  await refuseForeignDatabase(db, role, location);
  const provider: MigrationProvider = { getMigrations: async () => set.migrations };
  const migrator = new Migrator({
    db,
    provider,
    migrationTableName: migrationTableName(role),
    migrationLockTableName: `${migrationTableName(role)}_lock`,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === "Error")?.migrationName;
    throw new AuthNexusError("DB_MIGRATION_MISMATCH", {
      message: `${role} database ${location}: migration ${failed ?? "check"} failed: ${(error as Error).message}`,
      cause: error,
    });
  }
  return { applied: (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName) };
}

async function refuseForeignDatabase(db: Kysely<unknown>, role: DatabaseRole, location: string): Promise<void> {
  const other: DatabaseRole = role === "control" ? "runtime" : "control";
  const tables = await db.introspection.getTables({ withInternalKyselyTables: true });
  if (tables.some((t) => t.name === migrationTableName(other))) {
    throw new AuthNexusError("DB_MIGRATION_MISMATCH", {
      message: `${location} holds the ${other} database's migrations (${migrationTableName(other)}); the Control DB and the Runtime DB must be separate databases`,
    });
  }
}

/** A background checkpoint this slow is logged: the disk is struggling. */
const SLOW_CHECKPOINT_MS = 1000;

/** Opens a database, brings it to its latest migration and logs where it is; nothing is left open on failure. */
export async function openMigratedDatabase<Schema>(
  options: DbOptions,
  set: MigrationSet,
  log: Logger,
  open: { server?: boolean } = {},
): Promise<Kysely<Schema>> {
  const dbLog = log.category("DB");
  // A server checkpoints SQLite's WAL off the thread that serves requests (wal-checkpointer.ts).
  const backgroundCheckpoints = open.server
    ? {
        checkpointed: (event: { walFrames: number; copiedFrames: number; ms: number }) => {
          if (event.ms < SLOW_CHECKPOINT_MS) return;
          dbLog.info("checkpoint.slow", {
            role: set.role,
            wal_frames: event.walFrames,
            copied_frames: event.copiedFrames,
            ms: Math.round(event.ms),
          });
        },
        failed: (event: { error: string }) => dbLog.warn("checkpoint.failed", { role: set.role, error: event.error }),
      }
    : undefined;
  const db = await openDatabase<Schema>(options, backgroundCheckpoints ? { backgroundCheckpoints } : {});
  try {
    const location = describeDb(options);
    const report = await migrateDatabase(db as Kysely<unknown>, set, location);
    dbLog.info("database.ready", { role: set.role, location, migrations_applied: report.applied });
    return db;
  } catch (error) {
    await db.destroy();
    throw error;
  }
}
