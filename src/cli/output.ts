/**
 * How CLI commands print results: an aligned table (with a header row when a person is reading
 * a terminal; without it when piped, so `awk '{print $1}'` sees data only), or the admin API's
 * JSON as is for scripts.
 */

export interface Column<T> {
  header: string;
  value: (row: T) => string;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

export function printTable<T>(columns: Column<T>[], rows: T[], header = process.stdout.isTTY === true): void {
  const cells = rows.map((row) => columns.map((c) => oneLine(c.value(row))));
  if (header) cells.unshift(columns.map((c) => c.header));
  const widths = columns.map((_, i) => Math.max(...cells.map((line) => (line[i] ?? "").length)));
  for (const line of cells) {
    const padded = line.map((cell, i) => (i === line.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)));
    process.stdout.write(`${padded.join("  ").trimEnd()}\n`);
  }
}

/** `name: value` lines for one record. */
export function printFields(fields: Array<[string, string]>): void {
  const width = Math.max(...fields.map(([name]) => name.length));
  for (const [name, value] of fields) process.stdout.write(`${`${name}:`.padEnd(width + 1)} ${oneLine(value)}\n`);
}

export function printPageFooter(page: { page: number; items: unknown[]; total: number }): void {
  process.stdout.write(`page ${page.page}, ${page.items.length} of ${page.total}\n`);
}

/** Epoch ms as a UTC date. */
export const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** Epoch ms as a UTC time to the second. */
export const time = (ms: number | null) => (ms === null ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z"));

/** A missing value shown as "-" so columns stay aligned and countable. */
export const orDash = (value: string | number | null | undefined) =>
  value === null || value === undefined || value === "" ? "-" : String(value);

/** Anything a server or client wrote may hold line breaks; a table row must stay one line. */
function oneLine(text: string): string {
  return text.replace(/[\r\n\t]+/g, " ");
}
