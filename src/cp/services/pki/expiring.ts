/**
 * Certificates close to expiry: what an operator's daily check looks at before renewing. Only
 * certificates that still work count (not revoked, not yet expired); soonest first.
 */
import { AuthNexusError } from "../../../shared/errors/index.js";
import type { CpContext } from "../context.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";

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
  return paginate(
    base,
    request,
    (q) =>
      q
        .select(["id", "serial_hex", "leaf_profile", "ca_profile", "subject", "owner_type", "owner_id", "not_after"])
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
    }),
  );
}
