/** Static list of Control DB migrations: survives bundling, unlike a folder scan. */
import type { Migration } from "kysely";
import type { MigrationSet } from "../../src/shared/db/migrate.js";
import * as m0001 from "./0001_init.js";
import * as m0002 from "./0002_nodes_and_channels.js";
import * as m0003 from "./0003_cloud_function_switch.js";
import * as m0004 from "./0004_pki_audit_jobs_and_profiles.js";
import * as m0005 from "./0005_node_rotations.js";
import * as m0006 from "./0006_ca_rotations.js";
import * as m0007 from "./0007_audit_chains.js";
import * as m0008 from "./0008_report_indexes.js";

export const controlMigrations: Record<string, Migration> = {
  "0001_init": m0001,
  "0002_nodes_and_channels": m0002,
  "0003_cloud_function_switch": m0003,
  "0004_pki_audit_jobs_and_profiles": m0004,
  "0005_node_rotations": m0005,
  "0006_ca_rotations": m0006,
  "0007_audit_chains": m0007,
  "0008_report_indexes": m0008,
};

/** What the Control DB's owner hands the migrator. */
export const controlMigrationSet: MigrationSet = { role: "control", migrations: controlMigrations };
