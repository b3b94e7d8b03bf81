/**
 * Where a development deployment logs: one file per role in <dir>/logs (JSON lines, appended
 * across runs, mode 0600), or stderr with --verbose, so the terminal shows the summary rather
 * than every event. The loggers are also watched for the failures a start must report itself:
 * a CP listener that could not bind, a node whose staged startup failed.
 */
import fs from "node:fs";
import path from "node:path";
import { createLogger, type LogFields, type Logger, type LogLevel } from "../../shared/log/index.js";

export const LOGS_DIR_NAME = "logs";

export interface DevLogs {
  cp: Logger;
  node: Logger;
  /** The log files, or null when logging to stderr. */
  files: { cp: string; node: string } | null;
  /** The error of the last `listener.failed` per listener ("node-api", "ocsp"), and of the node's `startup.failed` ("node"). */
  failures: Map<string, string>;
  close(): void;
}

export function openDevLogs(dir: string, verbose: boolean): DevLogs {
  const failures = new Map<string, string>();
  const watch = (message: string, fields: LogFields | undefined) => {
    const error = typeof fields?.error === "string" ? fields.error : "";
    if (message === "listener.failed" && typeof fields?.listener === "string") failures.set(fields.listener, error);
    if (message === "startup.failed") failures.set("node", error);
  };
  if (verbose) {
    const format = process.stderr.isTTY ? "pretty" : "json";
    const sink = (line: string) => process.stderr.write(`${line}\n`);
    // One stream for both roles: each line says whose it is.
    return {
      cp: watched(createLogger({ category: "Server", format, sink }).with({ source: "cp" }), watch),
      node: watched(createLogger({ category: "Server", format, sink }).with({ source: "node" }), watch),
      files: null,
      failures,
      close: () => {},
    };
  }
  const logsDir = path.join(dir, LOGS_DIR_NAME);
  fs.mkdirSync(logsDir, { recursive: true, mode: 0o700 });
  const files = { cp: path.join(logsDir, "cp.log"), node: path.join(logsDir, "node.log") };
  const descriptors: number[] = [];
  let closed = false;
  const fileLogger = (file: string) => {
    const fd = fs.openSync(file, "a", 0o600);
    descriptors.push(fd);
    // Synchronous appends: a line logged just before a crash or a forced exit is still on disk.
    // After close() a late line is dropped rather than written to a descriptor number reused since.
    const sink = (line: string) => {
      if (!closed) fs.writeSync(fd, `${line}\n`);
    };
    return createLogger({ category: "Server", format: "json", sink });
  };
  return {
    cp: watched(fileLogger(files.cp), watch),
    node: watched(fileLogger(files.node), watch),
    files,
    failures,
    close: () => {
      closed = true;
      for (const fd of descriptors.splice(0)) fs.closeSync(fd);
    },
  };
}

/** `inner`, with every event also shown to `watch` (whatever category or base fields it was derived with). */
function watched(inner: Logger, watch: (message: string, fields: LogFields | undefined) => void): Logger {
  const at =
    (level: LogLevel) =>
    (message: string, fields?: LogFields): void => {
      watch(message, fields);
      inner[level](message, fields);
    };
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    category: (category) => watched(inner.category(category), watch),
    with: (fields) => watched(inner.with(fields), watch),
  };
}
