/** `authnexus serve-node`: parse flags, resolve the node config, start the node, stop it on SIGINT/SIGTERM. */
import type { Command } from "commander";
import { resolveNodeConfig } from "../node/config.js";
import { startServerNode } from "../node/server-node.js";
import { createLogger } from "../shared/log/index.js";
import { systemClock } from "../shared/time/index.js";
import { addFlags, dbFlagSpecs, type FlagSpec, readFlags } from "./flags.js";
import { runUntilSignal } from "./process.js";

const NODE_FLAG_SPECS: FlagSpec[] = [
  {
    name: "agent",
    value: "file",
    description: "node_agent.json from the node's deploy package (required; the files it names are relative to it)",
  },
  { name: "data-dir", value: "dir", description: "data directory (the SQLite Runtime DB; default ./authnexus-data)" },
  { name: "health-listen", value: "host:port", description: "local health endpoint /healthz /readyz /status (default 127.0.0.1:9093)" },
  {
    name: "listen",
    value: "host:port",
    description: "business port for SDK clients (default 0.0.0.0:<business_port from the package>; port 0 = any free port)",
  },
  { name: "blacklist-fail-closed", value: null, description: "refuse every SDK request while the blacklist cannot be kept current" },
  { name: "function-workers", value: "n", description: "worker threads cloud functions run on (default 2)" },
  { name: "function-queue", value: "n", description: "cloud function calls that may wait for a worker before FUNCTION_BUSY (default 256)" },
  { name: "log-level", value: "level", description: "debug, info, warn or error" },
  { name: "log-format", value: "format", description: "json or pretty (default: pretty on a terminal)" },
  ...dbFlagSpecs("", "Runtime DB"),
];

export function registerServeNode(program: Command): void {
  const command = program
    .command("serve-node")
    .description(
      "run a server node: the business port for SDK clients, the CP agent (Channels 1-4), staged startup, local health endpoint",
    );
  addFlags(command, NODE_FLAG_SPECS).action(async () => {
    const config = resolveNodeConfig(readFlags(command, NODE_FLAG_SPECS), process.env);
    const log = createLogger({ category: "Server", level: config.logLevel, ...(config.logFormat ? { format: config.logFormat } : {}) });
    const node = await startServerNode(config, { clock: systemClock, log });
    await runUntilSignal(log, () => node.stop());
  });
}
