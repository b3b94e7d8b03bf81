/**
 * Flag values come from the command line first, then from AUTHNEXUS_<FLAG> environment
 * variables (`--runtime-db-host` ↔ AUTHNEXUS_RUNTIME_DB_HOST), then from defaults.
 */
import { AuthNexusError } from "../errors/index.js";
import { LOG_LEVELS, type LogFormat, type LogLevel } from "../log/index.js";

export function envNameForFlag(flag: string): string {
  return `AUTHNEXUS_${flag.replace(/^--/, "").replace(/-/g, "_").toUpperCase()}`;
}

/** Looks a flag up in the parsed command line (kebab-case keys), then in the environment. */
export function flagValue(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv, flag: string): string | undefined {
  const fromFlags = flags[flag];
  if (fromFlags !== undefined) return fromFlags;
  const fromEnv = env[envNameForFlag(flag)];
  return fromEnv === undefined || fromEnv === "" ? undefined : fromEnv;
}

/** Invalid configuration fails at start, listing every problem at once. */
export function throwIfProblems(problems: string[]): void {
  if (problems.length > 0) {
    throw new AuthNexusError("CONFIG_INVALID", { message: `invalid configuration:\n  - ${problems.join("\n  - ")}` });
  }
}

/** --log-level and --log-format, shared by every role; bad values are added to `problems`. */
export function readLogOptions(
  get: (flag: string) => string | undefined,
  problems: string[],
): { logLevel: LogLevel; logFormat: LogFormat | undefined } {
  const logLevel = (get("log-level") ?? "info") as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
  const logFormat = get("log-format");
  if (logFormat !== undefined && logFormat !== "json" && logFormat !== "pretty") problems.push("--log-format must be json or pretty");
  return { logLevel, logFormat: logFormat as LogFormat | undefined };
}
