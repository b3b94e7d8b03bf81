/**
 * What `authnexus dev` prints once everything is up: where things are, the credentials, and
 * commands to copy — the SDK snippet that logs the demo user in and a curl login against the
 * admin API. Pure formatting: every value arrives in DevSummary.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface DevSummary {
  dir: string;
  statePath: string;
  /** Log files, or null when the logs go to stderr (--verbose). */
  logs: { cp: string; node: string } | null;
  adminUrl: string;
  admin: { username: string; password: string };
  node: { id: string; business: string; healthUrl: string };
  application: { id: string; name: string; secret: string };
  sdkConfigPath: string;
  demoUser: { id: string; username: string; password: string };
  /** The directory the `authnexus` package lives in: where `import "authnexus/sdk"` resolves. */
  packageRoot: string;
  /** Things the operator should know (a password that no longer works, a disabled application). */
  warnings: string[];
}

export const SNIPPET_DEVICE_ID = "authnexus-dev-snippet";

/** POSIX shell single quotes: safe for any text, including quotes of its own. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** A one-line shell command that logs the demo user in through the SDK and prints who it is. */
export function sdkSnippet(summary: Pick<DevSummary, "packageRoot" | "sdkConfigPath" | "application" | "demoUser">): string {
  const js = [
    'import { AuthNexusClient } from "authnexus/sdk";',
    `const client = await AuthNexusClient.connect({ config: ${JSON.stringify(summary.sdkConfigPath)}, appSecret: ${JSON.stringify(summary.application.secret)}, deviceId: ${JSON.stringify(SNIPPET_DEVICE_ID)} });`,
    `const session = await client.loginPassword(${JSON.stringify(summary.demoUser.username)}, ${JSON.stringify(summary.demoUser.password)});`,
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the snippet's own template literal, printed as is
    "console.log(`logged in as ${session.username} (${session.userId})`);",
    "await client.close();",
  ].join(" ");
  return `cd ${shellQuote(summary.packageRoot)} && node --input-type=module -e ${shellQuote(js)}`;
}

/** A curl command that logs the admin in and prints the token pair. */
export function adminLoginCommand(summary: Pick<DevSummary, "adminUrl" | "admin">): string {
  const body = JSON.stringify({ username: summary.admin.username, password: summary.admin.password });
  return `curl -s -X POST ${summary.adminUrl}/auth/login -H 'content-type: application/json' -d ${shellQuote(body)}`;
}

export function formatSummary(summary: DevSummary): string {
  const lines = [
    "",
    "AuthNexus development deployment is ready (a Control Plane and one node in this process).",
    "",
    `  Folder        ${summary.dir}`,
    `  State         ${summary.statePath} (0600: holds every secret below)`,
    summary.logs ? `  Logs          ${summary.logs.cp}` : "  Logs          stderr (--verbose)",
    ...(summary.logs ? [`                ${summary.logs.node}`] : []),
    "",
    `  Admin API     ${summary.adminUrl}`,
    `    username    ${summary.admin.username}`,
    `    password    ${summary.admin.password}`,
    `  Node          ${summary.node.id}`,
    `    business    ${summary.node.business} (SDK connections, mTLS)`,
    `    health      ${summary.node.healthUrl}`,
    `  Application   ${summary.application.id} (${summary.application.name})`,
    `    secret      ${summary.application.secret}`,
    `    SDK config  ${summary.sdkConfigPath}`,
    `  Demo user     ${summary.demoUser.username} (${summary.demoUser.id})`,
    `    password    ${summary.demoUser.password}`,
    "",
    ...summary.warnings.map((w) => `  warning: ${w}`),
    ...(summary.warnings.length > 0 ? [""] : []),
    "Log the demo user in with the SDK (after `npm install`):",
    "",
    `  ${sdkSnippet(summary)}`,
    "",
    "Log in to the admin API:",
    "",
    `  ${adminLoginCommand(summary)}`,
    "",
    "Press Ctrl-C to stop. Running `authnexus dev` again reuses this folder and everything in it.",
    "",
  ];
  return lines.join("\n");
}

/** The nearest directory above this file whose package.json is the authnexus package. */
export function findPackageRoot(): string {
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "authnexus") return dir;
    } catch {
      // not here; keep walking up
    }
    if (path.dirname(dir) === dir) return process.cwd();
  }
}
