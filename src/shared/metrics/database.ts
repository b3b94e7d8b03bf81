/** Gauges every role reports about the databases it holds, read when scraped. */
import { databaseStats } from "../db/connect.js";
import type { MetricsRegistry } from "./index.js";

/** Database pool and SQLite busy gauges, for the databases a role holds (by name). */
export function watchDatabasePools(r: MetricsRegistry, databases: Record<string, object>): void {
  const stats = () => Object.entries(databases).map(([db, handle]) => ({ db, stats: databaseStats(handle) }));
  r.gauge(
    "authnexus_db_pool_connections",
    "PostgreSQL pool connections by state: total (open), idle, waiting (queries queued for a connection).",
    ["db", "state"],
    (g) => {
      for (const { db, stats: s } of stats()) {
        if (!s.pool) continue;
        g.set({ db, state: "total" }, s.pool.total);
        g.set({ db, state: "idle" }, s.pool.idle);
        g.set({ db, state: "waiting" }, s.pool.waiting);
      }
    },
  );
  r.gauge(
    "authnexus_db_sqlite_busy_errors",
    "SQLite statements that failed with SQLITE_BUSY (locked past the busy timeout) since the database was opened.",
    ["db"],
    (g) => {
      for (const { db, stats: s } of stats()) if (s.dialect === "sqlite") g.set({ db }, s.busyErrors);
    },
  );
}
