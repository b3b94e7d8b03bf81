/**
 * A real `authnexus serve-cp` child process for end-to-end tests (see authnexus-process.ts for
 * the shared machinery): listeners on 127.0.0.1 port 0, plus `waitForListener` and `adminFetch`.
 */
import { randomBytes } from "node:crypto";
import { type AuthnexusProcess, freePort, type LogEvent, runCli, spawnAuthnexus, startedOrKilled } from "./authnexus-process.js";

export { CLI_PATH, type CliResult, REPO_ROOT, type RunOptions, runCli, runProcess } from "./authnexus-process.js";
export type CpEvent = LogEvent;

/** How long startCpProcess waits for the admin listener, ms. */
const START_TIMEOUT_MS = 30_000;

export interface AdminResponse {
  status: number;
  /** Parsed JSON body, or null for an empty / non-JSON body. */
  json: any;
  text: string;
  headers: Headers;
}

export interface AdminFetchOptions {
  token?: string;
  /** An object is sent as JSON; a string is sent verbatim (still labelled application/json). */
  body?: unknown;
  headers?: Record<string, string>;
}

export interface CpProcess extends AuthnexusProcess {
  /** http://127.0.0.1:PORT */
  readonly adminUrl: string;
  /** Waits for `listener.bound` of that listener; resolves with its "HOST:PORT". */
  waitForListener(name: "admin" | "node-api" | "ocsp", timeoutMs?: number): Promise<string>;
  adminFetch(method: string, path: string, options?: AdminFetchOptions): Promise<AdminResponse>;
}

export interface StartCpOptions {
  dataDir: string;
  extraArgs?: string[];
  /** Merged over process.env. */
  env?: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
  /** Options for the node binary itself (e.g. --cpu-prof), placed before the CLI path. */
  nodeArgs?: string[];
}

export async function startCpProcess(options: StartCpOptions): Promise<CpProcess> {
  const args = [
    "serve-cp",
    "--data-dir",
    options.dataDir,
    "--admin-listen",
    "127.0.0.1:0",
    "--cp-listen",
    "127.0.0.1:0",
    "--ocsp-listen",
    "127.0.0.1:0",
    "--public-cp-url",
    "https://localhost:9091",
    "--public-ocsp-url",
    "http://127.0.0.1:9092/ocsp/",
    "--log-format",
    "json",
    ...(options.extraArgs ?? []),
  ];
  const proc = spawnAuthnexus(args, {
    ...(options.env ? { env: options.env } : {}),
    ...(options.nodeArgs ? { nodeArgs: options.nodeArgs } : {}),
  });
  const waitForListener = async (name: string, timeoutMs = 15_000) => {
    const event = await proc.waitForEvent((e) => e.msg === "listener.bound" && e.listener === name, timeoutMs);
    if (typeof event.address !== "string") throw new Error(`listener.bound for ${name} has no address: ${JSON.stringify(event)}`);
    return event.address;
  };
  const adminUrl = `http://${await startedOrKilled(proc, waitForListener("admin", options.startTimeoutMs ?? START_TIMEOUT_MS))}`;

  const adminFetch = async (method: string, path: string, opts: AdminFetchOptions = {}): Promise<AdminResponse> => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
      headers["content-type"] ??= "application/json";
    }
    const response = await fetch(new URL(path, adminUrl), { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await response.text();
    let json: unknown = null;
    if (text !== "") {
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
    }
    return { status: response.status, json, text, headers: response.headers };
  };

  // Object.assign keeps the base object's getters (stdout, stderr, exitCode) live.
  return Object.assign(proc, { adminUrl, waitForListener: waitForListener as CpProcess["waitForListener"], adminFetch });
}

/**
 * A `serve-cp` child that nodes can reach (its node API and OCSP ports chosen free and named in
 * its public URLs, a master key of its own), set up with `ops setup` as root/`password`, with
 * both channel listeners bound. `dataDir` must exist.
 */
export async function startSetUpCpProcess(dataDir: string, password: string): Promise<CpProcess> {
  const cpPort = await freePort();
  const ocspPort = await freePort();
  const cp = await startCpProcess({
    dataDir,
    extraArgs: [
      "--cp-listen",
      `127.0.0.1:${cpPort}`,
      "--public-cp-url",
      `https://localhost:${cpPort}`,
      "--ocsp-listen",
      `127.0.0.1:${ocspPort}`,
      "--public-ocsp-url",
      `http://127.0.0.1:${ocspPort}/ocsp/`,
    ],
    env: { AUTHNEXUS_MASTER_KEY: randomBytes(32).toString("hex") },
  });
  const setup = await runCli(
    ["ops", "setup", "--admin-url", cp.adminUrl, "--data-dir", dataDir, "--username", "root", "--password-stdin"],
    {
      input: password,
    },
  );
  if (setup.code !== 0) {
    await cp.stop("SIGTERM");
    throw new Error(`ops setup failed: ${setup.stderr}`);
  }
  await cp.waitForListener("node-api");
  await cp.waitForListener("ocsp");
  return cp;
}
