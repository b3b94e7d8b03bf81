/**
 * What every business administration service shares: the application checks (reads need it to
 * exist, writes need it live), the Runtime DB user audit writer, the force_logout push to every
 * node, LIKE patterns and future-time parsing.
 */
import type { Kysely } from "kysely";
import type { RuntimeSchema } from "../../../shared/db/index.js";
import { writeUserAudit } from "../../../shared/db/runtime/index.js";
import { fieldInvalid } from "../../../shared/errors/index.js";
import { requireApplication, requireLiveApplication } from "../applications/lookup.js";
import { queueCommand } from "../commands/admin.js";
import type { Actor, CpContext } from "../context.js";

export type RuntimeDb = Kysely<RuntimeSchema>;

/** Reads: the application must exist (404); one in the recycle bin may still be looked at. */
export async function requireAppForRead(ctx: CpContext, appId: string): Promise<void> {
  await requireApplication(ctx.controlDb, appId);
}

/** Changes: the application must exist (404) and not be in the recycle bin (409 APPLICATION_DELETED). */
export async function requireAppForWrite(ctx: CpContext, appId: string): Promise<void> {
  await requireLiveApplication(ctx.controlDb, appId);
}

export interface BusinessAuditEntry {
  appId: string;
  userId?: string | null | undefined;
  /** `user.created`, `card_keys.generated`, … */
  event: string;
  /** Ids, counts and reasons only: never a password, a code or a token. */
  detail: Record<string, unknown>;
}

/** One row of the Runtime DB's user audit log, written with the change it records (pass the transaction). */
export async function auditBusinessEvent(db: RuntimeDb, ctx: CpContext, actor: Actor, entry: BusinessAuditEntry): Promise<void> {
  await writeUserAudit(db, {
    created_at: ctx.clock.now(),
    app_id: entry.appId,
    user_id: entry.userId ?? null,
    event: entry.event,
    actor: actor.agentId ?? "system",
    detail: JSON.stringify(entry.detail),
  });
}

export interface ForceLogoutTarget {
  app_id: string;
  user_id?: string;
  session_id?: string;
  card_key_id?: string;
  device_id?: string;
  reason: string;
}

/** Broadcasts a force_logout to every node (each ends the matching live connections); the command's id. */
export async function pushForceLogout(ctx: CpContext, actor: Actor, target: ForceLogoutTarget): Promise<string> {
  const command = await queueCommand(ctx, actor, null, { kind: "force_logout", payload: target });
  return command.id;
}

/** `%text%` for `like … escape '!'`: the wildcards and the escape character in `text` match only themselves. */
export function containsPattern(text: string): string {
  return `%${text.replace(/[!%_]/g, (c) => `!${c}`)}%`;
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/;

/** Epoch ms or an ISO-8601 time with a zone, strictly after `now` and at most `maxAheadMs` after it. */
export function parseFutureTime(field: string, raw: number | string, now: number, maxAheadMs: number, maxLabel: string): number {
  let ms: number;
  if (typeof raw === "number") ms = raw;
  else if (ISO_TIME.test(raw)) ms = Date.parse(raw);
  else throw fieldInvalid(field, "must be epoch milliseconds or an ISO-8601 time with a zone (2026-07-01T00:00:00Z)");
  if (!Number.isSafeInteger(ms)) throw fieldInvalid(field, "is not a valid time");
  if (ms <= now) throw fieldInvalid(field, "must be in the future");
  if (ms > now + maxAheadMs) throw fieldInvalid(field, `must be within ${maxLabel}`);
  return ms;
}

/** C0 controls and DEL: never part of a name, an email or an id (PostgreSQL refuses NUL in text). */
export function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}

/** A session that may still be used: not revoked and not past its expiry. */
export function isLiveSession(session: { revoked_at: number | null; expires_at: number }, now: number): boolean {
  return session.revoked_at === null && session.expires_at > now;
}
