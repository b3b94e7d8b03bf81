/**
 * Agent (admin account) management. Usernames are case-insensitive (stored lower-case); the
 * last active root can never be disabled or demoted, so the Control Plane cannot be locked out.
 */
import type { Kysely, Transaction } from "kysely";
import type { AgentsTable } from "../../../shared/db/control-schema.js";
import type { ControlSchema } from "../../../shared/db/index.js";
import { dialectOf, isUniqueViolation } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import type { CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { runThrottledPasswordCheck } from "./login-throttle.js";
import { assertPasswordPolicy, hashAgentPassword, verifyAgentPassword } from "./passwords.js";
import type { AgentRole } from "./roles.js";

/** An agent as the API shows it: everything but the password hash. */
export type AgentView = Omit<AgentsTable, "password_hash">;

const AGENT_COLUMNS = [
  "id",
  "username",
  "display_name",
  "role",
  "status",
  "created_at",
  "updated_at",
  "created_by",
  "password_changed_at",
  "last_login_at",
] as const;

/**
 * Case-insensitive usernames. Control characters (which valid usernames never contain) become
 * U+FFFD first, so a login with "root\0" or "root\r\n" is an unknown user rather than root, and
 * the value stays storable in the login log on every database.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: replacing them is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/g;

export function normalizeUsername(username: string): string {
  return username.replace(CONTROL_CHARACTERS, "\uFFFD").trim().toLowerCase();
}

export interface NewAgent {
  username: string;
  password: string;
  role: AgentRole;
  displayName?: string | null;
  createdBy: string | null;
}

export async function createAgent(ctx: CpContext, input: NewAgent, db: Kysely<ControlSchema> = ctx.controlDb): Promise<AgentView> {
  const username = normalizeUsername(input.username);
  assertPasswordPolicy(input.password, username);
  const now = ctx.clock.now();
  const row = {
    id: newId("agt"),
    username,
    display_name: input.displayName ?? null,
    password_hash: await hashAgentPassword(input.password),
    role: input.role,
    status: "active",
    created_at: now,
    updated_at: now,
    created_by: input.createdBy,
    password_changed_at: now,
    last_login_at: null,
  };
  try {
    await db.insertInto("agents").values(row).execute();
  } catch (error) {
    if (isUniqueViolation(error)) throw new AuthNexusError("CONFLICT", { message: `An agent named "${username}" already exists.` });
    throw error;
  }
  const { password_hash: _omit, ...view } = row;
  return view;
}

export async function listAgents(ctx: CpContext, request: PageRequest): Promise<Page<AgentView>> {
  return paginate(ctx.controlDb.selectFrom("agents"), request, (q) => q.select(AGENT_COLUMNS).orderBy("created_at").orderBy("id"));
}

export async function getAgent(ctx: CpContext, id: string): Promise<AgentView> {
  const agent = await ctx.controlDb.selectFrom("agents").select(AGENT_COLUMNS).where("id", "=", id).executeTakeFirst();
  if (!agent) throw new AuthNexusError("NOT_FOUND", { message: "Agent not found." });
  return agent;
}

/** Absent (or undefined) fields are left as they are. */
export interface AgentChanges {
  role?: AgentRole | undefined;
  status?: "active" | "disabled" | undefined;
  displayName?: string | null | undefined;
}

/** Applies role/status/display-name changes; disabling revokes every session of the agent. */
export async function updateAgent(ctx: CpContext, id: string, changes: AgentChanges): Promise<AgentView> {
  await ctx.controlDb.transaction().execute(async (tx) => {
    const agent = await tx.selectFrom("agents").select(["role", "status"]).where("id", "=", id).executeTakeFirst();
    if (!agent) throw new AuthNexusError("NOT_FOUND", { message: "Agent not found." });
    const losesRoot =
      agent.role === "root" &&
      agent.status === "active" &&
      (changes.status === "disabled" || (changes.role !== undefined && changes.role !== "root"));
    if (losesRoot) await assertAnotherActiveRoot(tx, id);
    const now = ctx.clock.now();
    await tx
      .updateTable("agents")
      .set({
        ...(changes.role !== undefined ? { role: changes.role } : {}),
        ...(changes.status !== undefined ? { status: changes.status } : {}),
        ...(changes.displayName !== undefined ? { display_name: changes.displayName } : {}),
        updated_at: now,
      })
      .where("id", "=", id)
      .execute();
    if (changes.status === "disabled") await revokeAgentSessions(tx, id, now, "agent_disabled");
  });
  return getAgent(ctx, id);
}

/**
 * On PostgreSQL the active roots are locked in id order, so two roots demoting each other at
 * once serialise and the second sees the first's change; SQLite already runs one writer at a time.
 */
async function assertAnotherActiveRoot(tx: Transaction<ControlSchema>, exceptId: string): Promise<void> {
  let query = tx.selectFrom("agents").select("id").where("role", "=", "root").where("status", "=", "active").orderBy("id");
  if (dialectOf(tx) === "postgres") query = query.forUpdate();
  const roots = await query.execute();
  if (!roots.some((r) => r.id !== exceptId)) throw new AuthNexusError("LAST_ROOT_AGENT");
}

export interface PasswordChange {
  agentId: string;
  newPassword: string;
  /** Required when an agent changes its own password. */
  currentPassword?: string;
  /** The session making the change keeps working; every other session is revoked. */
  keepSessionId?: string;
  /** Where the change comes from: the current-password check is throttled like a login. */
  origin?: { ip: string | null; userAgent: string | null };
}

export async function changeAgentPassword(ctx: CpContext, change: PasswordChange): Promise<void> {
  const agent = await ctx.controlDb
    .selectFrom("agents")
    .select(["username", "password_hash"])
    .where("id", "=", change.agentId)
    .executeTakeFirst();
  if (!agent) throw new AuthNexusError("NOT_FOUND", { message: "Agent not found." });
  const currentPassword = change.currentPassword;
  if (currentPassword !== undefined) {
    const attempt = {
      username: agent.username,
      ip: change.origin?.ip ?? null,
      userAgent: change.origin?.userAgent ?? null,
      purpose: "password_change" as const,
    };
    const { result } = await runThrottledPasswordCheck(ctx, attempt, async () => ({
      result: (await verifyAgentPassword(currentPassword, agent.password_hash)) ? ("success" as const) : ("bad_current_password" as const),
      agentId: change.agentId,
    }));
    if (result !== "success") throw new AuthNexusError("INVALID_CREDENTIALS", { message: "Current password is incorrect." });
  }
  assertPasswordPolicy(change.newPassword, agent.username);
  const hash = await hashAgentPassword(change.newPassword);
  const now = ctx.clock.now();
  await ctx.controlDb.transaction().execute(async (tx) => {
    await tx
      .updateTable("agents")
      .set({ password_hash: hash, password_changed_at: now, updated_at: now })
      .where("id", "=", change.agentId)
      .execute();
    await revokeAgentSessions(tx, change.agentId, now, "password_changed", change.keepSessionId);
  });
}

export async function revokeAgentSessions(
  db: Kysely<ControlSchema>,
  agentId: string,
  now: number,
  reason: string,
  exceptSessionId?: string,
): Promise<void> {
  let query = db
    .updateTable("agent_sessions")
    .set({ revoked_at: now, revoke_reason: reason })
    .where("agent_id", "=", agentId)
    .where("revoked_at", "is", null);
  if (exceptSessionId) query = query.where("id", "!=", exceptSessionId);
  await query.execute();
}
