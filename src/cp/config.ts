/**
 * serve-cp configuration: resolved from flags and AUTHNEXUS_* variables, validated as a whole.
 */
import os from "node:os";
import path from "node:path";
import { DB_FLAGS, type DbOptions, type RawDbValues, resolveDbOptions, sameDatabase } from "../shared/config/db-options.js";
import {
  DEFAULT_ADMIN_LISTEN,
  DEFAULT_CP_LISTEN,
  DEFAULT_CP_PORT,
  DEFAULT_DATA_DIR,
  DEFAULT_OCSP_LISTEN,
  DEFAULT_OCSP_PORT,
} from "../shared/config/defaults.js";
import { type HostPort, parseHostPort } from "../shared/config/host-port.js";
import { flagValue, readLogOptions, throwIfProblems } from "../shared/config/options.js";
import type { LogFormat, LogLevel } from "../shared/log/index.js";

export interface CpConfig {
  dataDir: string;
  adminListen: HostPort;
  cpListen: HostPort;
  ocspListen: HostPort;
  publicCpUrl: string;
  publicOcspUrl: string;
  masterKeyFile: string | undefined;
  masterKeyValue: string | undefined;
  controlDb: DbOptions;
  runtimeDb: DbOptions;
  logLevel: LogLevel;
  logFormat: LogFormat | undefined;
}

/** Flags serve-cp understands besides the DB flags (which it takes plain and with --runtime-). */
export const CP_FLAGS = [
  "data-dir",
  "admin-listen",
  "cp-listen",
  "ocsp-listen",
  "public-cp-url",
  "public-ocsp-url",
  "master-key-file",
  "log-level",
  "log-format",
] as const;

export function resolveCpConfig(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv): CpConfig {
  const problems: string[] = [];
  const get = (flag: string) => flagValue(flags, env, flag);
  const dataDir = path.resolve(get("data-dir") ?? DEFAULT_DATA_DIR);
  const adminListen = parseHostPort(get("admin-listen") ?? DEFAULT_ADMIN_LISTEN, "--admin-listen", problems);
  const cpListen = parseHostPort(get("cp-listen") ?? DEFAULT_CP_LISTEN, "--cp-listen", problems);
  const ocspListen = parseHostPort(get("ocsp-listen") ?? DEFAULT_OCSP_LISTEN, "--ocsp-listen", problems);
  const host = os.hostname() || "localhost";
  const publicCpUrl = checkUrl(
    get("public-cp-url") ?? `https://${host}:${cpListen.port || DEFAULT_CP_PORT}`,
    "--public-cp-url",
    ["https:"],
    problems,
  );
  const publicOcspUrl = checkUrl(
    get("public-ocsp-url") ?? `http://${host}:${ocspListen.port || DEFAULT_OCSP_PORT}/ocsp/`,
    "--public-ocsp-url",
    ["http:", "https:"],
    problems,
  );

  const dbValues = (prefix: "" | "runtime-"): RawDbValues =>
    Object.fromEntries(DB_FLAGS.map((f) => [f, get(`${prefix}${f}`)]).filter(([, v]) => v !== undefined)) as RawDbValues;
  const controlDb = resolveDbOptions(
    { values: dbValues(""), prefix: "", dataDir, defaultSqliteFile: "control.db", defaultPgDatabase: "authnexus_control" },
    problems,
  );
  const runtimeDb = resolveDbOptions(
    { values: dbValues("runtime-"), prefix: "runtime-", dataDir, defaultSqliteFile: "runtime.db", defaultPgDatabase: "authnexus_runtime" },
    problems,
  );
  if (sameDatabase(controlDb, runtimeDb))
    problems.push("the Control DB and the Runtime DB must be separate databases; set --runtime-db-path or --runtime-db-name");

  const { logLevel, logFormat } = readLogOptions(get, problems);

  throwIfProblems(problems);
  return {
    dataDir,
    adminListen,
    cpListen,
    ocspListen,
    publicCpUrl,
    publicOcspUrl,
    masterKeyFile: get("master-key-file"),
    masterKeyValue: env.AUTHNEXUS_MASTER_KEY || undefined,
    controlDb,
    runtimeDb,
    logLevel,
    logFormat,
  };
}

function checkUrl(value: string, flag: string, protocols: string[], problems: string[]): string {
  try {
    const url = new URL(value);
    if (!protocols.includes(url.protocol)) problems.push(`${flag} must use ${protocols.join(" or ")}, got "${value}"`);
    return url.toString();
  } catch {
    problems.push(`${flag} must be a URL, got "${value}"`);
    return value;
  }
}
