/**
 * What an SDK client reaches beyond its login: the application's cloud variables, the logged-in
 * user's own variables, and the application's cloud functions, run on the worker pool
 * (src/node/functions/pool.ts) off the event loop that serves logins and heartbeats.
 *
 * - Cloud variables come from the delivered app_variables config: every one for a logged-in
 *   session, only those the vendor listed as public before a login.
 * - A user's variables live in the Runtime DB (every node sees the same); the application's
 *   app_policy limits their number and size.
 * - A function runs with the caller's identity, the application's variables and a copy of the
 *   user's variables; what the script changed in that copy is stored after the call, within the
 *   same limits, all or nothing. A card-key session has no user account: its functions see an
 *   empty user_id and username and no user variables, and cannot set any.
 */
import type { Kysely } from "kysely";
import type { GroupCommit, RuntimeSchema } from "../../shared/db/index.js";
import { applyUserVariableWrites, listUserVariables, type UserVariableWrite, userVariableLimits } from "../../shared/db/runtime/index.js";
import { AuthNexusError, isAuthNexusError } from "../../shared/errors/index.js";
import type { Message, Value } from "../../shared/protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { FunctionPool } from "../functions/pool.js";
import type { AppliedConfigStore } from "../state/config-store.js";
import type { LiveSession } from "./connection.js";

export interface CloudCallsOptions {
  db: Kysely<RuntimeSchema>;
  writes: GroupCommit<RuntimeSchema>;
  store: AppliedConfigStore;
  pool: FunctionPool;
  clock: Clock;
}

/** The caller as the service knows it: the connection's application and device, and its session if any. */
export interface CloudCaller {
  appId: string;
  deviceId: string;
  session: LiveSession | null;
  /** Whether the session is still the connection's and still good (a call may outlast it). */
  stillLoggedIn: () => boolean;
}

/** A function whose writes found the user's variables changed meanwhile runs once more on the new ones. */
const CALL_ATTEMPTS = 2;

export class CloudCalls {
  constructor(private readonly options: CloudCallsOptions) {}

  /** The cloud variables the caller may read: all of them once logged in, the public ones before. */
  variables(caller: CloudCaller, name: string | null): Record<string, Value> {
    const { variables, public: publicNames } = this.options.store.appVariables(caller.appId);
    const readable = caller.session ? Object.keys(variables) : publicNames;
    const names = name === null ? readable : readable.filter((one) => one === name);
    const values: Record<string, Value> = {};
    for (const one of names) if (Object.hasOwn(variables, one)) values[one] = variables[one] as Value;
    return values;
  }

  async userVariables(caller: CloudCaller, key: string | null): Promise<Record<string, string>> {
    const userId = requireUser(caller);
    const all = await listUserVariables(this.options.db, userId);
    if (key === null) return all;
    return Object.hasOwn(all, key) ? { [key]: all[key] as string } : {};
  }

  async setUserVariable(caller: CloudCaller, body: Message<"set_user_variable">): Promise<void> {
    const userId = requireUser(caller);
    await this.storeWrites(caller.appId, userId, [{ key: body.key, value: body.value }]);
  }

  async callFunction(caller: CloudCaller, body: Message<"call_function">): Promise<Value> {
    const session = caller.session;
    if (!session) throw new AuthNexusError("NOT_LOGGED_IN");
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.callOnce(caller, session, body);
      } catch (error) {
        if (attempt >= CALL_ATTEMPTS || !isAuthNexusError(error, "USER_VARIABLE_CONFLICT")) throw error;
      }
    }
  }

  /**
   * One run: the function sees a copy of the user's variables, and what it changed is stored
   * only if nobody changed them meanwhile (compare and set), so two calls of the same user on
   * two connections cannot both act on the same state — the second one runs again on the new.
   */
  private async callOnce(caller: CloudCaller, session: LiveSession, body: Message<"call_function">): Promise<Value> {
    const { store, pool, db } = this.options;
    const fn = store.cloudFunction(caller.appId, body.name);
    if (!fn) throw new AuthNexusError("FUNCTION_NOT_FOUND", { message: `No cloud function named ${body.name}.` });
    const userVariables = session.userId === null ? {} : await listUserVariables(db, session.userId);
    const result = await pool.call({
      name: body.name,
      sha256: fn.manifest.sha256,
      script: fn.body.toString("utf8"),
      timeoutMs: fn.manifest.timeout_ms,
      params: body.params,
      context: { user_id: session.userId ?? "", app_id: caller.appId, username: session.username ?? "", device_id: caller.deviceId },
      appVariables: store.appVariables(caller.appId).variables,
      userVariables,
    });
    if (result.userVariableWrites.length > 0) {
      if (session.userId === null)
        throw new AuthNexusError("USER_VARIABLE_LIMIT", { message: "A card-key session has no user account to keep variables for." });
      // The session may have ended while the function ran (a force_logout, an epoch bump).
      if (!caller.stillLoggedIn()) throw new AuthNexusError("SESSION_ENDED", { detail: { reason: "the session ended during the call" } });
      await this.storeWrites(caller.appId, session.userId, result.userVariableWrites, userVariables);
    }
    return result.value;
  }

  private async storeWrites(appId: string, userId: string, writes: UserVariableWrite[], expected?: Record<string, string>): Promise<void> {
    const limits = userVariableLimits(this.options.store.appPolicy(appId));
    const now = this.options.clock.now();
    await this.options.writes.run((trx) => applyUserVariableWrites(trx, { appId, userId }, writes, limits, now, expected));
  }
}

/** Per-user variables need a session with a user account. */
function requireUser(caller: CloudCaller): string {
  if (!caller.session) throw new AuthNexusError("NOT_LOGGED_IN");
  if (caller.session.userId === null)
    throw new AuthNexusError("USER_VARIABLE_LIMIT", { message: "A card-key session has no user account to keep variables for." });
  return caller.session.userId;
}
