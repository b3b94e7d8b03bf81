export { openDatabase } from "./connect.js";
export { migrateDatabase, migrationTableName } from "./migrate.js";
export type { DatabaseRole, MigrationReport } from "./migrate.js";
export { dialectOf } from "./dialect.js";
export type { DialectName } from "./dialect.js";
export type { ControlSchema } from "./control-schema.js";
export type { RuntimeSchema } from "./runtime-schema.js";
export { isUniqueViolation } from "./errors.js";
