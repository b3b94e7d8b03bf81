/**
 * A Control Plane in its own process for the node benchmarks, so the CP never shares an event
 * loop (or a core it could otherwise have) with the load the bench drives: `authnexus serve-cp`
 * from the built CLI (run `npm run build` first), on ports picked here, its log lines written
 * to a file as a deployment's would be (the bench process does not parse them, so its own CPU
 * goes to the load), setup completed and a root session opened over the admin API.
 *
 * Node identities are minted straight into the CP's SQLite Control DB by the bench process
 * (test/helpers/node-api.ts mintNode: a node row plus a cp_node_client_ca client certificate,
 * what the onboarding job issues for Channel 1–3, without the business certificate and the
 * package the job also builds), four at a time.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { join } from "node:path";
import type { Kysely } from "kysely";
import type { CpContext } from "../../../src/cp/services/context.js";
import { type CpTlsIdentity, loadCpTlsIdentity } from "../../../src/cp/services/pki/cp-identity.js";
import { loadActiveCa } from "../../../src/cp/services/pki/inventory.js";
import { type ControlSchema, openDatabase } from "../../../src/shared/db/index.js";
import { type CaProfile, issueLeafCertificate } from "../../../src/shared/pki/index.js";
import { systemClock } from "../../../src/shared/time/index.js";
import { canConnect, freePort } from "../../helpers/authnexus-process.js";
import { ROOT_PASSWORD } from "../../helpers/cp-context.js";
import { CLI_PATH, REPO_ROOT } from "../../helpers/cp-process.js";
import { mintNode, type NodeIdentity } from "../../helpers/node-api.js";
import { makeTempDir, type TempDir } from "../../helpers/temp-dir.js";

export interface BenchCpOptions {
  /** serve-cp --log-level (default info, as deployed). */
  logLevel?: string;
  /**
   * Options for the CP's node binary (e.g. --cpu-prof). The CP runs in the repository root:
   * with --perf-basic-prof also pass --logfile=/tmp/… --no-logfile-per-isolate, or V8 leaves
   * an isolate-*.log there.
   */
  nodeArgs?: string[];
}

export interface BenchCp {
  pid: number;
  dir: TempDir;
  /** https://127.0.0.1:PORT — the node API (9091) as nodes reach it. */
  cpUrl: string;
  ocspUrl: string;
  adminUrl: string;
  logFile: string;
  /** Admin API call as root; throws unless 2xx. */
  admin(method: string, path: string, body?: unknown): Promise<any>;
  /** The CP process's user + system CPU time so far, seconds (/proc/<pid>/stat). */
  cpuSeconds(): number;
  /** Mints `count` active nodes with client certificates in the Control DB. */
  mintNodes(count: number): Promise<NodeIdentity[]>;
  /** PEM of one CA (cp_server_ca is what nodes trust for 9091). */
  caPem(profile: CaProfile): Promise<string>;
  /** The CP's own 9091 TLS material (certificate, key, cp_server_ca, cp_node_client_ca). */
  tlsIdentity(): Promise<CpTlsIdentity>;
  /** A node_server certificate from tcp_server_ca (for packages; nodes here never serve it). */
  issueServerCertificate(): Promise<{ certPem: string; keyPem: string }>;
  /** Stops the CP; removes its directory unless BENCH_KEEP is set (then prints where it is). */
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 30_000;

export async function startBenchCp(options: BenchCpOptions = {}): Promise<BenchCp> {
  const dir = await makeTempDir("authnexus-node-bench");
  const masterKey = randomBytes(32);
  const [adminPort, cpPort, ocspPort] = [await freePort(), await freePort(), await freePort()];
  const logFile = join(dir.path, "cp.log");
  const logFd = fs.openSync(logFile, "a");
  const child = spawn(
    process.execPath,
    [
      ...(options.nodeArgs ?? []),
      CLI_PATH,
      "serve-cp",
      "--data-dir",
      dir.path,
      "--admin-listen",
      `127.0.0.1:${adminPort}`,
      "--cp-listen",
      `127.0.0.1:${cpPort}`,
      "--ocsp-listen",
      `127.0.0.1:${ocspPort}`,
      "--public-cp-url",
      `https://localhost:${cpPort}`,
      "--public-ocsp-url",
      `http://127.0.0.1:${ocspPort}/ocsp/`,
      "--log-format",
      "json",
      "--log-level",
      options.logLevel ?? "info",
    ],
    { cwd: REPO_ROOT, env: { ...process.env, AUTHNEXUS_MASTER_KEY: masterKey.toString("hex") }, stdio: ["ignore", logFd, "pipe"] },
  );
  fs.closeSync(logFd);
  const killOnExit = () => child.kill("SIGKILL");
  process.on("exit", killOnExit);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  try {
    const consoleToken = await consoleTokenFrom(child, logFile);
    const adminUrl = `http://127.0.0.1:${adminPort}`;
    const init = await fetch(`${adminUrl}/admin/v1/setup/initialize`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ console_token: consoleToken, admin_username: "root", admin_password: ROOT_PASSWORD }),
    });
    if (init.status !== 201) throw new Error(`setup failed: ${init.status} ${await init.text()}`);
    const login = await fetch(`${adminUrl}/admin/v1/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "root", password: ROOT_PASSWORD }),
    });
    const token = ((await login.json()) as { access_token: string }).access_token;
    await waitForPort(cpPort);

    const controlDb = await openDatabase<ControlSchema>({ type: "sqlite", path: join(dir.path, "control.db"), busyTimeoutMs: 10_000 });
    // What mintNode and the PKI inventory read from a CP context; the rest belongs to the CP process.
    const ctx = { controlDb: controlDb as Kysely<ControlSchema>, clock: systemClock, masterKey } as unknown as CpContext;
    const ticksPerSecond = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

    return {
      pid: child.pid ?? -1,
      dir,
      cpUrl: `https://127.0.0.1:${cpPort}`,
      ocspUrl: `http://127.0.0.1:${ocspPort}/ocsp/`,
      adminUrl,
      logFile,
      async admin(method, path, body) {
        const res = await fetch(`${adminUrl}/admin/v1${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        const text = await res.text();
        if (res.status < 200 || res.status > 299) throw new Error(`${method} ${path} → ${res.status} ${text}`);
        return text ? JSON.parse(text) : null;
      },
      cpuSeconds: () => processCpuSeconds(child.pid ?? -1, ticksPerSecond),
      async mintNodes(count) {
        const out: NodeIdentity[] = new Array(count);
        let next = 0;
        // A few at once: key generation and signing run on libuv's threads.
        const worker = async () => {
          for (let i = next++; i < count; i = next++) out[i] = await mintNode(ctx, { name: `bench-${i}` });
        };
        await Promise.all(Array.from({ length: 4 }, worker));
        return out;
      },
      caPem: async (profile) => (await loadActiveCa(ctx, profile)).certPem,
      tlsIdentity: () => loadCpTlsIdentity(ctx),
      async issueServerCertificate() {
        const issued = await issueLeafCertificate({
          profile: "node_server",
          issuer: await loadActiveCa(ctx, "tcp_server_ca"),
          commonName: "bench-node",
          sans: { dns: ["bench-node.test"] },
          ocspUrl: `http://127.0.0.1:${ocspPort}/ocsp/`,
          clock: systemClock,
        });
        return { certPem: issued.certPem, keyPem: issued.keyPem ?? "" };
      },
      async stop() {
        await controlDb.destroy().catch(() => undefined);
        const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        child.kill("SIGTERM");
        await exited;
        clearTimeout(killer);
        process.off("exit", killOnExit);
        if (process.env.BENCH_KEEP) console.log(`kept ${dir.path} (cp.log and the bench's own logs)`);
        else await dir.cleanup();
      },
    };
  } catch (error) {
    child.kill("SIGKILL");
    await exited;
    process.off("exit", killOnExit);
    await dir.cleanup();
    throw error;
  }
}

/** utime + stime of a process, seconds. Fields 14 and 15 of /proc/<pid>/stat (after the parenthesised name). */
export function processCpuSeconds(pid: number, ticksPerSecond = 100): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/** The setup banner on stderr carries the one-time console token. */
function consoleTokenFrom(child: ChildProcess, logFile: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let stderr = "";
    const timer = setTimeout(() => fail(new Error(`serve-cp printed no console token in ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    const fail = (error: Error) => {
      clearTimeout(timer);
      const log = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").slice(-3000) : "";
      reject(new Error(`${error.message}\n--- stderr ---\n${stderr.slice(-3000)}\n--- log ---\n${log}`));
    };
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
      const match = /Console token: (\S+)/.exec(stderr);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once("exit", (code) => fail(new Error(`serve-cp exited (code ${code}) before setup`)));
  });
}

async function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await canConnect(port))) {
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${START_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** "msg (kind) ×count" for every warn/error line of a JSON log file, most frequent first. */
export function summarizeWarnings(file: string, limit = 8): string[] {
  if (!fs.existsSync(file)) return [];
  const counts = new Map<string, number>();
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (!line.includes('"level":"warn"') && !line.includes('"level":"error"')) continue;
    try {
      const event = JSON.parse(line) as { level?: string; category?: string; msg?: string; kind?: string; loop?: string; error?: string };
      const key = `${event.level} [${event.category}] ${event.msg}${event.loop ? ` loop=${event.loop}` : ""}${event.kind ? ` kind=${event.kind}` : ""}${event.error ? ` error="${event.error.slice(0, 80)}"` : ""}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    } catch {
      // not a JSON line
    }
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([key, n]) => `${key} ×${n}`);
}

/** Nearest-rank percentile of an ascending array (ms values). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] ?? Number.NaN;
}

/** "load average: 1.2, 0.9, 0.8" from /proc/loadavg, for the report. */
export function loadAverage(): string {
  return fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}
