/**
 * Real child processes of `bin/authnexus` (and other programs) for end-to-end tests: the
 * machinery serve-cp and serve-node helpers share. JSON log lines on stdout are parsed as they
 * arrive and waiting is event-driven — `waitForEvent` resolves on the matching line, or fails at
 * once when the process exits first — never a sleep. The CLI runs from dist/ (bin/authnexus), so
 * run `npm run build` first.
 *
 * Every process started here is SIGKILLed when the test process exits, as a last-resort net;
 * tests still stop their processes in `after` hooks.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import net from "node:net";
import { constants } from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLI_PATH = resolve(REPO_ROOT, "bin", "authnexus");

/** stop(): SIGKILL after this long without an exit, ms. */
const STOP_KILL_AFTER_MS = 10_000;

/** One parsed JSON log line from stdout. */
export interface LogEvent {
  ts?: string;
  level?: string;
  category?: string;
  msg?: string;
  [field: string]: unknown;
}

export interface AuthnexusProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every JSON line parsed from stdout so far, in order. */
  readonly events: readonly LogEvent[];
  /** Raw stdout / stderr so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Non-null once the process has exited. */
  readonly exitCode: number | null;
  /** The first event (already seen or still to come) matching `predicate`; rejects on timeout or exit. */
  waitForEvent(predicate: (event: LogEvent, index: number) => boolean, timeoutMs?: number): Promise<LogEvent>;
  /** Resolves once stderr matches `pattern`. */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Sends `signal`; resolves with the exit code (128 + signal number if killed). SIGKILL after 10 s. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of live) {
        try {
          c.kill("SIGKILL");
        } catch {
          // already gone
        }
      }
    });
  }
  live.add(child);
  child.once("exit", () => live.delete(child));
}

function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
}

function tail(text: string, max = 4000): string {
  return text.length > max ? `…${text.slice(-max)}` : text;
}

/** Spawns `node [nodeArgs] bin/authnexus <args>` with stdout parsed as JSON log lines. */
export function spawnAuthnexus(args: string[], options: { env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {}): AuthnexusProcess {
  const label = args[0] ?? "authnexus";
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), CLI_PATH, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  track(child);

  const events: LogEvent[] = [];
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  let stdout = "";
  let stderr = "";
  let pending = "";
  let exitCode: number | null = null;
  child.once("exit", (code, signal) => {
    exitCode = exitCodeOf(code, signal);
  });
  const parseLine = (line: string) => {
    const trimmed = line.trim();
    if (!trimmed.startsWith("{")) return;
    try {
      events.push(JSON.parse(trimmed) as LogEvent);
    } catch {
      return;
    }
    emitter.emit("event");
  };
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
  child.stdout?.setEncoding("utf8");
  child.stderr?.setEncoding("utf8");
  child.stdout?.on("data", (chunk: string) => {
    stdout += chunk;
    pending += chunk;
    for (let newline = pending.indexOf("\n"); newline >= 0; newline = pending.indexOf("\n")) {
      parseLine(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
    }
  });
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
    emitter.emit("stderr");
  });

  const waitFor = <T>(check: () => T | undefined, what: string, timeoutMs: number, trigger: "event" | "stderr"): Promise<T> =>
    new Promise<T>((resolveWait, reject) => {
      const first = check();
      if (first !== undefined) return resolveWait(first);
      const output = () => `\n--- stderr ---\n${tail(stderr)}\n--- stdout ---\n${tail(stdout)}`;
      const cleanup = () => {
        clearTimeout(timer);
        emitter.off(trigger, onChange);
        emitter.off("closed", onClosed);
        emitter.off("spawn-error", onSpawnError);
      };
      const onChange = () => {
        const found = check();
        if (found === undefined) return;
        cleanup();
        resolveWait(found);
      };
      const onClosed = () => {
        const found = check();
        cleanup();
        if (found !== undefined) resolveWait(found);
        else reject(new Error(`${label} exited (code ${exitCode}) before ${what}${output()}`));
      };
      const onSpawnError = (error: Error) => {
        cleanup();
        reject(error);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${output()}`));
      }, timeoutMs);
      emitter.on(trigger, onChange);
      emitter.once("closed", onClosed);
      emitter.once("spawn-error", onSpawnError);
      // The process may already be gone.
      if (child.exitCode !== null || child.signalCode !== null) void closed.then(onClosed);
    });

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

  return {
    child,
    pid: child.pid ?? -1,
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
    waitForEvent: (predicate, timeoutMs = 10_000) =>
      waitFor(
        () => events.find((e, i) => predicate(e, i)),
        `a log event matching ${predicate.toString().slice(0, 200)}`,
        timeoutMs,
        "event",
      ),
    waitForStderr: (pattern, timeoutMs = 10_000) =>
      waitFor(() => stderr.match(pattern) ?? undefined, `stderr matching ${pattern}`, timeoutMs, "stderr"),
    stop,
  };
}

/** Awaits a startup condition; if it fails, the process is killed (and reaped) before rethrowing. */
export async function startedOrKilled<T>(proc: AuthnexusProcess, started: Promise<T>): Promise<T> {
  try {
    return await started;
  } catch (error) {
    if (proc.exitCode === null) await proc.stop("SIGKILL");
    throw error;
  }
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
    track(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
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

/** A TCP port that was free a moment ago on 127.0.0.1 (bound to port 0, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** Whether a TCP connection to 127.0.0.1:port succeeds (false once nothing listens there). */
export function canConnect(port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolveConnect) => {
    const socket = net.connect(port, "127.0.0.1");
    const done = (result: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolveConnect(result);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}
