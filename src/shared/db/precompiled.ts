/**
 * Queries built and compiled by Kysely once, then executed many times with new values.
 *
 * Building and compiling a query (operation-node trees, frozen objects, identifier checks)
 * costs more CPU than SQLite takes to run a point lookup; on the node API's hot path (every
 * node, every few seconds) it was a tenth of the CP's CPU. The query is still written with
 * the typed builder: `build` receives placeholders, which Kysely compiles as ordinary
 * parameters; executing swaps each placeholder for its value. The SQL text never changes, so
 * nothing a caller passes can alter it.
 */
import { type Compilable, type CompiledQuery, type Kysely, type QueryResult } from "kysely";

const PLACEHOLDER = "\u0000authnexus:param:";

/** Stands in for a parameter while the query is built (typed as the value it will carry). */
export type Placeholders<Params> = { readonly [K in keyof Params]: Params[K] };

export type PrecompiledQuery<Params, Row> = (db: Kysely<any>, values: Params) => Promise<QueryResult<Row>>;

export function precompiled<Params extends Record<string, unknown>, Row>(build: (db: Kysely<any>, params: Placeholders<Params>) => Compilable<Row>): PrecompiledQuery<Params, Row> {
  const params = new Proxy({} as Placeholders<Params>, { get: (_target, name) => `${PLACEHOLDER}${String(name)}` });
  // Compiled per database handle: the SQL differs between dialects.
  const byDb = new WeakMap<Kysely<any>, { compiled: CompiledQuery<Row>; slots: (string | null)[] }>();
  return async (db, values) => {
    let entry = byDb.get(db);
    if (!entry) {
      const compiled = build(db, params).compile();
      const slots = compiled.parameters.map((p) => (typeof p === "string" && p.startsWith(PLACEHOLDER) ? p.slice(PLACEHOLDER.length) : null));
      entry = { compiled, slots };
      byDb.set(db, entry);
    }
    const { compiled, slots } = entry;
    const parameters = compiled.parameters.map((p, i) => {
      const name = slots[i];
      if (name === null || name === undefined) return p;
      const value = values[name];
      if (value === undefined) throw new Error(`precompiled query: no value for parameter "${name}"`);
      return value;
    });
    return db.executeQuery<Row>({ ...compiled, parameters });
  };
}
