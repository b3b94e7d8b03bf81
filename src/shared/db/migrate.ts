/**
 * Runs one database's migrations at start. The Control DB and the Runtime DB keep separate
 * migration tables, and a database that already carries the other role's table is refused:
 * pointing both roles at one database would silently mix two schemas.
 */
import { type Kysely, type Migration, type MigrationProvider, Migrator } from "kysely";
import { controlMigrations } from "../../../migrations/control/index.js";
import { runtimeMigrations } from "../../../migrations/runtime/index.js";
import { AuthNexusError } from "../errors/index.js";

export type DatabaseRole = "control" | "runtime";

const MIGRATIONS: Record<DatabaseRole, Record<string, Migration>> = {
  control: controlMigrations,
  runtime: runtimeMigrations,
};

export function migrationTableName(role: DatabaseRole): string {
  return `authnexus_${role}_migrations`;
}

export interface MigrationReport {
  applied: string[];
}

export async function migrateDatabase(db: Kysely<unknown>, role: DatabaseRole, location: string): Promise<MigrationReport> {
  await refuseForeignDatabase(db, role, location);
  const provider: MigrationProvider = { getMigrations: async () => MIGRATIONS[role] };
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
