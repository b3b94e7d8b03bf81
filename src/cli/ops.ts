import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { consoleTokenPath } from "../cp/services/setup/setup.js";
import { DEFAULT_ADMIN_LISTEN, DEFAULT_DATA_DIR } from "../shared/config/defaults.js";
import { adminRequest } from "./admin-client.js";
import { registerOpsApps } from "./ops-apps.js";
import { registerOpsAudit } from "./ops-audit.js";
import { registerOpsBusiness } from "./ops-business.js";
import { registerOpsDb } from "./ops-db.js";
import { registerOpsNodes } from "./ops-nodes.js";
import { registerOpsProbe } from "./ops-probe.js";
import { registerOpsReports } from "./ops-reports.js";
import { registerOpsSession } from "./ops-session.js";
import { promptHidden, readAllStdin } from "./prompt.js";

interface SetupFlags {
  adminUrl?: string;
  dataDir?: string;
  consoleTokenFile?: string;
  username: string;
  passwordStdin?: boolean;
  organisation?: string;
  cpPublicHost?: string[];
}

export function registerOps(program: Command): void {
  const ops = program.command("ops").description("operations against a running Control Plane");
  ops
    .command("setup")
    .description("complete first-run setup: reads the console token from the data dir and creates the root agent")
    .requiredOption("--username <name>", "root agent username")
    .option("--admin-url <url>", "admin API base URL [env AUTHNEXUS_ADMIN_URL]")
    .option("--data-dir <dir>", "CP data dir holding console-token [env AUTHNEXUS_DATA_DIR]")
    .option("--console-token-file <file>", "console token file (default <data-dir>/console-token)")
    .option("--password-stdin", "read the root password from stdin instead of prompting")
    .option("--organisation <name>", "organisation name for CA subjects")
    .option("--cp-public-host <host...>", "extra DNS names/IPs for the CP server certificate")
    .action(async (flags: SetupFlags) => {
      const adminUrl = flags.adminUrl ?? process.env.AUTHNEXUS_ADMIN_URL ?? `http://${DEFAULT_ADMIN_LISTEN}`;
      const dataDir = flags.dataDir ?? process.env.AUTHNEXUS_DATA_DIR ?? DEFAULT_DATA_DIR;
      const tokenFile = flags.consoleTokenFile ? path.resolve(flags.consoleTokenFile) : consoleTokenPath(dataDir);
      const token = readConsoleToken(tokenFile);
      const password = flags.passwordStdin ? await readAllStdin() : await promptTwice();
      const result = await adminRequest<{ root_agent: { id: string; username: string }; ca_fingerprints: Record<string, string> }>(
        adminUrl,
        "POST",
        "/admin/v1/setup/initialize",
        {
          body: {
            console_token: token,
            admin_username: flags.username,
            admin_password: password,
            ...(flags.organisation ? { organisation_name: flags.organisation } : {}),
            ...(flags.cpPublicHost ? { cp_public_hosts: flags.cpPublicHost } : {}),
          },
        },
      );
      process.stdout.write(
        `Setup complete. Root agent: ${result.root_agent.username} (${result.root_agent.id})\nCA fingerprints (SHA-256):\n`,
      );
      for (const [profile, fingerprint] of Object.entries(result.ca_fingerprints))
        process.stdout.write(`  ${profile.padEnd(18)} ${fingerprint}\n`);
    });
  registerOpsSession(ops);
  registerOpsNodes(ops);
  registerOpsApps(ops);
  registerOpsAudit(ops);
  registerOpsBusiness(ops);
  registerOpsDb(ops);
  registerOpsProbe(ops);
  registerOpsReports(ops);
}

function readConsoleToken(file: string): string {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    throw new Error(`cannot read the console token at ${file}: is serve-cp running with this --data-dir, and is setup still pending?`);
  }
}

async function promptTwice(): Promise<string> {
  const first = await promptHidden("Root agent password: ");
  const second = await promptHidden("Repeat password: ");
  if (first !== second) throw new Error("the passwords do not match");
  return first;
}
