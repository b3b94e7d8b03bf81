/**
 * Card keys (licence keys) of one application, admin side: generate a batch, list, export a
 * batch as CSV, disable, delete. A code is shown once, in the answer that generated it; the
 * Runtime DB keeps only the SHA-256 of its canonical form and its last characters (the hint).
 * Disabling or deleting a card ends its live sessions: they are revoked in the Runtime DB and,
 * for a card that was ever activated, a force_logout is pushed to every node.
 */
import { CARD_KEY_GROUPS, canonicalCode, codeHash, codeHint, generateCode } from "../../../shared/credentials/index.js";
import { findCardById, insertCards, revokeCardSessions } from "../../../shared/db/runtime/index.js";
import type { CardKeysTable } from "../../../shared/db/runtime-schema.js";
import { AuthNexusError, fieldInvalid } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import type { Actor, CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { auditBusinessEvent, pushForceLogout, type RuntimeDb, requireAppForRead, requireAppForWrite } from "./common.js";

/** Cards one generate call may create (a batch). */
export const MAX_CARDS_PER_BATCH = 1000;
/** Shortest validity of a card once activated (seconds): one minute. */
export const MIN_CARD_DURATION_SECONDS = 60;
/** Longest validity of a card once activated (seconds): ten 365-day years. */
export const MAX_CARD_DURATION_SECONDS = 10 * 365 * 86_400;
/** Longest batch note (characters). */
export const MAX_CARD_NOTE_LENGTH = 200;

/** What the API shows of a card; "expired" is derived (an active card whose expires_at has passed). */
export const CARD_VIEW_STATUSES = ["unused", "active", "expired", "disabled"] as const;
export type CardViewStatus = (typeof CARD_VIEW_STATUSES)[number];

const REASON = { disabled: "card key disabled", deleted: "card key deleted" } as const;

/** A card as the API shows it: never its code, nor the code's hash. */
export interface CardView {
  id: string;
  batch_id: string | null;
  hint: string;
  status: CardViewStatus;
  duration_seconds: number;
  note: string | null;
  created_at: number;
  created_by: string | null;
  activated_at: number | null;
  expires_at: number | null;
  user_id: string | null;
  bound_device_id: string | null;
}

const CARD_COLUMNS = [
  "id",
  "batch_id",
  "code_hint",
  "status",
  "duration_seconds",
  "note",
  "created_at",
  "created_by",
  "activated_at",
  "expires_at",
  "user_id",
  "bound_device_id",
] as const;

type CardRow = Pick<CardKeysTable, (typeof CARD_COLUMNS)[number]>;

function viewStatus(row: Pick<CardKeysTable, "status" | "expires_at">, now: number): CardViewStatus {
  if (row.status === "active" && row.expires_at !== null && row.expires_at <= now) return "expired";
  return (CARD_VIEW_STATUSES as readonly string[]).includes(row.status) ? (row.status as CardViewStatus) : "disabled";
}

function toCardView(row: CardRow, now: number): CardView {
  return {
    id: row.id,
    batch_id: row.batch_id,
    hint: row.code_hint,
    status: viewStatus(row, now),
    duration_seconds: Number(row.duration_seconds),
    note: row.note,
    created_at: row.created_at,
    created_by: row.created_by,
    activated_at: row.activated_at,
    expires_at: row.expires_at,
    user_id: row.user_id,
    bound_device_id: row.bound_device_id,
  };
}

async function requireCard(db: RuntimeDb, appId: string, cardId: string): Promise<CardKeysTable> {
  const card = await findCardById(db, cardId);
  if (!card || card.app_id !== appId) throw new AuthNexusError("NOT_FOUND", { message: "Card key not found." });
  return card;
}

// ---- generate ------------------------------------------------------------------------------

export interface NewCardBatch {
  count: number;
  durationSeconds: number;
  note?: string | null | undefined;
}

export interface GeneratedCardBatch {
  batch_id: string;
  created_at: number;
  duration_seconds: number;
  note: string | null;
  /** The only place the codes ever appear. */
  cards: Array<{ id: string; code: string; hint: string }>;
}

export async function generateCards(ctx: CpContext, actor: Actor, appId: string, input: NewCardBatch): Promise<GeneratedCardBatch> {
  if (!Number.isInteger(input.count) || input.count < 1 || input.count > MAX_CARDS_PER_BATCH)
    throw fieldInvalid("count", `must be an integer from 1 to ${MAX_CARDS_PER_BATCH}`);
  if (
    !Number.isInteger(input.durationSeconds) ||
    input.durationSeconds < MIN_CARD_DURATION_SECONDS ||
    input.durationSeconds > MAX_CARD_DURATION_SECONDS
  )
    throw fieldInvalid("duration_seconds", `must be an integer from ${MIN_CARD_DURATION_SECONDS} to ${MAX_CARD_DURATION_SECONDS}`);
  await requireAppForWrite(ctx, appId);
  const now = ctx.clock.now();
  const batchId = newId("cbt");
  const note = input.note ? input.note : null;
  const cards: GeneratedCardBatch["cards"] = [];
  const rows: CardKeysTable[] = [];
  for (let i = 0; i < input.count; i++) {
    const code = generateCode(CARD_KEY_GROUPS);
    const canonical = canonicalCode(code, CARD_KEY_GROUPS);
    if (canonical === null) throw new Error("generateCode produced a code canonicalCode refuses");
    const id = newId("crd");
    const hint = codeHint(canonical);
    cards.push({ id, code, hint });
    rows.push({
      id,
      app_id: appId,
      code_hash: codeHash(canonical),
      code_hint: hint,
      duration_seconds: input.durationSeconds,
      status: "unused",
      batch_id: batchId,
      note,
      created_at: now,
      created_by: actor.agentId,
      activated_at: null,
      expires_at: null,
      user_id: null,
      bound_device_id: null,
    });
  }
  await ctx.runtimeDb.transaction().execute(async (trx) => {
    await insertCards(trx, rows);
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      event: "card_keys.generated",
      detail: { batch_id: batchId, count: rows.length, duration_seconds: input.durationSeconds },
    });
  });
  return { batch_id: batchId, created_at: now, duration_seconds: input.durationSeconds, note, cards };
}

// ---- reads ---------------------------------------------------------------------------------

export interface CardFilter {
  status?: CardViewStatus | undefined;
  batchId?: string | undefined;
}

/** Newest first. */
export async function listCards(ctx: CpContext, appId: string, filter: CardFilter, request: PageRequest): Promise<Page<CardView>> {
  await requireAppForRead(ctx, appId);
  const now = ctx.clock.now();
  const base = ctx.runtimeDb
    .selectFrom("card_keys")
    .where("app_id", "=", appId)
    .$if(filter.batchId !== undefined, (q) => q.where("batch_id", "=", filter.batchId as string))
    .$call((q) => {
      switch (filter.status) {
        case undefined:
          return q;
        case "active":
          return q.where("status", "=", "active").where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]));
        case "expired":
          return q.where("status", "=", "active").where("expires_at", "<=", now);
        default:
          return q.where("status", "=", filter.status);
      }
    });
  return paginate(
    base,
    request,
    (q) => q.select(CARD_COLUMNS).orderBy("created_at", "desc").orderBy("id", "desc"),
    (row) => toCardView(row, now),
  );
}

const CSV_COLUMNS = ["id", "hint", "status", "created_at", "activated_at", "expires_at", "bound_device_id", "note"] as const;

/**
 * One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A value a
 * spreadsheet would run as a formula (=, +, -, @, tab, CR first) is prefixed with an apostrophe:
 * bound device ids come from clients.
 */
function csvField(value: string | number | null): string {
  if (value === null) return "";
  let text = String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function isoTime(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** Every card of one batch, oldest first, as CSV with a header row (CRLF line ends); 404 for a batch this application has not got. */
export async function exportCardBatch(ctx: CpContext, appId: string, batchId: string): Promise<string> {
  await requireAppForRead(ctx, appId);
  const now = ctx.clock.now();
  const rows = await ctx.runtimeDb
    .selectFrom("card_keys")
    .select(CARD_COLUMNS)
    .where("app_id", "=", appId)
    .where("batch_id", "=", batchId)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
  if (rows.length === 0) throw new AuthNexusError("NOT_FOUND", { message: "Card key batch not found." });
  const lines = [CSV_COLUMNS.join(",")];
  for (const row of rows) {
    const card = toCardView(row, now);
    lines.push(
      [
        card.id,
        card.hint,
        card.status,
        isoTime(card.created_at),
        isoTime(card.activated_at),
        isoTime(card.expires_at),
        card.bound_device_id,
        card.note,
      ]
        .map(csvField)
        .join(","),
    );
  }
  return `${lines.join("\r\n")}\r\n`;
}

// ---- disable, delete -----------------------------------------------------------------------

export interface DisabledCard extends CardView {
  revoked_sessions: number;
  /** The force_logout broadcast, or null for a card never activated (it can have no session). */
  command_id: string | null;
}

/** unused/active → disabled (409 CONFLICT when already disabled); its sessions end. */
export async function disableCard(ctx: CpContext, actor: Actor, appId: string, cardId: string): Promise<DisabledCard> {
  await requireAppForWrite(ctx, appId);
  const card = await requireCard(ctx.runtimeDb, appId, cardId);
  if (card.status === "disabled") throw new AuthNexusError("CONFLICT", { message: "The card key is already disabled." });
  const revoked = await ctx.runtimeDb.transaction().execute(async (trx) => {
    const updated = await trx
      .updateTable("card_keys")
      .set({ status: "disabled" })
      .where("id", "=", cardId)
      .where("status", "!=", "disabled")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) throw new AuthNexusError("CONFLICT", { message: "The card key is already disabled." });
    const n = await revokeCardSessions(trx, cardId, REASON.disabled, ctx.clock.now());
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId: card.user_id,
      event: "card_key.disabled",
      detail: { card_key_id: cardId, batch_id: card.batch_id, previous_status: card.status, revoked_sessions: n },
    });
    return n;
  });
  const commandId = await endCardConnections(ctx, actor, card, revoked, REASON.disabled);
  const row = await requireCard(ctx.runtimeDb, appId, cardId);
  return { ...toCardView(row, ctx.clock.now()), revoked_sessions: revoked, command_id: commandId };
}

export interface DeletedCard {
  card_id: string;
  revoked_sessions: number;
  command_id: string | null;
}

/** Revokes the card's sessions and deletes it (with the audit row, in one transaction); then the push. */
export async function deleteCard(ctx: CpContext, actor: Actor, appId: string, cardId: string): Promise<DeletedCard> {
  await requireAppForWrite(ctx, appId);
  const card = await requireCard(ctx.runtimeDb, appId, cardId);
  const revoked = await ctx.runtimeDb.transaction().execute(async (trx) => {
    const n = await revokeCardSessions(trx, cardId, REASON.deleted, ctx.clock.now());
    const deleted = await trx.deleteFrom("card_keys").where("id", "=", cardId).where("app_id", "=", appId).executeTakeFirst();
    if (Number(deleted.numDeletedRows) === 0) throw new AuthNexusError("NOT_FOUND", { message: "Card key not found." });
    await auditBusinessEvent(trx, ctx, actor, {
      appId,
      userId: card.user_id,
      event: "card_key.deleted",
      detail: { card_key_id: cardId, batch_id: card.batch_id, previous_status: card.status, revoked_sessions: n },
    });
    return n;
  });
  const commandId = await endCardConnections(ctx, actor, card, revoked, REASON.deleted);
  return { card_id: cardId, revoked_sessions: revoked, command_id: commandId };
}

/** A card that was ever activated may have a live connection somewhere: every node is told to end it. */
async function endCardConnections(
  ctx: CpContext,
  actor: Actor,
  card: CardKeysTable,
  revoked: number,
  reason: string,
): Promise<string | null> {
  if (card.activated_at === null && revoked === 0) return null;
  return pushForceLogout(ctx, actor, { app_id: card.app_id, card_key_id: card.id, reason });
}
