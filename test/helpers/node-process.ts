/**
 * A real `authnexus serve-node` child process for end-to-end tests, the node-side twin of
 * helpers/cp-process.ts: spawned from the built CLI (bin/authnexus → dist/, so run
 * `npm run build` first), JSON logs parsed from stdout as they arrive, waiting driven by log
 * events or by polling the node's own health endpoint — never by a fixed sleep.
 *
 * Every process started here is SIGKILLed when the test process exits, as a last-resort net;
 * tests still stop their processes in `after` hooks.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import net from "node:net";
import { constants } from "node:os";
import { CLI_PATH, type CpEvent, REPO_ROOT } from "./cp-process.js";

/** How long startNodeProcess waits for the health listener, ms. */
const START_TIMEOUT_MS = 20_000;
/** stop(): SIGKILL after this long without an exit, ms. */
const STOP_KILL_AFTER_MS = 10_000;

export type NodeEvent = CpEvent;

export interface HealthResponse {
  status: number;
  /** Parsed JSON body (the health endpoint always answers JSON), or null. */
  json: any;
}

export interface NodeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** http://127.0.0.1:PORT of --health-listen */
  readonly healthUrl: string;
  readonly healthPort: number;
  /** Every JSON line parsed from stdout so far, in order. */
  readonly events: readonly NodeEvent[];
  readonly stdout: string;
  readonly stderr: string;
  /** Non-null once the process has exited. */
  readonly exitCode: number | null;
  /** The first event (seen or still to come) matching `predicate`; rejects on timeout or exit. */
  waitForEvent(predicate: (event: NodeEvent, index: number) => boolean, timeoutMs?: number): Promise<NodeEvent>;
  /** GET on the health endpoint (/healthz, /readyz, /status). */
  health(path: string): Promise<HealthResponse>;
  /** Sends `signal`; resolves with the exit code (128 + signal number if killed). SIGKILL after 10 s. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

export interface StartNodeOptions {
  /** node_agent.json from the unpacked deploy package. */
  agentFile: string;
  dataDir: string;
  /** Port for --health-listen 127.0.0.1:PORT (pick one with freePort()). */
  healthPort: number;
  /** e.g. ["--log-level", "debug"] or Runtime DB flags. */
  extraArgs?: string[];
  /** Merged over process.env. */
  env?: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
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

function tail(text: string, max = 4000): string {
  return text.length > max ? `…${text.slice(-max)}` : text;
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

export async function startNodeProcess(options: StartNodeOptions): Promise<NodeProcess> {
  installExitHook();
  const args = [
    CLI_PATH,
    "serve-node",
    "--agent",
    options.agentFile,
    "--data-dir",
    options.dataDir,
    "--health-listen",
    `127.0.0.1:${options.healthPort}`,
    "--log-format",
    "json",
    ...(options.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);

  const events: NodeEvent[] = [];
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
  const parseLine = (line: string) => {
    const trimmed = line.trim();
    if (!trimmed.startsWith("{")) return;
    try {
      events.push(JSON.parse(trimmed) as NodeEvent);
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
  child.stderr?.on("data", (chunk: string) => (stderr += chunk));

  const waitForEvent = (predicate: (event: NodeEvent, index: number) => boolean, timeoutMs = 10_000) =>
    new Promise<NodeEvent>((resolveWait, reject) => {
      const find = () => events.find((e, i) => predicate(e, i));
      const first = find();
      if (first) {
        resolveWait(first);
        return;
      }
      const cleanup = () => {
        clearTimeout(timer);
        emitter.off("event", onEvent);
        emitter.off("closed", onClosed);
        emitter.off("spawn-error", onSpawnError);
      };
      const onEvent = () => {
        const found = find();
        if (found) {
          cleanup();
          resolveWait(found);
        }
      };
      const onClosed = () => {
        const found = find();
        cleanup();
        if (found) resolveWait(found);
        else reject(new Error(`serve-node exited (code ${exitCode}) before a log event matching ${predicate.toString().slice(0, 200)}\n--- stderr ---\n${tail(stderr)}\n--- stdout ---\n${tail(stdout)}`));
      };
      const onSpawnError = (error: Error) => {
        cleanup();
        reject(error);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for a serve-node log event matching ${predicate.toString().slice(0, 200)}\n--- stderr ---\n${tail(stderr)}\n--- stdout ---\n${tail(stdout)}`));
      }, timeoutMs);
      emitter.on("event", onEvent);
      emitter.once("closed", onClosed);
      emitter.once("spawn-error", onSpawnError);
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

  try {
    await waitForEvent((e) => e.msg === "listener.bound" && e.listener === "health", options.startTimeoutMs ?? START_TIMEOUT_MS);
  } catch (error) {
    if (exitCode === null) {
      child.kill("SIGKILL");
      await closed;
    }
    throw error;
  }

  const healthUrl = `http://127.0.0.1:${options.healthPort}`;
  const health = async (path: string): Promise<HealthResponse> => {
    const response = await fetch(new URL(path, healthUrl), { signal: AbortSignal.timeout(5000) });
    const text = await response.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: response.status, json };
  };

  return {
    child,
    pid: child.pid ?? -1,
    healthUrl,
    healthPort: options.healthPort,
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
    health,
    stop,
  };
}
