/**
 * `ops probe`: the synthetic check an operator runs from cron. With the SDK and an application's
 * SDK config it does what a vendor's program does against each node (or the one --node names):
 * a trusted TLS handshake with the OCSP staple verified, the hello, optionally a login, a
 * heartbeat and a logout, timing each step. It exits 0 when every step of every probed node
 * passed, else with the code of the first failure's class (PROBE_EXIT, documented in
 * docs/operations.md).
 */
import { performance } from "node:perf_hooks";
import type { Command } from "commander";
import { AuthNexusClient } from "../sdk/client.js";
import { loadSdkConfig, type NodeAddress, type SdkConfig } from "../sdk/config.js";
import { openTrustedSocket } from "../sdk/transport.js";
import { SDK_CONNECT_TIMEOUT_MS } from "../shared/config/defaults.js";
import { type ErrorCode, isAuthNexusError } from "../shared/errors/index.js";
import { systemScheduler } from "../shared/time/index.js";
import { positiveInt } from "./ops-common.js";
import { printJson, printTable } from "./output.js";
import { promptHidden, readAllStdin } from "./prompt.js";

/** Exit codes of `ops probe`, one per failure class. */
export const PROBE_EXIT = {
  ok: 0,
  /** Anything not classed below (a bug, an unexpected answer). */
  other: 1,
  /** The SDK config, its files or the flags are not usable; nothing was tried. */
  config: 2,
  /** The node could not be reached, or stopped answering (refused, timed out, closed, overloaded). */
  unreachable: 3,
  /** TLS refused: the node's certificate is not trusted, or its OCSP staple is missing, stale or revoked (a disabled node). */
  tls: 4,
  /** The login was refused (wrong password or card key, banned user, method disabled, device limit). */
  login: 5,
  /** The hello was refused: the application secret, the application's state or its client certificate. */
  application: 6,
  /** Logged in, but the heartbeat or the logout failed. */
  session: 7,
} as const;

type StepName = "tls" | "hello" | "login" | "heartbeat" | "logout";

interface StepResult {
  step: StepName;
  ok: boolean;
  ms: number;
  detail: string;
  error?: { code: string; message: string };
}

interface NodeResult {
  host: string;
  port: number;
  node_id: string | null;
  ok: boolean;
  exit_code: number;
  steps: StepResult[];
}

interface ProbeFlags {
  sdkConfig: string;
  appSecretStdin?: boolean;
  username?: string;
  passwordStdin?: boolean;
  cardKeyStdin?: boolean;
  node?: string;
  deviceId: string;
  timeoutMs: string;
  json?: boolean;
}

const REACHABILITY: ReadonlySet<string> = new Set<ErrorCode>([
  "NODE_UNREACHABLE",
  "REQUEST_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_LIMIT",
  "HANDSHAKE_TIMEOUT",
  "SECURITY_STATE_UNAVAILABLE",
  "IDLE_TIMEOUT",
]);
const TLS_REFUSALS: ReadonlySet<string> = new Set<ErrorCode>(["NODE_CERT_REFUSED", "NODE_STAPLE_REFUSED"]);
const APP_REFUSALS: ReadonlySet<string> = new Set<ErrorCode>([
  "APP_CREDENTIALS_INVALID",
  "APP_DISABLED",
  "CLIENT_CERT_REFUSED",
  "ACCESS_DENIED",
]);

/** The failure class of an error at a step. */
function exitCodeFor(step: StepName, code: string): number {
  if (code === "SDK_CONFIG_INVALID") return PROBE_EXIT.config;
  if (REACHABILITY.has(code)) return PROBE_EXIT.unreachable;
  if (TLS_REFUSALS.has(code)) return PROBE_EXIT.tls;
  if (step === "hello") return APP_REFUSALS.has(code) ? PROBE_EXIT.application : PROBE_EXIT.other;
  if (step === "login") return PROBE_EXIT.login;
  if (step === "heartbeat" || step === "logout") return PROBE_EXIT.session;
  return PROBE_EXIT.other;
}

export function registerOpsProbe(ops: Command): void {
  ops
    .command("probe")
    .description(
      "SDK handshake (TLS + OCSP staple, hello) and optionally a login, heartbeat and logout against each node; exit codes per failure class",
    )
    .requiredOption("--sdk-config <file>", "the application's authnexus-sdk.json (pki issue-client writes it)")
    .option("--app-secret-stdin", "read the application secret from stdin (else AUTHNEXUS_APP_SECRET, else a prompt)")
    .option("--username <name>", "log this user in (password from --password-stdin or a prompt)")
    .option("--password-stdin", "with --username: read the password from stdin (after the app secret's line when both come from stdin)")
    .option("--card-key-stdin", "log in with a card key read from stdin (after the app secret's line when both come from stdin)")
    .option("--node <host:port>", "probe only this node of the config (default: every node, in order)")
    .option("--device-id <id>", "the device id the probe logs in from", "authnexus-probe")
    .option("--timeout-ms <ms>", "limit for the TLS handshake and for each request", String(SDK_CONNECT_TIMEOUT_MS))
    .option("--json", "print the results as JSON")
    .action(async (flags: ProbeFlags) => {
      const outcome = await prepare(flags).catch((error: unknown) => {
        fail(PROBE_EXIT.config, error instanceof Error ? error.message : String(error));
        return null;
      });
      if (!outcome) return;
      const { config, nodes, secrets, timeoutMs } = outcome;
      const results: NodeResult[] = [];
      for (const node of nodes) results.push(await probeNode(config, node, secrets, flags, timeoutMs));
      const failed = results.find((r) => !r.ok);
      const exitCode = failed ? failed.exit_code : PROBE_EXIT.ok;
      if (flags.json) printJson({ ok: !failed, exit_code: exitCode, app_id: config.appId, nodes: results });
      else printResults(results);
      if (failed) {
        const step = failed.steps.find((s) => !s.ok);
        process.stderr.write(
          `authnexus: probe failed at ${step?.step ?? "?"} on ${failed.host}:${failed.port}: ${step?.error?.code ?? ""}: ${step?.error?.message ?? ""}\n`,
        );
      }
      process.exitCode = exitCode;
    });
}

function fail(code: number, message: string): void {
  process.stderr.write(`authnexus: ${message}\n`);
  process.exitCode = code;
}

interface Secrets {
  appSecret: string;
  password: string | null;
  cardKey: string | null;
}

async function prepare(flags: ProbeFlags) {
  const timeoutMs = positiveInt("--timeout-ms", flags.timeoutMs, 600_000);
  if (flags.cardKeyStdin && (flags.username || flags.passwordStdin))
    throw new Error("log in with --username or with --card-key-stdin, not both");
  if (flags.passwordStdin && !flags.username) throw new Error("--password-stdin needs --username");
  const config = await loadSdkConfig(flags.sdkConfig);
  let nodes = config.nodes;
  if (flags.node) {
    const chosen = config.nodes.filter((n) => `${n.host}:${n.port}` === flags.node);
    if (chosen.length === 0)
      throw new Error(
        `--node ${flags.node} is not in ${flags.sdkConfig}, which names ${config.nodes.map((n) => `${n.host}:${n.port}`).join(", ")}`,
      );
    nodes = chosen;
  }
  const secrets = await readSecrets(flags);
  return { config, nodes, secrets, timeoutMs };
}

/** Stdin holds one secret, or two lines (app secret first) when both come from it. */
async function readSecrets(flags: ProbeFlags): Promise<Secrets> {
  const loginFromStdin = flags.passwordStdin === true || flags.cardKeyStdin === true;
  let stdinLines: string[] = [];
  if (flags.appSecretStdin || loginFromStdin) stdinLines = (await readAllStdin()).split(/\r?\n/);
  const take = (what: string): string => {
    const line = stdinLines.shift();
    if (line === undefined || line === "") throw new Error(`stdin holds no ${what}`);
    return line;
  };
  const appSecret = flags.appSecretStdin
    ? take("application secret")
    : process.env.AUTHNEXUS_APP_SECRET || (await promptHidden("Application secret: "));
  let password: string | null = null;
  let cardKey: string | null = null;
  if (flags.username) password = flags.passwordStdin ? take("password") : await promptHidden(`Password for ${flags.username}: `);
  if (flags.cardKeyStdin) cardKey = take("card key");
  return { appSecret, password, cardKey };
}

async function probeNode(
  config: SdkConfig,
  node: NodeAddress,
  secrets: Secrets,
  flags: ProbeFlags,
  timeoutMs: number,
): Promise<NodeResult> {
  const steps: StepResult[] = [];
  const result: NodeResult = { host: node.host, port: node.port, node_id: null, ok: false, exit_code: PROBE_EXIT.ok, steps };
  const step = async (name: StepName, work: () => Promise<string>): Promise<boolean> => {
    const started = performance.now();
    try {
      const detail = await work();
      steps.push({ step: name, ok: true, ms: elapsed(started), detail });
      return true;
    } catch (error) {
      const code = isAuthNexusError(error) ? error.code : "UNEXPECTED";
      const message = error instanceof Error ? error.message : String(error);
      steps.push({ step: name, ok: false, ms: elapsed(started), detail: code, error: { code, message } });
      result.exit_code = exitCodeFor(name, code);
      return false;
    }
  };

  // TCP + TLS + staple + pins, exactly as the SDK opens a connection, on its own.
  const tlsOk = await step("tls", async () => {
    const { socket, staple } = await openTrustedSocket(node, config.trust, { timeoutMs, scheduler: systemScheduler });
    const protocol = socket.getProtocol() ?? "TLS";
    socket.destroy();
    return `${protocol}, staple ${staple.kind}`;
  });
  if (!tlsOk) return result;

  let client: AuthNexusClient | null = null;
  try {
    // AuthNexusClient.connect: its own handshake, then the hello with the application's credentials.
    const helloOk = await step("hello", async () => {
      client = await AuthNexusClient.connect({
        config: { ...config, nodes: [node] },
        appSecret: secrets.appSecret,
        deviceId: flags.deviceId,
        reconnect: false,
        connectTimeoutMs: timeoutMs,
        requestTimeoutMs: timeoutMs,
      });
      const connected = client.node;
      result.node_id = connected?.nodeId ?? null;
      return `node ${connected?.nodeId ?? "?"}, heartbeat every ${connected?.heartbeatIntervalMs ?? "?"} ms`;
    });
    if (!helloOk || !client) return result;
    const c: AuthNexusClient = client;
    const loggingIn = secrets.password !== null || secrets.cardKey !== null;
    if (loggingIn) {
      const loginOk = await step("login", async () => {
        const session =
          secrets.cardKey !== null
            ? await c.loginCard(secrets.cardKey)
            : await c.loginPassword(flags.username as string, secrets.password as string);
        return `${session.method} login, user ${session.userId ?? "-"}`;
      });
      if (!loginOk) return result;
    }
    if (!(await step("heartbeat", async () => `answered, node clock ${new Date(await c.heartbeat()).toISOString()}`))) return result;
    const logout = async () => {
      await c.logout();
      return "session ended";
    };
    if (loggingIn && !(await step("logout", logout))) return result;
    result.ok = true;
    return result;
  } finally {
    await (client as AuthNexusClient | null)?.close().catch(() => undefined);
  }
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

function printResults(results: NodeResult[]): void {
  const rows = results.flatMap((r) => r.steps.map((s) => ({ node: `${r.host}:${r.port}`, ...s })));
  printTable(
    [
      { header: "NODE", value: (s: (typeof rows)[number]) => s.node },
      { header: "STEP", value: (s) => s.step },
      { header: "RESULT", value: (s) => (s.ok ? "ok" : "FAILED") },
      { header: "MS", value: (s) => s.ms.toFixed(1) },
      { header: "DETAIL", value: (s) => (s.error ? `${s.error.code}: ${s.error.message}` : s.detail) },
    ],
    rows,
  );
}
