/**
 * Queries built and compiled by Kysely once, then executed many times with new values.
 *
 * Building and compiling a query (operation-node trees, frozen objects, identifier checks)
 * costs more CPU than SQLite takes to run a point lookup; on the node API's hot path (every
 * node, every few seconds) it was a tenth of the CP's CPU. The query is still written with
 * the typed builder: `build` receives placeholders, which Kysely compiles as ordinary
 * parameters; executing swaps each placeholder for its value. The SQL text never changes, so
 * nothing a caller passes can alter it. Placeholders must be passed to the builder as whole
 * values (not folded into strings, arithmetic or `in` lists): that is checked at compile time.
 */
import { type Compilable, type CompiledQuery, createQueryId, type Kysely, type QueryResult } from "kysely";

// A private-use character brackets each placeholder: it cannot occur in a query's own text.
const PLACEHOLDER = "\uE000authnexus:param:";
const PLACEHOLDER_END = "\uE000";
const WHOLE_PLACEHOLDER = /^\uE000authnexus:param:([^\uE000]+)\uE000$/;

/** Stands in for a parameter while the query is built (typed as the value it will carry). */
export type Placeholders<Params> = { readonly [K in keyof Params]: Params[K] };

// biome-ignore lint/suspicious/noExplicitAny: a precompiled query runs on a database of any schema
export type PrecompiledQuery<Params, Row> = ((db: Kysely<any>, values: Params) => Promise<QueryResult<Row>>) & {
  /** The query with `values` in place, to be sent later (an audit-chained row waits for its COMMIT). */
  // biome-ignore lint/suspicious/noExplicitAny: as above
  bind(db: Kysely<any>, values: Params): CompiledQuery<Row>;
};

export function precompiled<Params extends object, Row>(
  // biome-ignore lint/suspicious/noExplicitAny: the builder gets the schema-typed handle its caller declares
  build: (db: Kysely<any>, params: Placeholders<Params>) => Compilable<Row>,
): PrecompiledQuery<Params, Row> {
  const params = new Proxy({} as Placeholders<Params>, { get: (_target, name) => `${PLACEHOLDER}${String(name)}${PLACEHOLDER_END}` });
  // Compiled per database handle: the SQL differs between dialects.
  // biome-ignore lint/suspicious/noExplicitAny: keyed by handle, whatever its schema
  const byDb = new WeakMap<Kysely<any>, { compiled: CompiledQuery<Row>; slots: (string | null)[] }>();
  // biome-ignore lint/suspicious/noExplicitAny: as above
  const bind = (db: Kysely<any>, values: Params): CompiledQuery<Row> => {
    let entry = byDb.get(db);
    if (!entry) {
      const compiled = build(db, params).compile();
      const slots = compiled.parameters.map((p) => {
        if (typeof p !== "string" || !p.includes(PLACEHOLDER)) return null;
        // A placeholder must be a whole parameter: one folded into a larger value ("%" + p.name)
        // or used in arithmetic would compile into SQL that can never see the real value.
        const whole = WHOLE_PLACEHOLDER.exec(p);
        if (!whole?.[1]) throw new Error(`precompiled query: placeholder used inside a larger value (${JSON.stringify(p)})`);
        return whole[1];
      });
      entry = { compiled, slots };
      byDb.set(db, entry);
    }
    const { compiled, slots } = entry;
    const parameters = compiled.parameters.map((p, i) => {
      const name = slots[i];
      if (name === null || name === undefined) return p;
      const value = (values as Record<string, unknown>)[name];
      if (value === undefined) throw new Error(`precompiled query: no value for parameter "${name}"`);
      return value;
    });
    // A fresh query id per run: Kysely keys plugin state by it, and runs may overlap.
    return { ...compiled, queryId: createQueryId(), parameters };
  };
  // biome-ignore lint/suspicious/noExplicitAny: as above
  return Object.assign(async (db: Kysely<any>, values: Params) => db.executeQuery<Row>(bind(db, values)), { bind });
}
