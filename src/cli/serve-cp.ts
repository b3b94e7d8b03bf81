import type { Command } from "commander";
import { resolveCpConfig } from "../cp/config.js";
import { startControlPlane } from "../cp/control-plane.js";
import { createLogger } from "../shared/log/index.js";
import { systemScheduler } from "../shared/time/index.js";
import { addFlags, dbFlagSpecs, type FlagSpec, readFlags } from "./flags.js";
import { runUntilSignal } from "./process.js";

const CP_FLAG_SPECS: FlagSpec[] = [
  {
    name: "data-dir",
    value: "dir",
    description: "data directory (SQLite files, console token, generated master key; default ./authnexus-data)",
  },
  { name: "admin-listen", value: "host:port", description: "admin API (default 127.0.0.1:9090)" },
  { name: "cp-listen", value: "host:port", description: "node API, mTLS (default 0.0.0.0:9091)" },
  { name: "ocsp-listen", value: "host:port", description: "OCSP responder (default 0.0.0.0:9092)" },
  { name: "public-cp-url", value: "url", description: "CP URL nodes use; its host goes into the CP certificate" },
  { name: "public-ocsp-url", value: "url", description: "OCSP URL put into certificates (AIA)" },
  { name: "master-key-file", value: "file", description: "file with the 32-byte master key (hex or base64); or set AUTHNEXUS_MASTER_KEY" },
  { name: "log-level", value: "level", description: "debug, info, warn or error" },
  { name: "log-format", value: "format", description: "json or pretty (default: pretty on a terminal)" },
  {
    name: "cert-rotation-grace",
    value: "seconds",
    description: "after a node acks a certificate rotation, how long its old CP client certificate is still accepted (default 600)",
  },
  { name: "cert-renew-at", value: "fraction", description: "renew node certificates at this fraction of their lifetime (default 0.7)" },
  { name: "cert-renew-jitter", value: "fraction", description: "± this fraction of the lifetime, fixed per certificate (default 0.1)" },
  {
    name: "cert-renew-check",
    value: "seconds",
    description: "how often to look for certificates due for renewal; 0 turns renewal off (default 3600)",
  },
  {
    name: "report-time-zone",
    value: "zone",
    description: "IANA time zone whose days the daily reports count, e.g. Europe/Berlin (default UTC; a request may pass tz)",
  },
  ...dbFlagSpecs("", "Control DB"),
  ...dbFlagSpecs("runtime-", "Runtime DB"),
];

export function registerServeCp(program: Command): void {
  const command = program.command("serve-cp").description("run the Control Plane: admin API, node API (Channels 1-3), OCSP responder");
  addFlags(command, CP_FLAG_SPECS).action(async () => {
    const config = resolveCpConfig(readFlags(command, CP_FLAG_SPECS), process.env);
    const log = createLogger({ category: "Server", level: config.logLevel, ...(config.logFormat ? { format: config.logFormat } : {}) });
    const cp = await startControlPlane(config, { scheduler: systemScheduler, log });
    if (cp.consoleToken) printConsoleToken(cp.consoleToken, cp.consoleTokenPath ?? "");
    await runUntilSignal(log, () => cp.stop());
  });
}

/** The one deliberate exception to "no secret on the console": the operator needs this token once. */
function printConsoleToken(token: string, file: string): void {
  process.stderr.write(
    [
      "",
      "==================================================================",
      " AuthNexus first-run setup",
      ` Console token: ${token}`,
      ` (also in ${file}, mode 0600; it is shown only this once)`,
      " Complete setup with `authnexus ops setup` or",
      " POST /admin/v1/setup/initialize",
      "==================================================================",
      "",
    ].join("\n"),
  );
}
