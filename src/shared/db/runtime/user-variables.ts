/**
 * Per-user variables (KeyAuth's getvar/setvar): a user's own small key/value store, written by
 * the node for the logged-in user and by the CP for an admin. Limits come from app_policy:
 * `user_variables_max_count` (0 switches the feature off) and `user_variable_max_bytes` (UTF-8
 * bytes of one value). A batch of writes is checked as a whole before any of it is written, so
 * a refused batch leaves the store as it was.
 */
import { type Kysely, sql } from "kysely";
import { AuthNexusError } from "../../errors/index.js";
import type { AppPolicy } from "../../node-protocol/config-types.js";
import { dialectOf } from "../dialect.js";
import { precompiled } from "../precompiled.js";
import type { RuntimeSchema } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

/** A variable's key: the same rule as the application's cloud variables. Case-sensitive. */
export const USER_VARIABLE_KEY = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

export interface UserVariableLimits {
  maxCount: number;
  maxValueBytes: number;
}

/** One change: `value` null deletes the key (absent or not). */
export interface UserVariableWrite {
  key: string;
  value: string | null;
}

/** Longest key quoted back in an error message (a refused key may be any length). */
const QUOTED_KEY_MAX_CHARS = 80;
/** PostgreSQL advisory lock class (first key of the two-int form) serialising one user's variable writes. */
const USER_VARIABLES_LOCK_CLASS = 0x41_4e_55_56; // "ANUV"
/** A UTF-16 surrogate not part of a pair: no UTF-8 form, so it would be stored as U+FFFD. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

// Precompiled: a setvar from the SDK runs these on the node's login-serving event loop.
const variableRows = precompiled<{ userId: string }, { key: string; value: string }>((db: RuntimeDb, p) =>
  db.selectFrom("user_variables").select(["key", "value"]).where("user_id", "=", p.userId),
);
const variableExists = precompiled<{ userId: string; key: string }, { one: number }>((db: RuntimeDb, p) =>
  db.selectFrom("user_variables").select(sql<number>`1`.as("one")).where("user_id", "=", p.userId).where("key", "=", p.key),
);
const countVariables = precompiled<{ userId: string }, { n: number }>((db: RuntimeDb, p) =>
  db.selectFrom("user_variables").select(sql<number>`count(*)`.as("n")).where("user_id", "=", p.userId),
);
const upsertVariable = precompiled<{ appId: string; userId: string; key: string; value: string; now: number }, never>((db: RuntimeDb, p) =>
  db
    .insertInto("user_variables")
    .values({ app_id: p.appId, user_id: p.userId, key: p.key, value: p.value, created_at: p.now, updated_at: p.now })
    .onConflict((oc) => oc.columns(["user_id", "key"]).doUpdateSet({ value: p.value, updated_at: p.now })),
);
const deleteVariable = precompiled<{ userId: string; key: string }, never>((db: RuntimeDb, p) =>
  db.deleteFrom("user_variables").where("user_id", "=", p.userId).where("key", "=", p.key),
);

/** The user's variables, key → value. */
export async function listUserVariables(db: RuntimeDb, userId: string): Promise<Record<string, string>> {
  const { rows } = await variableRows(db, { userId });
  // fromEntries defines own properties, so a key such as "__proto__" is kept like any other.
  return Object.fromEntries(rows.map((r) => [r.key, r.value]));
}

export function userVariableLimits(policy: AppPolicy): UserVariableLimits {
  return { maxCount: policy.user_variables_max_count, maxValueBytes: policy.user_variable_max_bytes };
}

function invalid(key: string, why: string): AuthNexusError {
  const quoted = JSON.stringify(key.length > QUOTED_KEY_MAX_CHARS ? `${key.slice(0, QUOTED_KEY_MAX_CHARS)}…` : key);
  return new AuthNexusError("USER_VARIABLE_INVALID", { message: `Variable ${quoted}: ${why}.` });
}

/** Why a value cannot be stored, or null. NUL is refused because PostgreSQL text cannot hold it. */
function userVariableValueProblem(value: string, maxValueBytes: number): string | null {
  const bytes = Buffer.byteLength(value, "utf8");
  if (bytes > maxValueBytes) return `the value is ${bytes} bytes in UTF-8, more than the ${maxValueBytes} allowed`;
  if (value.includes("\u0000")) return "the value must not contain NUL characters";
  if (LONE_SURROGATE.test(value)) return "the value is not valid Unicode text";
  return null;
}

function checkWrite(write: UserVariableWrite, limits: UserVariableLimits): void {
  if (!USER_VARIABLE_KEY.test(write.key))
    throw invalid(write.key, "a key is 1-64 characters: a letter or _, then letters, digits, _, . or -");
  if (write.value === null) return;
  const problem = userVariableValueProblem(write.value, limits.maxValueBytes);
  if (problem) throw invalid(write.key, problem);
}

/** The batch's effect per key: a key written twice ends with its last write. */
function finalWrites(writes: UserVariableWrite[]): Map<string, string | null> {
  return new Map(writes.map((w) => [w.key, w.value]));
}

/** How many variables the user gains (negative: loses) once `changes` are applied. */
async function countChange(trx: RuntimeDb, userId: string, changes: Map<string, string | null>): Promise<number> {
  let delta = 0;
  for (const [key, value] of changes) {
    const exists = (await variableExists(trx, { userId, key })).rows.length > 0;
    if (value !== null && !exists) delta += 1;
    if (value === null && exists) delta -= 1;
  }
  return delta;
}

/**
 * Refuses a batch that would leave the user with more than `maxCount` variables. A user already
 * over a lowered limit may still replace and delete; only growing past it is refused.
 */
async function checkCount(trx: RuntimeDb, userId: string, changes: Map<string, string | null>, maxCount: number): Promise<void> {
  const delta = await countChange(trx, userId, changes);
  if (delta <= 0) return;
  const before = Number((await countVariables(trx, { userId })).rows[0]?.n ?? 0);
  if (before + delta > maxCount)
    throw new AuthNexusError("USER_VARIABLE_LIMIT", {
      message: `A user may keep at most ${maxCount} variables; these writes would leave ${before + delta}.`,
    });
}

/** On PostgreSQL, concurrent batches of one user queue here so the count check holds (SQLite has one writer). */
async function lockUserVariables(trx: RuntimeDb, userId: string): Promise<void> {
  if (dialectOf(trx) !== "postgres") return;
  await sql`select pg_advisory_xact_lock(${sql.lit(USER_VARIABLES_LOCK_CLASS)}, hashtext(${userId}))`.execute(trx);
}

/**
 * Applies writes all-or-nothing inside the caller's transaction `trx`; checks every key
 * (USER_VARIABLE_KEY), every value's size, and the count after the writes; throws
 * AuthNexusError without writing anything when one fails. With `maxCount` 0 per-user variables
 * are off: every batch is refused with USER_VARIABLE_LIMIT, deletes included.
 */
export async function applyUserVariableWrites(
  trx: RuntimeDb,
  owner: { appId: string; userId: string },
  writes: UserVariableWrite[],
  limits: UserVariableLimits,
  now: number,
  /**
   * The variables the writes were computed from (a cloud function's copy): when the stored ones
   * differ by now, another call changed them meanwhile and USER_VARIABLE_CONFLICT is thrown
   * instead of overwriting that change.
   */
  expected?: Record<string, string>,
): Promise<void> {
  if (limits.maxCount === 0)
    throw new AuthNexusError("USER_VARIABLE_LIMIT", { message: "Per-user variables are disabled for this application." });
  for (const write of writes) checkWrite(write, limits);
  if (writes.length === 0) return;
  const changes = finalWrites(writes);
  await lockUserVariables(trx, owner.userId);
  if (expected !== undefined && !sameVariables(await listUserVariables(trx, owner.userId), expected))
    throw new AuthNexusError("USER_VARIABLE_CONFLICT");
  await checkCount(trx, owner.userId, changes, limits.maxCount);
  for (const [key, value] of changes) {
    if (value === null) await deleteVariable(trx, { userId: owner.userId, key });
    else await upsertVariable(trx, { appId: owner.appId, userId: owner.userId, key, value, now });
  }
}

function sameVariables(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && a[key] === b[key]);
}
