/**
 * The `authnexus` command line. Each subcommand lives in its own file and only parses flags and
 * calls a role's start function; errors end here as one clear line and a non-zero exit.
 */
import { Command } from "commander";
import { AuthNexusError } from "../shared/errors/index.js";
import { softwareVersion } from "../shared/version.js";
import { AdminApiError } from "./admin-client.js";
import { registerDev } from "./dev/command.js";
import { registerOps } from "./ops.js";
import { registerPki } from "./pki.js";
import { registerServeCp } from "./serve-cp.js";
import { registerServeNode } from "./serve-node.js";

// `authnexus pki certs | head` closes our stdout early: that is the reader's choice, not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

const program = new Command()
  .name("authnexus")
  .description("AuthNexus: multi-tenant authentication and operations backend")
  .version(softwareVersion())
  .showHelpAfterError();

registerServeCp(program);
registerServeNode(program);
registerDev(program);
registerPki(program);
registerOps(program);

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof AuthNexusError && error.code === "CONFIG_INVALID") {
    process.stderr.write(`authnexus: ${error.message}\n`);
    process.exit(2);
  }
  if (error instanceof AdminApiError) {
    process.stderr.write(`authnexus: ${error.code}: ${error.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`authnexus: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
