import type { SelectQueryBuilder } from "kysely";
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from "../../shared/config/defaults.js";
import { AuthNexusError } from "../../shared/errors/index.js";

export interface PageRequest {
  page: number;
  pageSize: number;
}

export interface Page<T> {
  items: T[];
  page: number;
  page_size: number;
  total: number;
}

function positiveInt(raw: string | undefined, name: string, fallback: number, max: number): number {
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d{1,9}$/.test(raw) || Number(raw) < 1 || Number(raw) > max) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: `${name} must be an integer from 1 to ${max}.` });
  }
  return Number(raw);
}

/** Reads `page` (1-based) and `page_size` (capped) from query parameters. */
export function parsePageRequest(query: Record<string, string | undefined>): PageRequest {
  return {
    page: positiveInt(query.page, "page", 1, 1_000_000),
    pageSize: positiveInt(query.page_size, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
  };
}

export function pageOffset(request: PageRequest): number {
  return (request.page - 1) * request.pageSize;
}

export function toPage<T>(items: T[], request: PageRequest, total: number): Page<T> {
  return { items, page: request.page, page_size: request.pageSize, total };
}

export interface TimeRange {
  from: number | undefined;
  to: number | undefined;
}

/** Reads `from`/`to` as epoch milliseconds or ISO-8601 timestamps. */
export function parseTimeRange(query: Record<string, string | undefined>): TimeRange {
  const read = (name: "from" | "to"): number | undefined => {
    const raw = query[name];
    if (raw === undefined || raw === "") return undefined;
    const ms = /^\d{1,15}$/.test(raw) ? Number(raw) : Date.parse(raw);
    if (!Number.isFinite(ms)) {
      throw new AuthNexusError("VALIDATION_FAILED", { message: `${name} must be epoch milliseconds or an ISO-8601 time.` });
    }
    return ms;
  };
  const range = { from: read("from"), to: read("to") };
  if (range.from !== undefined && range.to !== undefined && range.from > range.to) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: "from must not be after to." });
  }
  return range;
}

/**
 * One page of `base` (a query with its filters, no columns yet) and the total over the same
 * filters, in one round trip each, run concurrently. `select` adds the columns and the order
 * (always with a unique tiebreaker, or pages could overlap); `toItem` shapes each row.
 */
export async function paginate<DB, TB extends keyof DB, Row, Item = Row>(
  base: SelectQueryBuilder<DB, TB, object>,
  request: PageRequest,
  select: (query: SelectQueryBuilder<DB, TB, object>) => SelectQueryBuilder<DB, TB, Row>,
  toItem: (row: Row) => Item = (row) => row as unknown as Item,
): Promise<Page<Item>> {
  const [rows, count] = await Promise.all([
    select(base).limit(request.pageSize).offset(pageOffset(request)).execute(),
    base.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow(),
  ]);
  return toPage(rows.map(toItem), request, Number((count as { n: number | string }).n));
}
