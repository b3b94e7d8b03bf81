/**
 * The node under test for the business-port benchmarks, and the two child processes that face
 * it. The node is real: test/helpers/deployment.ts starts a Control Plane and one server node in
 * this process (onboarded by the CP's job worker, its business port on 127.0.0.1, staged startup
 * through its first OCSP response), on SQLite by default or a throwaway PostgreSQL
 * (BENCH_DB=postgres). One application, its client certificate, and users made through the admin
 * API as an operator would; the connection limits and the login throttle raised through
 * PUT /admin/v1/configs/server_runtime_settings (the defaults allow 200 connections and 30 login
 * attempts a minute per IP, and every bench connection comes from 127.0.0.1).
 *
 * The load comes from another process (support/business-loadgen.ts) and the baseline is a bare
 * node:tls server in a third (support/bare-tls-server.ts over support/bare-tls.ts), both spoken
 * to with one JSON line per command. This process only drives them between phases: while a phase runs, its CPU is the
 * node's (plus the idle CP and its agent loops).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { type Kysely, sql } from "kysely";
import type { RuntimeSchema } from "../../../src/shared/db/index.js";
import { splitPemBundle } from "../../../src/shared/pki/index.js";
import { REPO_ROOT } from "../../helpers/cp-process.js";
import { type DbVariant, dbVariants, postgresVariant } from "../../helpers/databases.js";
import {
  type ClientMaterial,
  type DeployedNode,
  type Deployment,
  startDeployment,
  type TestApplication,
} from "../../helpers/deployment.js";
import { waitFor } from "../../helpers/node-agent.js";
import { type PostgresServer, startPostgres } from "../../helpers/postgres.js";
import { makeTempDir, type TempDir } from "../../helpers/temp-dir.js";
import { type BareTlsConfig, type BareTlsServer, startBareTlsServer } from "./bare-tls.js";
import type { LoadgenConfig, LoadgenUser } from "./business-loadgen.js";
import { processCpuSeconds } from "./cp-child.js";

export interface BusinessTargetOptions {
  label: string;
  /** Users created through the admin API (user-0 … user-N-1, one password each). */
  users: number;
  /** app_policy.max_devices_per_user (default 3): connections per user, each its own device. */
  maxDevicesPerUser?: number;
  /** server_runtime_settings: max_connections and max_connections_per_ip. */
  maxConnections: number;
}

export interface BusinessTarget {
  db: "sqlite" | "postgres";
  deployment: Deployment;
  node: DeployedNode;
  app: TestApplication;
  client: ClientMaterial;
  users: LoadgenUser[];
  /** The OCSP response the node staples (its stapler verified it: good, current). */
  staple: Buffer;
  dir: TempDir;
  /** Starts the load generator against the node (or another port: the baseline's). */
  startLoadgen(port?: number): Promise<JsonLineChild>;
  /** Starts the bare node:tls baseline in its own process, with the node's TLS material; answers carry the sample's sizes. */
  startBareServer(sample: { userId: string; username: string }): Promise<{ child: JsonLineChild; port: number }>;
  /** The same bare server inside this process (the node's), to tell the node's own work from its process's. */
  startInProcessBareServer(sample: { userId: string; username: string }): Promise<BareTlsServer>;
  stop(): Promise<void>;
}

/** The most server_runtime_settings allows. */
const LOGIN_ATTEMPTS_PER_MINUTE = 100_000;

export const LOADGEN_SCRIPT = fileURLToPath(new URL("./business-loadgen.ts", import.meta.url));
export const BARE_SERVER_SCRIPT = fileURLToPath(new URL("./bare-tls-server.ts", import.meta.url));

export async function startBusinessTarget(options: BusinessTargetOptions): Promise<BusinessTarget> {
  const dir = await makeTempDir(`authnexus-bench-${options.label}`);
  let postgres: PostgresServer | null = null;
  let variant: DbVariant;
  if (process.env.BENCH_DB === "postgres") {
    postgres = await startPostgres();
    variant = postgresVariant(postgres);
  } else variant = dbVariants()[0] as DbVariant;
  const children: JsonLineChild[] = [];
  const inProcess: BareTlsServer[] = [];
  let deployment: Deployment | null = null;
  const stop = async () => {
    await Promise.all([...children.splice(0).map((c) => c.stop()), ...inProcess.splice(0).map((s) => s.close())]);
    await deployment?.stop();
    await postgres?.stop();
    await dir.cleanup();
  };
  try {
    deployment = await startDeployment(variant, { label: `bench_${options.label}` });
    const node = await deployment.addNode("bench-node");
    const app = await deployment.createApp("bench-app", { max_devices_per_user: options.maxDevicesPerUser ?? 3 });
    // Every bench connection comes from 127.0.0.1, and a login throttle counts attempts in
    // flight per address: the limits are raised as for a deployment behind many addresses.
    await deployment.admin("PUT", "/configs/server_runtime_settings", {
      content: {
        max_connections: options.maxConnections,
        max_connections_per_ip: options.maxConnections,
        login_attempts_per_minute: LOGIN_ATTEMPTS_PER_MINUTE,
      },
    });
    // The test deployment's fast agent loops, back to the defaults: their checkins every 5 s
    // would otherwise be part of what the node does while measured.
    await deployment.admin("PUT", "/configs/cp_agent_runtime", { content: {} });
    const users: LoadgenUser[] = [];
    for (let i = 0; i < options.users; i += 8) {
      const batch = Array.from({ length: Math.min(8, options.users - i) }, (_, k) => ({
        username: `user-${i + k}`,
        password: `bench-password-${i + k}`,
      }));
      await Promise.all(batch.map((u) => deployment?.createUser(app.appId, u.username, u.password)));
      users.push(...batch);
    }
    const client = await deployment.issueClient(app.appId);
    await deployment.waitForApp(app.appId);
    const store = node.server.agent.store;
    await waitFor(
      "the node applied the bench's settings and policy",
      () =>
        store.serverRuntimeSettings().max_connections_per_ip === options.maxConnections &&
        store.serverRuntimeSettings().login_attempts_per_minute === LOGIN_ATTEMPTS_PER_MINUTE &&
        store.appPolicy(app.appId).max_devices_per_user === (options.maxDevicesPerUser ?? 3) &&
        store.cpAgentRuntime().checkin_interval_ms === 15_000,
      30_000,
    );
    // An experiment knob, off by default: try a SQLite setting on the node's Runtime DB connection
    // (e.g. BENCH_SQLITE_PRAGMA="wal_autocheckpoint = 0") without changing the product.
    const pragma = process.env.BENCH_SQLITE_PRAGMA;
    if (pragma && variant.name === "sqlite") {
      const db = (node.server.agent as unknown as { options: { db: Kysely<RuntimeSchema> } }).options.db;
      for (const one of pragma.split(";").filter((p) => p.trim())) await sql.raw(`PRAGMA ${one}`).execute(db);
    }
    const staple = await waitFor("a good OCSP staple", () =>
      node.server.agent.stapler.status().status === "good" ? node.server.currentStaple() : null,
    );

    const loadgenFile = (port: number) => {
      const file = join(dir.path, `loadgen-${port}.json`);
      const config: LoadgenConfig = {
        host: "127.0.0.1",
        port,
        certPem: client.certPem,
        keyPem: client.keyPem,
        caPem: client.serverCaPem,
        staple: staple.toString("base64"),
        appId: app.appId,
        secret: app.secret,
      };
      writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
      return file;
    };
    const pkg = node.server.pkg;
    // The same trust anchors as the node's listener: the package's app client CA plus every published bundle.
    const caPems = [...new Set([...pkg.appClientCaPems, ...store.allTrustBundlePems().flatMap((pem) => splitPemBundle(pem))])];

    const bareConfig = (sample: { userId: string; username: string }): BareTlsConfig => ({
      certPem: pkg.server.pem,
      keyPem: pkg.server.keyPem,
      caPems,
      staple: staple.toString("base64"),
      nodeId: pkg.manifest.node_id,
      userId: sample.userId,
      username: sample.username,
    });

    const target: BusinessTarget = {
      db: variant.name,
      deployment,
      node,
      app,
      client,
      users,
      staple,
      dir,
      async startLoadgen(port = node.address.port) {
        const child = await JsonLineChild.start("loadgen", LOADGEN_SCRIPT, [loadgenFile(port)], loadgenNodeArgs());
        children.push(child);
        return child;
      },
      async startBareServer(sample) {
        const file = join(dir.path, "bare-tls.json");
        writeFileSync(file, JSON.stringify(bareConfig(sample)), { mode: 0o600 });
        const nodeArgs = ["--expose-gc", ...(process.env.BENCH_BARE_NODE_ARGS?.split(" ").filter(Boolean) ?? [])];
        const child = await JsonLineChild.start("bare-tls", BARE_SERVER_SCRIPT, [file], nodeArgs);
        children.push(child);
        const { port } = (await child.next()) as { port: number };
        return { child, port };
      },
      async startInProcessBareServer(sample) {
        const server = await startBareTlsServer(bareConfig(sample));
        inProcess.push(server);
        return server;
      },
      stop,
    };
    return target;
  } catch (error) {
    await stop();
    throw error;
  }
}

function loadgenNodeArgs(): string[] {
  return process.env.BENCH_LOADGEN_NODE_ARGS?.split(" ").filter(Boolean) ?? [];
}

/** A child process that answers one JSON line per JSON line it is sent. */
export class JsonLineChild {
  private readonly lines: string[] = [];
  private readonly readers: Array<(line: string) => void> = [];
  private stderr = "";
  private readonly exited: Promise<void>;
  private exitCode: number | null = null;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const reader = this.readers.shift();
      if (reader) reader(line);
      else this.lines.push(line);
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-4000);
    });
    this.exited = new Promise((resolve) =>
      child.once("exit", (code) => {
        this.exitCode = code ?? -1;
        for (const reader of this.readers.splice(0)) reader(JSON.stringify({ error: `${name} exited (${code}): ${this.stderr}` }));
        resolve();
      }),
    );
  }

  static async start(name: string, script: string, args: string[], nodeArgs: string[] = []): Promise<JsonLineChild> {
    // From the repository root, where --import finds tsx.
    const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", script, ...args], {
      cwd: REPO_ROOT,
      stdio: ["pipe", "pipe", "pipe"],
      env: process.env,
    });
    const killOnExit = () => child.kill("SIGKILL");
    process.on("exit", killOnExit);
    child.once("exit", () => process.off("exit", killOnExit));
    return new JsonLineChild(name, child);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The next line the child prints, parsed; throws on {"error"}. */
  next(): Promise<any> {
    const line = this.lines.shift();
    const parse = (text: string) => {
      const parsed = JSON.parse(text) as { error?: string };
      if (parsed.error) throw new Error(`${this.name}: ${parsed.error}`);
      return parsed;
    };
    if (line !== undefined) return Promise.resolve().then(() => parse(line));
    if (this.exitCode !== null) return Promise.reject(new Error(`${this.name} exited (${this.exitCode}): ${this.stderr}`));
    return new Promise((resolve, reject) =>
      this.readers.push((text) => {
        try {
          resolve(parse(text));
        } catch (error) {
          reject(error);
        }
      }),
    );
  }

  call<T = any>(command: Record<string, unknown>): Promise<T> {
    this.child.stdin?.write(`${JSON.stringify(command)}\n`);
    return this.next();
  }

  /** utime + stime of the child so far, seconds. */
  cpuSeconds(): number {
    return processCpuSeconds(this.pid);
  }

  async stop(): Promise<void> {
    if (this.exitCode !== null) return;
    this.child.stdin?.end();
    const killer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    this.child.kill("SIGTERM");
    await this.exited;
    clearTimeout(killer);
  }
}

/** The node's warn and error log lines, distinct, most frequent first (for a bench's report or its failure). */
export function nodeWarnings(node: DeployedNode, limit = 8): string[] {
  const counts = new Map<string, number>();
  for (const event of node.events()) {
    if (event.level !== "warn" && event.level !== "error") continue;
    const error = typeof event.error === "string" ? ` error="${event.error.slice(0, 160)}"` : "";
    const key = `${event.level} [${event.category}] ${event.msg}${error}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([key, n]) => `${key} ×${n}`);
}

/** CPU time used on the whole machine so far, every core (user, nice, system, irq, softirq, steal from /proc/stat), seconds. */
export function machineBusySeconds(): number {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) / 100;
}

export interface CpuShares {
  wallS: number;
  /** CPU seconds over the window. */
  serverS: number;
  loadgenS: number;
  /** Everything else on the machine: the bench process when it is not the server, other processes. */
  otherS: number;
}

/**
 * Starts a CPU account of one measured window: the server (this process, or a child), the
 * loadgen child, and the rest of the machine — a phase where "other" is high shared its cores
 * with something else and is not to be trusted.
 */
export function cpuWindow(server: () => number, loadgen: JsonLineChild): () => CpuShares {
  const start = [performance.now(), server(), loadgen.cpuSeconds(), machineBusySeconds()] as const;
  return () => {
    const [wall, serverS, loadgenS, machine] = [performance.now(), server(), loadgen.cpuSeconds(), machineBusySeconds()];
    const used = { serverS: serverS - start[1], loadgenS: loadgenS - start[2] };
    return { wallS: (wall - start[0]) / 1000, ...used, otherS: Math.max(0, machine - start[3] - used.serverS - used.loadgenS) };
  };
}

/** This process's user + system CPU, seconds. */
export function ownCpuSeconds(): number {
  const used = process.cpuUsage();
  return (used.user + used.system) / 1e6;
}

let gcFunction: (() => void) | null = null;
/** A full garbage collection in this process (V8's gc(), enabled at run time). */
export function fullGc(): void {
  if (!gcFunction) {
    setFlagsFromString("--expose-gc");
    gcFunction = runInNewContext("gc") as () => void;
  }
  gcFunction();
  gcFunction();
}

export function ms(value: number, digits = 2): string {
  return Number.isFinite(value) ? `${value.toFixed(digits)} ms` : "—";
}
