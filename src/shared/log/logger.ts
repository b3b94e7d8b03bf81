/**
 * Structured logging: one event per line, a fixed message plus fields. JSON when the output is
 * not a terminal, a compact human line when it is. Secrets never reach the sink: fields whose
 * names look sensitive are replaced, and CR/LF in client-supplied strings is escaped so a value
 * cannot forge a second log line.
 */
import { systemClock } from "../time/index.js";

export const LOG_CATEGORIES = ["CP Agent", "Security", "TLS", "Setup", "PKI", "SSE", "Admin", "DB", "Server"] as const;
export type LogCategory = (typeof LOG_CATEGORIES)[number];

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFormat = "json" | "pretty";
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger for another category sharing this one's sink, level and base fields. */
  category(category: LogCategory): Logger;
  /** A logger that adds `fields` to every event. */
  with(fields: LogFields): Logger;
}

export interface LoggerOptions {
  category: LogCategory;
  level?: LogLevel;
  format?: LogFormat;
  /** Receives one finished line (without newline). Defaults to stdout. */
  sink?: (line: string) => void;
  now?: () => number;
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SENSITIVE_KEY = /(password|passwd|secret|token|authorization|cookie|private.?key|master.?key|^key$|_key$|key_pem)/i;
const NON_SECRET_SUFFIX = /(_path|_file|_count|_id|_at|_ms|_expires_in)$/i;
export const REDACTED = "[redacted]";

export function isSensitiveKey(key: string): boolean {
  return SENSITIVE_KEY.test(key) && !NON_SECRET_SUFFIX.test(key);
}

export function sanitizeFields(fields: LogFields): LogFields {
  const out: LogFields = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    out[key] = isSensitiveKey(key) ? REDACTED : sanitizeValue(value);
  }
  return out;
}

function sanitizeValue(value: unknown): unknown {
  if (typeof value === "string") return value.replace(/\r/g, "\\r").replace(/\n/g, "\\n");
  if (value instanceof Error) return { name: value.name, message: sanitizeValue(value.message) };
  if (Array.isArray(value)) return value.map(sanitizeValue);
  if (value !== null && typeof value === "object") return sanitizeFields(value as LogFields);
  return value;
}

export function createLogger(options: LoggerOptions): Logger {
  const sink = options.sink ?? ((line: string) => process.stdout.write(`${line}\n`));
  const format = options.format ?? (process.stdout.isTTY ? "pretty" : "json");
  const minRank = LEVEL_RANK[options.level ?? "info"];
  const now = options.now ?? systemClock.now;
  return build(options.category, {});

  function build(category: LogCategory, base: LogFields): Logger {
    const emit = (level: LogLevel, message: string, fields?: LogFields) => {
      if (LEVEL_RANK[level] < minRank) return;
      const clean = sanitizeFields({ ...base, ...fields });
      const ts = new Date(now()).toISOString();
      sink(format === "json" ? jsonLine(ts, level, category, message, clean) : prettyLine(ts, level, category, message, clean));
    };
    return {
      debug: (m, f) => emit("debug", m, f),
      info: (m, f) => emit("info", m, f),
      warn: (m, f) => emit("warn", m, f),
      error: (m, f) => emit("error", m, f),
      category: (next) => build(next, base),
      with: (fields) => build(category, { ...base, ...fields }),
    };
  }
}

function jsonLine(ts: string, level: LogLevel, category: LogCategory, msg: string, fields: LogFields): string {
  return JSON.stringify({ ts, level, category, msg, ...fields });
}

function prettyLine(ts: string, level: LogLevel, category: LogCategory, msg: string, fields: LogFields): string {
  const rest = Object.entries(fields)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  return `${ts} ${level.toUpperCase().padEnd(5)} [${category}] ${msg}${rest ? ` ${rest}` : ""}`;
}

/** A logger that records events in memory: for tests that assert on what was logged. */
export function createMemoryLogger(category: LogCategory = "Server"): { logger: Logger; lines: string[]; events: () => LogFields[] } {
  const lines: string[] = [];
  const logger = createLogger({ category, level: "debug", format: "json", sink: (l) => lines.push(l) });
  return { logger, lines, events: () => lines.map((l) => JSON.parse(l) as LogFields) };
}
