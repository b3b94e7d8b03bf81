/**
 * Certificates close to expiry: what an operator's daily check looks at before renewing. Only
 * certificates that still work count (not revoked, not yet expired); soonest first.
 */
import { AuthNexusError } from "../../../shared/errors/index.js";
import type { CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { renewalDueAt } from "./renewal.js";

/** The window `GET /pki/expiring` looks ahead when no `days` is given. */
export const DEFAULT_EXPIRING_DAYS = 30;
/** Ten years: longer than any certificate the CP issues, so every active one fits in the widest window. */
export const MAX_EXPIRING_DAYS = 3650;
const DAY_MS = 86_400_000;

export interface ExpiringCertificate {
  id: string;
  serial: string;
  profile: string;
  ca_profile: string;
  subject: string;
  owner_type: string | null;
  owner_id: string | null;
  not_after: number;
  /** Whole days left (rounded down): 0 means it expires within the next 24 hours. */
  days_left: number;
  /**
   * When automatic renewal rotates it (renewal.ts; in the past while that rotation is under way):
   * set for a node's current server and client certificates, null for any other certificate or
   * when renewal is off.
   */
  renew_at: number | null;
}

/** Reads `days` (1 … MAX_EXPIRING_DAYS, default DEFAULT_EXPIRING_DAYS). */
export function parseExpiringDays(raw: string | undefined): number {
  if (raw === undefined || raw === "") return DEFAULT_EXPIRING_DAYS;
  if (!/^\d{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_EXPIRING_DAYS) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: `days must be an integer from 1 to ${MAX_EXPIRING_DAYS}.` });
  }
  return Number(raw);
}

export async function listExpiringCertificates(ctx: CpContext, days: number, request: PageRequest): Promise<Page<ExpiringCertificate>> {
  const now = ctx.clock.now();
  const base = ctx.controlDb
    .selectFrom("certificates")
    .where("status", "=", "valid")
    .where("not_after", ">", now)
    .where("not_after", "<=", now + days * DAY_MS);
  const page = await paginate(
    base,
    request,
    (q) =>
      q
        .select(["id", "serial_hex", "leaf_profile", "ca_profile", "subject", "owner_type", "owner_id", "not_before", "not_after"])
        .orderBy("not_after")
        .orderBy("id"),
    (r) => ({
      id: r.id,
      serial: r.serial_hex,
      profile: r.leaf_profile,
      ca_profile: r.ca_profile,
      subject: r.subject,
      owner_type: r.owner_type,
      owner_id: r.owner_id,
      not_after: r.not_after,
      days_left: Math.floor((r.not_after - now) / DAY_MS),
      not_before: r.not_before,
    }),
  );
  const current = await currentNodeCertificateIds(ctx, page.items);
  return {
    ...page,
    items: page.items.map(({ not_before, ...item }) => ({
      ...item,
      renew_at: current.has(item.id) ? renewalDueAt({ not_before, not_after: item.not_after, serial_hex: item.serial }, ctx.pki) : null,
    })),
  };
}

/** Which of the listed certificates are a node's current server or client certificate (what renewal rotates). */
async function currentNodeCertificateIds(ctx: CpContext, items: Array<{ id: string; owner_type: string | null }>): Promise<Set<string>> {
  const ids = items.filter((item) => item.owner_type === "node").map((item) => item.id);
  if (ctx.pki.renewCheckIntervalMs <= 0 || ids.length === 0) return new Set();
  const nodes = await ctx.controlDb
    .selectFrom("nodes")
    .select(["server_cert_id", "client_cert_id"])
    .where((eb) => eb.or([eb("server_cert_id", "in", ids), eb("client_cert_id", "in", ids)]))
    .execute();
  return new Set(nodes.flatMap((n) => [n.server_cert_id, n.client_cert_id]).filter((id): id is string => id !== null && ids.includes(id)));
}
