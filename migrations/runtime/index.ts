/** Static list of Runtime DB migrations: survives bundling, unlike a folder scan. */
import type { Migration } from "kysely";
import * as m0001 from "./0001_init.js";
import * as m0002 from "./0002_blacklist_tombstones.js";

export const runtimeMigrations: Record<string, Migration> = {
  "0001_init": m0001,
  "0002_blacklist_tombstones": m0002,
};
