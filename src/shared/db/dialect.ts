import { type Kysely, PostgresAdapter, SqliteAdapter } from "kysely";

export type DialectName = "sqlite" | "postgres";

/** Which SQL dialect a Kysely instance speaks: migrations need it for the few type differences. */
// biome-ignore lint/suspicious/noExplicitAny: any schema will do
export function dialectOf(db: Kysely<any>): DialectName {
  const adapter = db.getExecutor().adapter;
  if (adapter instanceof PostgresAdapter) return "postgres";
  if (adapter instanceof SqliteAdapter) return "sqlite";
  throw new Error("unsupported database adapter");
}
