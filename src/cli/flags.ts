/**
 * Declares flags on commander commands and reads them back keyed by their kebab-case names, so
 * the resolvers in src/cp and src/node stay free of commander.
 */
import type { Command } from "commander";
import { DB_FLAGS } from "../shared/config/db-options.js";
import { envNameForFlag } from "../shared/config/options.js";

export interface FlagSpec {
  name: string;
  /** The value's placeholder in --help; null for a switch (present or not). */
  value: string | null;
  description: string;
}

const DB_FLAG_HELP: Record<(typeof DB_FLAGS)[number], [string, string]> = {
  "db-type": ["type", "sqlite (default) or postgres"],
  "db-path": ["file", "SQLite file (relative to --data-dir)"],
  "db-host": ["host", "PostgreSQL host (default 127.0.0.1)"],
  "db-port": ["port", "PostgreSQL port (default 5432)"],
  "db-user": ["user", "PostgreSQL user"],
  "db-pass": ["password", "PostgreSQL password (prefer the environment variable)"],
  "db-name": ["name", "PostgreSQL database name"],
  "sqlite-busy-timeout": ["ms", "SQLite busy timeout (default 5000)"],
  "db-connect-timeout": ["s", "PostgreSQL connect timeout (default 5)"],
  "db-statement-timeout": ["ms", "PostgreSQL statement timeout (default 15000)"],
  "db-lock-timeout": ["ms", "PostgreSQL lock timeout (default 5000)"],
};

export function dbFlagSpecs(prefix: "" | "runtime-", what: string): FlagSpec[] {
  return DB_FLAGS.map((flag) => {
    const [value, description] = DB_FLAG_HELP[flag];
    return { name: `${prefix}${flag}`, value, description: `${what}: ${description}` };
  });
}

export function addFlags(command: Command, specs: FlagSpec[]): Command {
  for (const spec of specs) {
    command.option(
      spec.value === null ? `--${spec.name}` : `--${spec.name} <${spec.value}>`,
      `${spec.description} [env ${envNameForFlag(spec.name)}]`,
    );
  }
  return command;
}

function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function readFlags(command: Command, specs: FlagSpec[]): Record<string, string | undefined> {
  const opts = command.opts<Record<string, string | boolean | undefined>>();
  return Object.fromEntries(
    specs.map((s) => {
      const value = opts[camelCase(s.name)];
      return [s.name, value === undefined ? undefined : String(value)];
    }),
  );
}
