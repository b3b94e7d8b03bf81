/**
 * A real `authnexus serve-cp` child process for end-to-end tests: spawned from the built CLI
 * (bin/authnexus → dist/, so run `npm run build` first), listeners on 127.0.0.1 port 0, JSON
 * logs parsed from stdout as they arrive. Waiting is event-driven: `waitForEvent` resolves on
 * the log line that matches (or fails at once when the process exits first), never on a sleep.
 *
 * Every process started here is SIGKILLed when the test process exits, as a last-resort net;
 * tests still stop their processes in `after` hooks.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { constants } from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLI_PATH = resolve(REPO_ROOT, "bin", "authnexus");

/** How long startCpProcess waits for the admin listener, ms. */
const START_TIMEOUT_MS = 30_000;
/** stop(): SIGKILL after this long without an exit, ms. */
const STOP_KILL_AFTER_MS = 10_000;

/** One parsed JSON log line from stdout. */
export interface CpEvent {
  ts?: string;
  level?: string;
  category?: string;
  msg?: string;
  [field: string]: unknown;
}

export interface AdminResponse {
  status: number;
  /** Parsed JSON body, or null for an empty / non-JSON body. */
  json: any;
  text: string;
  headers: Headers;
}

export interface AdminFetchOptions {
  token?: string;
  /** An object is sent as JSON; a string is sent verbatim (still labelled application/json). */
  body?: unknown;
  headers?: Record<string, string>;
}

export interface CpProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** http://127.0.0.1:PORT */
  readonly adminUrl: string;
  /** Every JSON line parsed from stdout so far, in order. */
  readonly events: readonly CpEvent[];
  /** Raw stdout / stderr so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Non-null once the process has exited. */
  readonly exitCode: number | null;
  /**
   * The first event (already seen or still to come) matching `predicate`; rejects after
   * `timeoutMs` or when the process exits without logging one.
   */
  waitForEvent(predicate: (event: CpEvent, index: number) => boolean, timeoutMs?: number): Promise<CpEvent>;
  /** Waits for `listener.bound` of that listener; resolves with its "HOST:PORT". */
  waitForListener(name: "admin" | "node-api" | "ocsp", timeoutMs?: number): Promise<string>;
  /** Resolves once stderr matches `pattern`. */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /**
   * Sends `signal` and resolves with the exit code (128 + signal number when the process died
   * of a signal). SIGKILLs the process if it has not exited after 10 s.
   */
  stop(signal?: NodeJS.Signals): Promise<number>;
  adminFetch(method: string, path: string, options?: AdminFetchOptions): Promise<AdminResponse>;
}

export interface StartCpOptions {
  dataDir: string;
  extraArgs?: string[];
  /** Merged over process.env. */
  env?: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
  /** Options for the node binary itself (e.g. --cpu-prof), placed before the CLI path. */
  nodeArgs?: string[];
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of live) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
}

function describeTail(text: string, max = 4000): string {
  return text.length > max ? `…${text.slice(-max)}` : text;
}

export async function startCpProcess(options: StartCpOptions): Promise<CpProcess> {
  installExitHook();
  const args = [
    ...(options.nodeArgs ?? []),
    CLI_PATH,
    "serve-cp",
    "--data-dir",
    options.dataDir,
    "--admin-listen",
    "127.0.0.1:0",
    "--cp-listen",
    "127.0.0.1:0",
    "--ocsp-listen",
    "127.0.0.1:0",
    "--public-cp-url",
    "https://localhost:9091",
    "--public-ocsp-url",
    "http://127.0.0.1:9092/ocsp/",
    "--log-format",
    "json",
    ...(options.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);

  const events: CpEvent[] = [];
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  let stdout = "";
  let stderr = "";
  let pending = "";
  let exitCode: number | null = null;
  child.once("exit", (code, signal) => {
    live.delete(child);
    exitCode = exitCodeOf(code, signal);
  });
  // Wait for the pipes to drain too, so the last log lines (shutdown.completed) are parsed.
  const closed = new Promise<number>((resolveClose) => {
    child.once("close", (code, signal) => {
      if (pending.trim() !== "") parseLine(pending);
      pending = "";
      resolveClose(exitCodeOf(code, signal));
      emitter.emit("closed");
    });
  });
  child.once("error", (error) => emitter.emit("spawn-error", error));

  function parseLine(line: string): void {
    const trimmed = line.trim();
    if (!trimmed.startsWith("{")) return;
    let event: CpEvent;
    try {
      event = JSON.parse(trimmed) as CpEvent;
    } catch {
      return;
    }
    events.push(event);
    emitter.emit("event", event, events.length - 1);
  }

  child.stdout?.setEncoding("utf8");
  child.stderr?.setEncoding("utf8");
  child.stdout?.on("data", (chunk: string) => {
    stdout += chunk;
    pending += chunk;
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      parseLine(line);
      newline = pending.indexOf("\n");
    }
  });
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
    emitter.emit("stderr");
  });

  const waitFor = <T>(check: () => T | undefined, what: string, timeoutMs: number, triggers: string[]): Promise<T> =>
    new Promise<T>((resolveWait, reject) => {
      const first = check();
      if (first !== undefined) {
        resolveWait(first);
        return;
      }
      const cleanup = () => {
        clearTimeout(timer);
        for (const t of triggers) emitter.off(t, onChange);
        emitter.off("closed", onClosed);
        emitter.off("spawn-error", onSpawnError);
      };
      const onChange = () => {
        const found = check();
        if (found !== undefined) {
          cleanup();
          resolveWait(found);
        }
      };
      const onClosed = () => {
        const found = check();
        cleanup();
        if (found !== undefined) resolveWait(found);
        else reject(new Error(`serve-cp exited (code ${exitCode}) before ${what}\n--- stderr ---\n${describeTail(stderr)}\n--- stdout ---\n${describeTail(stdout)}`));
      };
      const onSpawnError = (error: Error) => {
        cleanup();
        reject(error);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n--- stderr ---\n${describeTail(stderr)}\n--- stdout ---\n${describeTail(stdout)}`));
      }, timeoutMs);
      for (const t of triggers) emitter.on(t, onChange);
      emitter.once("closed", onClosed);
      emitter.once("spawn-error", onSpawnError);
      // The process may already be gone.
      if (child.exitCode !== null || child.signalCode !== null) void closed.then(onClosed);
    });

  const waitForEvent = (predicate: (event: CpEvent, index: number) => boolean, timeoutMs = 10_000) =>
    waitFor(
      () => {
        const i = events.findIndex((e, idx) => predicate(e, idx));
        return i >= 0 ? events[i] : undefined;
      },
      `a log event matching ${predicate.toString().slice(0, 200)}`,
      timeoutMs,
      ["event"],
    );

  const waitForListener = async (name: string, timeoutMs = 15_000) => {
    const event = await waitForEvent((e) => e.msg === "listener.bound" && e.listener === name, timeoutMs);
    if (typeof event.address !== "string") throw new Error(`listener.bound for ${name} has no address: ${JSON.stringify(event)}`);
    return event.address;
  };

  const waitForStderr = (pattern: RegExp, timeoutMs = 10_000) =>
    waitFor(() => stderr.match(pattern) ?? undefined, `stderr matching ${pattern}`, timeoutMs, ["stderr"]);

  let adminAddress: string;
  try {
    adminAddress = await waitForListener("admin", options.startTimeoutMs ?? START_TIMEOUT_MS);
  } catch (error) {
    if (exitCode === null) {
      child.kill("SIGKILL");
      await closed;
    }
    throw error;
  }
  const adminUrl = `http://${adminAddress}`;

  let stopping: Promise<number> | null = null;
  const stop = (signal: NodeJS.Signals = "SIGTERM"): Promise<number> => {
    if (stopping) return stopping;
    if (exitCode !== null) {
      stopping = closed;
      return stopping;
    }
    const killer = setTimeout(() => child.kill("SIGKILL"), STOP_KILL_AFTER_MS);
    child.kill(signal);
    stopping = closed.finally(() => clearTimeout(killer));
    return stopping;
  };

  const adminFetch = async (method: string, path: string, opts: AdminFetchOptions = {}): Promise<AdminResponse> => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
      headers["content-type"] ??= "application/json";
    }
    const response = await fetch(new URL(path, adminUrl), { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await response.text();
    let json: unknown = null;
    if (text !== "") {
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
    }
    return { status: response.status, json, text, headers: response.headers };
  };

  return {
    child,
    pid: child.pid ?? -1,
    adminUrl,
    events,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    get exitCode() {
      return exitCode;
    },
    waitForEvent,
    waitForListener: waitForListener as CpProcess["waitForListener"],
    waitForStderr,
    stop,
    adminFetch,
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs a program to completion, feeding `input` to its stdin; never throws on a non-zero exit. */
export function runProcess(file: string, args: string[], options: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(file, args, {
      ...(options.cwd ? { cwd: options.cwd } : {}),
      env: { ...process.env, ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    live.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.once("error", (error) => {
      clearTimeout(timer);
      live.delete(child);
      reject(error);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolveRun({ code: exitCodeOf(code, signal), stdout, stderr });
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input ?? "");
  });
}

/** Runs `authnexus <args…>` to completion, feeding `input` to its stdin. */
export function runCli(args: string[], options: RunOptions = {}): Promise<CliResult> {
  return runProcess(process.execPath, [CLI_PATH, ...args], { cwd: REPO_ROOT, ...options });
}
