/**
 * Calendar days in an IANA time zone, computed with Intl (no time zone database of our own):
 * where each local day starts and ends as an instant. A day is 24 hours long except on the days
 * a zone changes its offset (23 or 25 hours for a one-hour DST change), and a day whose local
 * midnight does not exist starts at the transition. Pure: no clock, no I/O.
 */

/** One civil day, in milliseconds. */
export const DAY_MS = 86_400_000;
/** Offsets never exceed ±14 h, so a local midnight lies within this distance of UTC midnight. */
const MAX_OFFSET_MS = 14 * 3_600_000;

export interface LocalDay {
  /** YYYY-MM-DD in the zone. */
  date: string;
  /** The day's first instant, epoch ms (inclusive). */
  start: number;
  /** The next day's first instant, epoch ms (exclusive). */
  end: number;
}

const ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$/;
const formatters = new Map<string, Intl.DateTimeFormat>();

/**
 * The zone's canonical IANA name, or null when `name` is not one this runtime knows. Only
 * names: numeric offsets ("+01:00") are refused, since a report needs the zone's DST rules.
 */
export function canonicalTimeZone(name: string): string | null {
  if (!ZONE_NAME.test(name)) return null;
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: name }).resolvedOptions().timeZone;
  } catch {
    return null;
  }
}

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The zone's offset from UTC at instant `t`, ms (local wall clock = t + offset). */
export function offsetAt(timeZone: string, t: number): number {
  const parts: Record<string, number> = {};
  for (const p of formatter(timeZone).formatToParts(t)) if (p.type !== "literal") parts[p.type] = Number(p.value);
  const wall = Date.UTC(parts.year ?? 1970, (parts.month ?? 1) - 1, parts.day ?? 1, parts.hour ?? 0, parts.minute ?? 0, parts.second ?? 0);
  return wall - (t - (((t % 1000) + 1000) % 1000));
}

/** Days since 1970-01-01 of the local date at instant `t`. */
export function localDayNumber(timeZone: string, t: number): number {
  return Math.floor((t + offsetAt(timeZone, t)) / DAY_MS);
}

/** YYYY-MM-DD of a day number. */
export function dateOfDayNumber(dayNumber: number): string {
  return new Date(dayNumber * DAY_MS).toISOString().slice(0, 10);
}

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** Day number of a YYYY-MM-DD date (years 1970-9999), or null when it is not a real date. */
export function dayNumberOfDate(text: string): number | null {
  const m = DATE.exec(text);
  if (!m) return null;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (year < 1970) return null;
  const ms = Date.UTC(year, month - 1, day);
  if (dateOfDayNumber(ms / DAY_MS) !== text) return null;
  return ms / DAY_MS;
}

/**
 * The first instant of local day `dayNumber`: local midnight, or, where the zone skips
 * midnight, the transition that ends the previous day. Each offset in effect around the UTC
 * midnight of that date gives one candidate; the earliest that falls on the day is its start.
 */
export function dayStart(timeZone: string, dayNumber: number): number {
  const midnight = dayNumber * DAY_MS;
  const offsets = new Set([
    offsetAt(timeZone, midnight - MAX_OFFSET_MS),
    offsetAt(timeZone, midnight),
    offsetAt(timeZone, midnight + MAX_OFFSET_MS),
  ]);
  let best: number | null = null;
  for (const offset of offsets) {
    const t = midnight - offset;
    if (localDayNumber(timeZone, t) === dayNumber && localDayNumber(timeZone, t - 1) < dayNumber && (best === null || t < best)) best = t;
  }
  if (best !== null) return best;
  // More than one transition near midnight (never seen in practice): search for the first instant of the day.
  let lo = midnight - MAX_OFFSET_MS - DAY_MS;
  let hi = midnight + MAX_OFFSET_MS;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (localDayNumber(timeZone, mid) >= dayNumber) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** Every local day from `fromDay` through `toDay` (inclusive), each with its start and end. */
export function localDays(timeZone: string, fromDay: number, toDay: number): LocalDay[] {
  const starts: number[] = [];
  for (let n = fromDay; n <= toDay + 1; n++) starts.push(dayStart(timeZone, n));
  const days: LocalDay[] = [];
  for (let i = 0; i + fromDay <= toDay; i++)
    days.push({ date: dateOfDayNumber(fromDay + i), start: starts[i] as number, end: starts[i + 1] as number });
  return days;
}
