/**
 * serve-cp configuration: resolved from flags and AUTHNEXUS_* variables, validated as a whole.
 */
import os from "node:os";
import path from "node:path";
import { DB_FLAGS, type DbOptions, type RawDbValues, resolveDbOptions, sameDatabase } from "../shared/config/db-options.js";
import {
  CERT_RENEW_AT_FRACTION,
  CERT_RENEW_CHECK_INTERVAL_MS,
  CERT_RENEW_JITTER_FRACTION,
  CERT_ROTATION_GRACE_MS,
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
import type { PkiSettings } from "./services/context.js";
import { canonicalTimeZone } from "./services/reports/calendar.js";
import { DEFAULT_REPORT_TIME_ZONE } from "./services/reports/daily.js";

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
  pki: PkiSettings;
  /** Canonical IANA name of the zone daily reports count days in. */
  reportTimeZone: string;
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
  "cert-rotation-grace",
  "cert-renew-at",
  "cert-renew-jitter",
  "cert-renew-check",
  "report-time-zone",
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
  const pki = readPkiSettings(get, problems);
  const reportTimeZone = readReportTimeZone(get("report-time-zone"), problems);

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
    pki,
    reportTimeZone,
  };
}

export const DEFAULT_PKI_SETTINGS: Readonly<PkiSettings> = {
  rotationGraceMs: CERT_ROTATION_GRACE_MS,
  renewAtFraction: CERT_RENEW_AT_FRACTION,
  renewJitterFraction: CERT_RENEW_JITTER_FRACTION,
  renewCheckIntervalMs: CERT_RENEW_CHECK_INTERVAL_MS,
};

function readPkiSettings(get: (flag: string) => string | undefined, problems: string[]): PkiSettings {
  const number = (flag: string, fallback: number, min: number, max: number) => {
    const text = get(flag);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value) || value < min || value > max) {
      problems.push(`--${flag} must be a number from ${min} to ${max}, got "${text}"`);
      return fallback;
    }
    return value;
  };
  const renewAtFraction = number("cert-renew-at", CERT_RENEW_AT_FRACTION, 0.1, 0.95);
  const renewJitterFraction = number("cert-renew-jitter", CERT_RENEW_JITTER_FRACTION, 0, 0.25);
  if (renewAtFraction + renewJitterFraction >= 1 || renewAtFraction - renewJitterFraction <= 0)
    problems.push("--cert-renew-at ± --cert-renew-jitter must stay between 0 and 1 (exclusive)");
  return {
    rotationGraceMs: Math.round(number("cert-rotation-grace", CERT_ROTATION_GRACE_MS / 1000, 0, 7 * 86_400) * 1000),
    renewAtFraction,
    renewJitterFraction,
    renewCheckIntervalMs: Math.round(number("cert-renew-check", CERT_RENEW_CHECK_INTERVAL_MS / 1000, 0, 7 * 86_400) * 1000),
  };
}

function readReportTimeZone(text: string | undefined, problems: string[]): string {
  if (text === undefined) return DEFAULT_REPORT_TIME_ZONE;
  const zone = canonicalTimeZone(text);
  if (zone === null) {
    problems.push(`--report-time-zone must be an IANA time zone name such as UTC or Europe/Berlin, got "${text}"`);
    return DEFAULT_REPORT_TIME_ZONE;
  }
  return zone;
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
