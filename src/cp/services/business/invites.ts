/**
 * Invite codes of one application, admin side: generate, list, delete. A registration consumes
 * one use (node side, shared/db/runtime/invites.ts). Codes are shown once, in the answer that
 * generated them; the Runtime DB keeps only the SHA-256 of their canonical form.
 */
import { canonicalCode, codeHash, generateCode, INVITE_CODE_GROUPS } from "../../../shared/credentials/index.js";
import type { InviteCodesTable } from "../../../shared/db/runtime-schema.js";
import { AuthNexusError, fieldInvalid } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { auditBusinessEvent, parseFutureTime, requireAppForRead, requireAppForWrite } from "./common.js";

/** Invite codes one generate call may create. */
export const MAX_INVITES_PER_CALL = 1000;
/** Most registrations one invite code may admit. */
export const MAX_INVITE_USES = 100_000;
/** Latest expiry an invite code may be given, counted from now (ms): ten 365-day years. */
export const MAX_INVITE_LIFETIME_MS = 10 * 365 * 86_400_000;
/** Rows per insert statement (keeps PostgreSQL's bind-parameter count small). */
const INSERT_CHUNK = 200;

export type InviteState = "active" | "used_up" | "expired";

/** An invite code as the API shows it: never the code nor its hash. */
export interface InviteView {
  id: string;
  max_uses: number;
  used_count: number;
  expires_at: number | null;
  created_at: number;
  created_by: string | null;
  /** "used_up" when every use is taken, "expired" past expires_at, else "active". */
  state: InviteState;
}

const INVITE_COLUMNS = ["id", "max_uses", "used_count", "expires_at", "created_at", "created_by"] as const;

function toInviteView(row: Pick<InviteCodesTable, (typeof INVITE_COLUMNS)[number]>, now: number): InviteView {
  const maxUses = Number(row.max_uses);
  const used = Number(row.used_count);
  const state: InviteState = used >= maxUses ? "used_up" : row.expires_at !== null && row.expires_at <= now ? "expired" : "active";
  return {
    id: row.id,
    max_uses: maxUses,
    used_count: used,
    expires_at: row.expires_at,
    created_at: row.created_at,
    created_by: row.created_by,
    state,
  };
}

export interface NewInvites {
  count: number;
  maxUses: number;
  /** Epoch ms or ISO-8601 with a zone, in the future; absent or null = never expires. */
  expiresAt?: number | string | null | undefined;
}

export interface GeneratedInvites {
  created_at: number;
  max_uses: number;
  expires_at: number | null;
  /** The only place the codes ever appear. */
  codes: Array<{ id: string; code: string }>;
}

export async function generateInvites(ctx: CpContext, actor: Actor, appId: string, input: NewInvites): Promise<GeneratedInvites> {
  if (!Number.isInteger(input.count) || input.count < 1 || input.count > MAX_INVITES_PER_CALL)
    throw fieldInvalid("count", `must be an integer from 1 to ${MAX_INVITES_PER_CALL}`);
  if (!Number.isInteger(input.maxUses) || input.maxUses < 1 || input.maxUses > MAX_INVITE_USES)
    throw fieldInvalid("max_uses", `must be an integer from 1 to ${MAX_INVITE_USES}`);
  const now = ctx.clock.now();
  const expiresAt =
    input.expiresAt === undefined || input.expiresAt === null
      ? null
      : parseFutureTime("expires_at", input.expiresAt, now, MAX_INVITE_LIFETIME_MS, "10 years");
  await requireAppForWrite(ctx, appId);
  const codes: GeneratedInvites["codes"] = [];
  const rows: InviteCodesTable[] = [];
  for (let i = 0; i < input.count; i++) {
    const code = generateCode(INVITE_CODE_GROUPS);
    const canonical = canonicalCode(code, INVITE_CODE_GROUPS);
    if (canonical === null) throw new Error("generateCode produced a code canonicalCode refuses");
    const id = newId("inv");
    codes.push({ id, code });
    rows.push({
      id,
      app_id: appId,
      code_hash: codeHash(canonical),
      max_uses: input.maxUses,
      used_count: 0,
      expires_at: expiresAt,
      created_at: now,
      created_by: actor.agentId,
    });
  }
  await ctx.runtimeDb.transaction().execute(async (trx) => {
    for (let i = 0; i < rows.length; i += INSERT_CHUNK)
      await trx
        .insertInto("invite_codes")
        .values(rows.slice(i, i + INSERT_CHUNK))
        .execute();
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      event: "invite_codes.generated",
      detail: { count: rows.length, max_uses: input.maxUses, expires_at: expiresAt, first_id: rows[0]?.id ?? null },
    });
  });
  return { created_at: now, max_uses: input.maxUses, expires_at: expiresAt, codes };
}

/** Newest first. */
export async function listInvites(ctx: CpContext, appId: string, request: PageRequest): Promise<Page<InviteView>> {
  await requireAppForRead(ctx, appId);
  const now = ctx.clock.now();
  const base = ctx.runtimeDb.selectFrom("invite_codes").where("app_id", "=", appId);
  return paginate(
    base,
    request,
    (q) => q.select(INVITE_COLUMNS).orderBy("created_at", "desc").orderBy("id", "desc"),
    (row) => toInviteView(row, now),
  );
}

/** Deletes the code (later registrations with it fail); users it admitted keep their invite_code_id. */
export async function deleteInvite(ctx: CpContext, actor: Actor, appId: string, inviteId: string): Promise<{ invite_id: string }> {
  await requireAppForWrite(ctx, appId);
  await ctx.runtimeDb.transaction().execute(async (trx) => {
    const row = await trx
      .selectFrom("invite_codes")
      .select(INVITE_COLUMNS)
      .where("id", "=", inviteId)
      .where("app_id", "=", appId)
      .executeTakeFirst();
    if (!row) throw new AuthNexusError("NOT_FOUND", { message: "Invite code not found." });
    await trx.deleteFrom("invite_codes").where("id", "=", inviteId).where("app_id", "=", appId).execute();
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      event: "invite_code.deleted",
      detail: { invite_id: inviteId, used_count: Number(row.used_count), max_uses: Number(row.max_uses) },
    });
  });
  return { invite_id: inviteId };
}
