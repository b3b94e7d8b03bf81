/**
 * serve-node configuration: resolved from flags and AUTHNEXUS_* variables, validated as a
 * whole (every problem listed at once). The DB flags name the node's Runtime DB; with no flags
 * it is SQLite at <data-dir>/runtime.db — the same file serve-cp uses for its Runtime DB when
 * both run from one directory, which is how one host shares one Runtime DB.
 */
import path from "node:path";
import { DB_FLAGS, type DbOptions, type RawDbValues, resolveDbOptions } from "../shared/config/db-options.js";
import { DEFAULT_DATA_DIR, DEFAULT_FUNCTION_QUEUE, DEFAULT_FUNCTION_WORKERS, DEFAULT_HEALTH_LISTEN } from "../shared/config/defaults.js";
import { type HostPort, parseHostPort } from "../shared/config/host-port.js";
import { flagValue, readLogOptions, throwIfProblems } from "../shared/config/options.js";
import type { LogFormat, LogLevel } from "../shared/log/index.js";

export interface NodeConfig {
  /** Absolute path of node_agent.json; every file it names is relative to its directory. */
  agentFile: string;
  dataDir: string;
  healthListen: HostPort;
  /** The business port; null: all interfaces on the node's business_port from its package. */
  listen: HostPort | null;
  /** Refuse every SDK request while the blacklist cache is not current. */
  blacklistFailClosed: boolean;
  /** Worker threads cloud functions run on (--function-workers). */
  functionWorkers: number;
  /** Cloud function calls that may wait for a worker before FUNCTION_BUSY (--function-queue). */
  functionQueue: number;
  runtimeDb: DbOptions;
  logLevel: LogLevel;
  logFormat: LogFormat | undefined;
}

/** Flags serve-node understands besides the DB flags. */
export const NODE_FLAGS = [
  "agent",
  "data-dir",
  "health-listen",
  "listen",
  "blacklist-fail-closed",
  "function-workers",
  "function-queue",
  "log-level",
  "log-format",
] as const;

export function resolveNodeConfig(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv): NodeConfig {
  const problems: string[] = [];
  const get = (flag: string) => flagValue(flags, env, flag);
  const agent = get("agent");
  if (agent === undefined) problems.push("--agent is required: the node_agent.json from the node's deploy package");
  const dataDir = path.resolve(get("data-dir") ?? DEFAULT_DATA_DIR);
  const healthListen = parseHostPort(get("health-listen") ?? DEFAULT_HEALTH_LISTEN, "--health-listen", problems);
  const listenValue = get("listen");
  const listen = listenValue === undefined ? null : parseHostPort(listenValue, "--listen", problems);
  const blacklistFailClosed = parseSwitch(get("blacklist-fail-closed"), "--blacklist-fail-closed", problems);
  const functionWorkers = parseCount(get("function-workers"), "--function-workers", DEFAULT_FUNCTION_WORKERS, 1, 64, problems);
  const functionQueue = parseCount(get("function-queue"), "--function-queue", DEFAULT_FUNCTION_QUEUE, 0, 100_000, problems);
  const dbValues = Object.fromEntries(DB_FLAGS.map((f) => [f, get(f)]).filter(([, v]) => v !== undefined)) as RawDbValues;
  const runtimeDb = resolveDbOptions(
    { values: dbValues, prefix: "", dataDir, defaultSqliteFile: "runtime.db", defaultPgDatabase: "authnexus_runtime" },
    problems,
  );

  const { logLevel, logFormat } = readLogOptions(get, problems);

  throwIfProblems(problems);
  return {
    agentFile: path.resolve(agent ?? ""),
    dataDir,
    healthListen,
    listen,
    blacklistFailClosed,
    functionWorkers,
    functionQueue,
    runtimeDb,
    logLevel,
    logFormat,
  };
}

/** A switch from the command line (present: "true") or the environment ("1", "true", "0", "false"). */
function parseSwitch(value: string | undefined, flag: string, problems: string[]): boolean {
  if (value === undefined) return false;
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  problems.push(`${flag} takes no value on the command line; in the environment use 1 or 0, got "${value}"`);
  return false;
}

/** A whole number in [min, max]; the fallback when absent. */
function parseCount(value: string | undefined, flag: string, fallback: number, min: number, max: number, problems: string[]): number {
  if (value === undefined) return fallback;
  const parsed = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (Number.isSafeInteger(parsed) && parsed >= min && parsed <= max) return parsed;
  problems.push(`${flag} must be a whole number from ${min} to ${max}, got "${value}"`);
  return fallback;
}
