/** Static list of Runtime DB migrations: survives bundling, unlike a folder scan. */
import type { Migration } from "kysely";
import type { MigrationSet } from "../../src/shared/db/migrate.js";
import * as m0001 from "./0001_init.js";
import * as m0002 from "./0002_blacklist_tombstones.js";
import * as m0003 from "./0003_business_plane.js";
import * as m0004 from "./0004_login_write_path.js";
import * as m0005 from "./0005_user_variables.js";
import * as m0006 from "./0006_audit_chains.js";
import * as m0007 from "./0007_report_indexes.js";

export const runtimeMigrations: Record<string, Migration> = {
  "0001_init": m0001,
  "0002_blacklist_tombstones": m0002,
  "0003_business_plane": m0003,
  "0004_login_write_path": m0004,
  "0005_user_variables": m0005,
  "0006_audit_chains": m0006,
  "0007_report_indexes": m0007,
};

/** What the Runtime DB's owner hands the migrator. */
export const runtimeMigrationSet: MigrationSet = { role: "runtime", migrations: runtimeMigrations };
