import fs from "node:fs";
/** What the `ops` command groups share: admin-session commands with --json, pages, progress lines. */
import type { Command } from "commander";
import { type AdminSessionFlags, addAdminSessionFlags } from "./admin-session.js";

export interface JsonFlag {
  json?: boolean;
}

export interface Page<T> {
  items: T[];
  page: number;
  page_size: number;
  total: number;
}

export interface PageFlags extends AdminSessionFlags, JsonFlag {
  page: string;
  pageSize: string;
}

/** A subcommand that talks to the admin API: the session flags and --json. */
export function apiCommand(parent: Command, name: string, description: string): Command {
  return addAdminSessionFlags(parent.command(name).description(description)).option("--json", "print the admin API's JSON answer");
}

export function withPageOptions(command: Command): Command {
  return command.option("--page <n>", "page number, from 1", "1").option("--page-size <n>", "rows per page (1 to 200)", "50");
}

/** page/page_size plus the filters that are set, as a query string. */
export function pageQuery(flags: { page: string; pageSize: string }, filters: Record<string, string | undefined> = {}): string {
  const query = new URLSearchParams({ page: flags.page, page_size: flags.pageSize });
  for (const [name, value] of Object.entries(filters)) if (value !== undefined && value !== "") query.set(name, value);
  return query.toString();
}

/** A path segment from an operator's argument. */
export const seg = (value: string) => encodeURIComponent(value);

/**
 * A progress line on stderr, rewritten in place, only when stderr is a terminal (a script's
 * stderr stays quiet); done() clears it.
 */
export function progressLine(): { update(text: string): void; done(): void } {
  const tty = process.stderr.isTTY === true;
  let shown = false;
  return {
    update(text) {
      if (!tty) return;
      process.stderr.write(`\r\x1b[2K${text}`);
      shown = true;
    },
    done() {
      if (tty && shown) process.stderr.write("\r\x1b[2K");
      shown = false;
    },
  };
}

/** A positive integer flag, or an error naming the flag. */
export function positiveInt(flag: string, raw: string, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < 1 || n > max)
    throw new Error(`${flag} must be an integer from 1 to ${max}, got "${raw}"`);
  return n;
}

/** Creates `file` (mode 0600) for a secret shown once; refuses an existing file. */
export function openNewSecretFile(file: string): number {
  try {
    return fs.openSync(file, "wx", 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Error(
      code === "EEXIST"
        ? `${file} exists: choose a new file (a secret shown once is never overwritten)`
        : `cannot create ${file}: ${code ?? (error as Error).message}`,
    );
  }
}

/** Removes a secret file created for an answer that never came. */
export function discardSecretFile(fd: number, file: string): void {
  fs.closeSync(fd);
  fs.rmSync(file, { force: true });
}
