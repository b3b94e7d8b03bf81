/**
 * `authnexus dev`: the whole deployment in one command, in one process, in one folder — for
 * trying AuthNexus and developing against it, never for production. Flags, signals and the
 * terminal live here; the composition is deployment.ts.
 *
 * SIGINT or SIGTERM stops the node, then the CP, and exits 0; a second one exits at once (1).
 */
import path from "node:path";
import type { Command } from "commander";
import { throwIfProblems } from "../../shared/config/options.js";
import { systemClock, systemScheduler } from "../../shared/time/index.js";
import { startDevDeployment } from "./deployment.js";
import { DevInterrupted } from "./errors.js";
import { DEV_HOST, DEV_PORT_SPECS, type DevPortName, type DevPorts, resolvePorts } from "./ports.js";
import { formatSummary } from "./summary.js";

/** The folder when --dir is not given (relative to the working directory). */
export const DEFAULT_DEV_DIR = "./authnexus-dev";
/** After a clean stop, how long anything left behind may keep the process alive before it exits anyway (ms). */
const EXIT_GUARD_MS = 5_000;
/**
 * A signal this soon after the first is the same request delivered twice (a wrapper such as npx
 * or timeout forwarding it to a process that got it from its process group already), not an
 * operator insisting (ms).
 */
const DUPLICATE_SIGNAL_WINDOW_MS = 500;

interface DevFlags extends Partial<Record<string, string | boolean>> {
  dir?: string;
  verbose?: boolean;
}

export interface DevOptions {
  dir: string;
  ports: DevPorts;
  verbose: boolean;
}

export function registerDev(program: Command): void {
  const command = program
    .command("dev")
    .description("run a development deployment: a CP and one node in this process on SQLite, set up with a demo app and user")
    .option("--dir <dir>", `folder for everything it keeps, reused by the next run (default ${DEFAULT_DEV_DIR})`);
  for (const spec of DEV_PORT_SPECS) {
    command.option(`--${spec.flag} <port>`, `${spec.what} on ${DEV_HOST} (default ${spec.defaultPort}; 0 picks a free port)`);
  }
  command
    .option("--verbose", "log to stderr instead of <dir>/logs")
    .addHelpText(
      "after",
      "\nEverything listens on 127.0.0.1 only. The folder (0700) holds the databases, keys, logs and\n" +
        "dev-state.json (0600) with the generated passwords and the application secret: a development\n" +
        "deployment prints its secrets on the terminal by design; never use it for anything real.",
    )
    .action(async (flags: DevFlags) => {
      await runDev(resolveDevOptions(flags));
    });
}

export function resolveDevOptions(flags: DevFlags): DevOptions {
  const problems: string[] = [];
  const portValues: Partial<Record<DevPortName, string>> = {};
  for (const spec of DEV_PORT_SPECS) {
    const value = flags[camelCase(spec.flag)];
    if (typeof value === "string") portValues[spec.name] = value;
  }
  const ports = resolvePorts(portValues, problems);
  if (flags.dir !== undefined && flags.dir.trim() === "") problems.push("--dir must name a folder");
  throwIfProblems(problems);
  return { dir: path.resolve(flags.dir ?? DEFAULT_DEV_DIR), ports, verbose: flags.verbose === true };
}

async function runDev(options: DevOptions): Promise<void> {
  const say = (line: string) => process.stderr.write(`authnexus dev: ${line}\n`);
  const shutdown = new AbortController();
  let firstSignalAt: number | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    const now = systemClock.now();
    if (firstSignalAt === null) {
      firstSignalAt = now;
      say(`${signal}: stopping (a second signal exits at once)`);
      shutdown.abort();
      return;
    }
    if (now - firstSignalAt < DUPLICATE_SIGNAL_WINDOW_MS) return;
    say(`${signal} again: exiting without finishing the stop`);
    process.exit(1);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  let deployment: Awaited<ReturnType<typeof startDevDeployment>>;
  try {
    deployment = await startDevDeployment({ ...options, signal: shutdown.signal, progress: say, scheduler: systemScheduler });
  } catch (error) {
    if (!(error instanceof DevInterrupted)) throw error;
    say(`${error.message}; the next run picks up where this one stopped`);
    exitSoon();
    return;
  }
  process.stdout.write(formatSummary(deployment.summary));

  await new Promise<void>((resolve) => {
    if (shutdown.signal.aborted) resolve();
    else shutdown.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  await deployment.stop();
  say("stopped");
  exitSoon();
}

/** Everything is closed; should a stray handle still keep the process up, it exits anyway. */
function exitSoon(): void {
  systemScheduler.setTimer(EXIT_GUARD_MS, () => process.exit(process.exitCode ?? 0), { background: true });
}

function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}
