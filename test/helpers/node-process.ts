/**
 * A real `authnexus serve-node` child process for end-to-end tests, the node-side twin of
 * helpers/cp-process.ts (shared machinery in authnexus-process.ts), plus `health()` to read the
 * node's own health endpoint.
 */
import { mkdirSync } from "node:fs";
import { type AuthnexusProcess, freePort, type LogEvent, spawnAuthnexus, startedOrKilled } from "./authnexus-process.js";
import { dbFlags } from "./databases.js";
import { waitFor } from "./node-agent.js";
import { unpackPackage } from "./nodes.js";

export { canConnect, freePort } from "./authnexus-process.js";

/** How long startNodeProcess waits for the health listener, ms. */
const START_TIMEOUT_MS = 20_000;

export type NodeEvent = LogEvent;

export interface HealthResponse {
  status: number;
  /** Parsed JSON body (the health endpoint always answers JSON), or null. */
  json: any;
}

export interface NodeProcess extends AuthnexusProcess {
  /** http://127.0.0.1:PORT of --health-listen */
  readonly healthUrl: string;
  readonly healthPort: number;
  /** GET on the health endpoint (/healthz, /readyz, /status). */
  health(path: string): Promise<HealthResponse>;
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

export async function startNodeProcess(options: StartNodeOptions): Promise<NodeProcess> {
  const args = [
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
  const proc = spawnAuthnexus(args, options.env ? { env: options.env } : {});
  await startedOrKilled(
    proc,
    proc.waitForEvent((e) => e.msg === "listener.bound" && e.listener === "health", options.startTimeoutMs ?? START_TIMEOUT_MS),
  );

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

  // Object.assign keeps the base object's getters (stdout, stderr, exitCode) live.
  return Object.assign(proc, { healthUrl, healthPort: options.healthPort, health });
}

/**
 * A `serve-node` child started from a downloaded deploy package, as an operator starts one on the
 * CP's host: the archive unpacked into a temp dir, the CP's SQLite Runtime DB shared, the
 * business port given; resolves once /readyz answers 200. `cleanup` removes the unpacked files.
 */
export async function startNodeFromArchive(
  archive: Buffer,
  options: { dataDir: string; businessPort: number; runtimeDbPath: string },
): Promise<{ node: NodeProcess; cleanup: () => Promise<void> }> {
  const unpacked = await unpackPackage(archive);
  mkdirSync(options.dataDir, { recursive: true });
  const node = await startNodeProcess({
    agentFile: unpacked.agentJsonPath,
    dataDir: options.dataDir,
    healthPort: await freePort(),
    extraArgs: [
      "--listen",
      `127.0.0.1:${options.businessPort}`,
      ...dbFlags("", { type: "sqlite", path: options.runtimeDbPath, busyTimeoutMs: 5000 }),
    ],
  }).catch(async (error: unknown) => {
    await unpacked.cleanup();
    throw error;
  });
  await waitFor("the node is ready", async () => (await node.health("/readyz")).status === 200, 30_000, 50);
  return { node, cleanup: unpacked.cleanup };
}
