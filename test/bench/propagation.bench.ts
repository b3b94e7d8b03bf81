/**
 * Propagation of an auth-epoch bump to a fleet of nodes (docs/benchmarks.md): a real
 * `authnexus serve-cp` in a child process, and N (default 200) CP agents — serve-node's own
 * CpAgent — in this process. Each agent has its own CpClient (its own mTLS pools: one for the
 * short calls, one holding its SSE stream), its own cursor rows in one shared Runtime DB file
 * (SQLite, as the nodes of one host share it) and its own in-memory caches; it logs at info
 * to a file, as serve-node would.
 *
 * One sample = the time from just before the admin's POST /admin/v1/security/auth-epochs to
 * the moment one node has the new epoch in its in-memory cache. The agent's "delta.applied"
 * event fires only after the Runtime DB transaction holding the page and the cursor committed
 * and the cache was updated, so that is "applied". N nodes × K bumps samples per mode:
 *  - healthy, warm: every SSE stream up; all polls (checkin included) at 10 minutes, so only
 *    the epoch.bumped hint and the pull it triggers can explain a delivery. Bumps 50–300 ms
 *    apart, so each node's short-call connection is still open from the previous pull;
 *  - healthy, cold: the same, bumps ≥ 5.5 s apart: the CP's node listener has closed each
 *    node's idle connection (Node's default 5 s keep-alive), so every pull starts with a new
 *    mTLS handshake — the usual case in production, where the documented polls are 5 s or longer;
 *  - degraded: no node can hold its stream. The seam is the one test/integration/
 *    node-agent.test.ts uses for "SSE cut": the agent's openEventStream fails with a network
 *    error, so the subscriber degrades and retries exactly as when a firewall drops long-lived
 *    connections (node and CP share one URL and one TLS port, so a proxy cannot drop only the
 *    stream). Polls fall back to the documented degraded intervals: 800 ms epochs, 5 s blacklist
 *    (commands and configs tighten to 5 s too). Measured after the fleet has settled (6 s);
 *    bumps are spaced by random pauses so they land at random phases of the polls.
 * Per sample the bench also records when the node's pull that brought the change was sent and
 * answered (by wrapping the agent's CpClient.pullDelta, timing only), to show where the time
 * goes: before the pull (hint delivery or poll wait), the pull's round trip (CP work and
 * queueing), and after the answer (validation, the Runtime DB transaction, the cache).
 *
 * Run: npm run build && node --import tsx test/bench/propagation.bench.ts [nodes=200] [bumps=20] [cold-bumps=5]
 *      (BENCH_VERBOSE=1 prints every bump; BENCH_KEEP=1 keeps the logs; BENCH_CP_LOG_LEVEL=warn quiets
 *      the CP; BENCH_CP_NODE_ARGS="…" passes options to the CP's node binary, e.g. --cpu-prof)
 */

import fs from "node:fs";
import { join } from "node:path";
import type { Kysely } from "kysely";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import { CpAgent } from "../../src/node/agent/agent.js";
import { CpCallError } from "../../src/node/agent/cp-call-error.js";
import { type LoadedAgentPackage, loadAgentPackage } from "../../src/node/package/load-agent-package.js";
import { migrateDatabase, openDatabase, type RuntimeSchema } from "../../src/shared/db/index.js";
import { createLogger } from "../../src/shared/log/index.js";
import { realScheduler, systemClock } from "../../src/shared/time/index.js";
import { idleBusinessPlane } from "../helpers/business-plane.js";
import { type NodePki, type WrittenPackage, writeAgentPackage } from "../helpers/node-agent.js";
import { type BenchCp, loadAverage, percentile, startBenchCp, summarizeWarnings } from "./support/cp-child.js";

const NODES = Number(process.argv[2] ?? 200);
const BUMPS = Number(process.argv[3] ?? 20);
const COLD_BUMPS = Number(process.argv[4] ?? 5);
/** Agents started at once (each does two TLS handshakes and six calls to come up). */
const START_BATCH = 25;
/** A bump that has not reached every node by then counts the missing ones as misses. */
const BUMP_TIMEOUT_MS = 10_000;
const SLOW_MS = 600_000;
/** Past Node's default 5 s server keep-alive, so every node's idle connection is gone. */
const COLD_PAUSE_MS = 5500;
/** After the cut: past the first 5 s wave of blacklist/command/config polls. */
const DEGRADED_SETTLE_MS = 6000;
/** Healthy polls so slow that only a hint explains a delivery; the documented degraded intervals. */
const AGENT_RUNTIME = {
  checkin_interval_ms: SLOW_MS,
  epoch_poll_ms: SLOW_MS,
  blacklist_poll_ms: SLOW_MS,
  command_poll_ms: SLOW_MS,
  config_poll_ms: SLOW_MS,
  degraded_epoch_poll_ms: 800,
  degraded_blacklist_poll_ms: 5000,
};

type Mode = "healthy, warm" | "healthy, cold" | "degraded";
const TARGET_P99_MS: Record<Mode, number> = { "healthy, warm": 300, "healthy, cold": 300, degraded: 1500 };

/** Times in ms since t0, NaN until seen. */
interface Target {
  user: string;
  t0: number;
  applied: Float64Array;
  pullSent: Float64Array;
  pullAnswered: Float64Array;
  remaining: number;
  resolve: () => void;
}
interface ModeResult {
  mode: Mode;
  bumps: number;
  applied: number[];
  beforePull: number[];
  roundTrip: number[];
  afterAnswer: number[];
  misses: number;
  postMs: number[];
  hintsPerNode: number;
  epochPullsPerNode: number;
  cpCpuS: number;
  benchCpuS: number;
  wallS: number;
}

let target: Target | null = null;

const cp = await startBenchCp({
  logLevel: process.env.BENCH_CP_LOG_LEVEL ?? "info",
  nodeArgs: process.env.BENCH_CP_NODE_ARGS?.split(" ").filter(Boolean) ?? [],
});
const packages: WrittenPackage[] = [];
const agents: CpAgent[] = [];
let runtimeDb: Kysely<RuntimeSchema> | null = null;
const agentLogFd = fs.openSync(join(cp.dir.path, "agents.log"), "a");
try {
  console.log(`load average at start: ${loadAverage()}`);
  await cp.admin("PUT", "/configs/cp_agent_runtime", { content: AGENT_RUNTIME });
  let started = performance.now();
  const pkgs = await buildPackages(cp, NODES);
  console.log(`${NODES} nodes minted (rows + client certificates) and packages loaded in ${Math.round(performance.now() - started)} ms`);

  const dbPath = join(cp.dir.path, "nodes-runtime.db");
  runtimeDb = await openDatabase<RuntimeSchema>({ type: "sqlite", path: dbPath, busyTimeoutMs: 5000 });
  await migrateDatabase(runtimeDb as Kysely<unknown>, runtimeMigrationSet, dbPath);
  started = performance.now();
  await startAgents(pkgs, runtimeDb);
  console.log(`${NODES} agents up (checkin, configs applied, SSE connected) in ${Math.round(performance.now() - started)} ms`);

  const results: ModeResult[] = [];
  // Untimed: opens every node's short-call connection for the warm mode.
  await measure("healthy, warm", 1, () => 0);
  results.push(await measure("healthy, warm", BUMPS, () => 50 + Math.random() * 250));
  results.push(await measure("healthy, cold", COLD_BUMPS, () => COLD_PAUSE_MS + Math.random() * 500));
  await cutEveryStream();
  await sleep(DEGRADED_SETTLE_MS);
  results.push(await measure("degraded", BUMPS, () => Math.random() * 1000));
  printTables(results);
  console.log(`load average at end: ${loadAverage()}`);
  for (const [who, file] of [
    ["agents", join(cp.dir.path, "agents.log")],
    ["CP", cp.logFile],
  ] as const) {
    const lines = summarizeWarnings(file).filter((line) => !line.includes("sse.connect_failed") && !line.includes("setup required"));
    console.log(`${who}: ${lines.length === 0 ? "no warnings beyond the intended SSE failures" : "warnings and errors logged:"}`);
    for (const line of lines) console.log(`  ${line}`);
  }
} finally {
  await Promise.all(agents.map((a) => a.stop().catch(() => undefined)));
  await runtimeDb?.destroy();
  fs.closeSync(agentLogFd);
  await Promise.all(packages.map((p) => p.dir.cleanup()));
  await cp.stop();
}

/** Node rows and client certificates in the Control DB, one deploy package per node on disk, each loaded and checked by serve-node's loader. */
async function buildPackages(benchCp: BenchCp, count: number): Promise<LoadedAgentPackage[]> {
  const [identities, server, cpCa, nodeCa, tcpCa, appCa] = await Promise.all([
    benchCp.mintNodes(count),
    benchCp.issueServerCertificate(),
    benchCp.caPem("cp_server_ca"),
    benchCp.caPem("cp_node_client_ca"),
    benchCp.caPem("tcp_server_ca"),
    benchCp.caPem("app_client_ca"),
  ]);
  const loaded: LoadedAgentPackage[] = [];
  for (const identity of identities) {
    // writeAgentPackage reads only certPem/keyPem of each entry. The business certificate is
    // shared: these agents never serve it (no OCSP stapling here).
    const pki = {
      cas: {
        cp_server_ca: { certPem: cpCa },
        cp_node_client_ca: { certPem: nodeCa },
        tcp_server_ca: { certPem: tcpCa },
        app_client_ca: { certPem: appCa },
      },
      client: { certPem: identity.certPem, keyPem: identity.keyPem },
      server,
    } as unknown as NodePki;
    const written = await writeAgentPackage(pki, identity.nodeId, {
      manifest: { cp_url: benchCp.cpUrl, ocsp_url: benchCp.ocspUrl, node_name: `bench-${identity.nodeId.slice(-6)}` },
    });
    packages.push(written);
    loaded.push(await loadAgentPackage(written.agentFile, systemClock));
  }
  return loaded;
}

async function startAgents(pkgs: LoadedAgentPackage[], db: Kysely<RuntimeSchema>): Promise<void> {
  const log = createLogger({ category: "Server", level: "info", format: "json", sink: (line) => fs.writeSync(agentLogFd, `${line}\n`) });
  const scheduler = realScheduler(systemClock);
  for (let i = 0; i < pkgs.length; i += START_BATCH) {
    await Promise.all(
      pkgs.slice(i, i + START_BATCH).map(async (pkg, offset) => {
        const agent = new CpAgent({
          pkg,
          db,
          scheduler,
          log: log.with({ node_id: pkg.manifest.node_id }),
          business: idleBusinessPlane(db, systemClock).plane,
        });
        agents[i + offset] = agent;
        watch(agent, i + offset);
        await agent.loadState();
        await agent.connect();
        await agent.startChannels();
      }),
    );
  }
  await waitUntil(
    "every agent on SSE with the bench cp_agent_runtime applied",
    () => agents.every((a) => a.sse.connected && a.store.cpAgentRuntime().epoch_poll_ms === SLOW_MS),
    30_000,
  );
  // The loops' first pulls (started with startChannels) finish before the first bump.
  await sleep(1000);
}

/** Records, for the current bump, when this node applied it and when the pull that brought it was sent and answered. */
function watch(agent: CpAgent, index: number): void {
  agent.events.on("delta.applied", (applied) => {
    const at = performance.now();
    const t = target;
    if (applied.stream !== "auth-epochs" || !t || !Number.isNaN(t.applied[index] ?? 0)) return;
    if (agent.epochs.epochOf(t.user) === null) return;
    t.applied[index] = at - t.t0;
    t.remaining -= 1;
    if (t.remaining === 0) t.resolve();
  });
  const client = agent.client;
  const pullDelta = client.pullDelta.bind(client);
  client.pullDelta = (async (stream, since, limit) => {
    const sent = performance.now();
    const page = await pullDelta(stream, since, limit);
    const t = target;
    if (
      t &&
      stream === "auth-epochs" &&
      Number.isNaN(t.pullAnswered[index] ?? 0) &&
      (page.changes as { user_id?: string }[]).some((c) => c.user_id === t.user)
    ) {
      t.pullSent[index] = sent - t.t0;
      t.pullAnswered[index] = performance.now() - t.t0;
    }
    return page;
  }) as typeof client.pullDelta;
}

/** Every node's stream fails from now on (connect attempts error out locally); the current one is cut. */
async function cutEveryStream(): Promise<void> {
  for (const agent of agents) {
    agent.client.openEventStream = async () => {
      throw new CpCallError("network", "SSE unavailable (benchmark: stream cut for every node)");
    };
    agent.sse.dropConnection();
  }
  await waitUntil("every agent degraded", () => agents.every((a) => a.sse.status().state === "degraded"), 10_000);
}

async function measure(mode: Mode, bumps: number, pauseMs: () => number): Promise<ModeResult> {
  const result: ModeResult = {
    mode,
    bumps,
    applied: [],
    beforePull: [],
    roundTrip: [],
    afterAnswer: [],
    misses: 0,
    postMs: [],
    hintsPerNode: 0,
    epochPullsPerNode: 0,
    cpCpuS: 0,
    benchCpuS: 0,
    wallS: 0,
  };
  const hints = () => agents.reduce((sum, a) => sum + a.sse.status().hintsReceived, 0);
  const epochPulls = () => agents.reduce((sum, a) => sum + (a.status().loops["auth-epochs"]?.runs ?? 0), 0);
  const [hintsBefore, pullsBefore, cpuBefore, benchBefore, wallBefore] = [
    hints(),
    epochPulls(),
    cp.cpuSeconds(),
    process.cpuUsage(),
    performance.now(),
  ];
  for (let k = 0; k < bumps; k++) {
    await sleep(pauseMs());
    const user = `usr_bench_${mode.replace(/\W+/g, "_")}_${k}_${Math.random().toString(36).slice(2, 8)}`;
    let resolve!: () => void;
    const all = new Promise<void>((r) => {
      resolve = r;
    });
    const nan = () => new Float64Array(agents.length).fill(Number.NaN);
    const current: Target = { user, t0: 0, applied: nan(), pullSent: nan(), pullAnswered: nan(), remaining: agents.length, resolve };
    target = current;
    current.t0 = performance.now();
    const change = await cp.admin("POST", "/security/auth-epochs", { user_id: user });
    result.postMs.push(performance.now() - current.t0);
    if (change.user_id !== user) throw new Error(`unexpected bump answer ${JSON.stringify(change)}`);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, BUMP_TIMEOUT_MS)))]);
    clearTimeout(timer);
    target = null;
    collect(result, current, k);
  }
  const benchCpu = process.cpuUsage(benchBefore);
  result.hintsPerNode = (hints() - hintsBefore) / agents.length;
  result.epochPullsPerNode = (epochPulls() - pullsBefore) / agents.length;
  result.cpCpuS = cp.cpuSeconds() - cpuBefore;
  result.benchCpuS = (benchCpu.user + benchCpu.system) / 1e6;
  result.wallS = (performance.now() - wallBefore) / 1000;
  for (const list of [result.applied, result.beforePull, result.roundTrip, result.afterAnswer, result.postMs]) list.sort((a, b) => a - b);
  return result;
}

function collect(result: ModeResult, bump: Target, k: number): void {
  const applied: number[] = [];
  for (let i = 0; i < agents.length; i++) {
    const at = bump.applied[i] ?? Number.NaN;
    if (Number.isNaN(at)) {
      result.misses += 1;
      continue;
    }
    applied.push(at);
    const [sent, answered] = [bump.pullSent[i] ?? Number.NaN, bump.pullAnswered[i] ?? Number.NaN];
    if (Number.isNaN(answered)) continue;
    result.beforePull.push(Math.max(0, sent));
    result.roundTrip.push(answered - Math.max(0, sent));
    result.afterAnswer.push(at - answered);
  }
  result.applied.push(...applied);
  if (process.env.BENCH_VERBOSE) {
    applied.sort((a, b) => a - b);
    console.log(
      `  ${result.mode} bump ${k}: POST ${result.postMs.at(-1)?.toFixed(0)} ms, first ${applied[0]?.toFixed(0)} ms, p50 ${percentile(applied, 50).toFixed(0)} ms, last ${applied.at(-1)?.toFixed(0)} ms, missing ${agents.length - applied.length}`,
    );
  }
}

function printTables(results: ModeResult[]): void {
  const ms = (v: number) => (Number.isFinite(v) ? `${v.toFixed(0)} ms` : "-");
  const col = (text: string, width: number) => text.padStart(width);
  console.log("");
  console.log(`Epoch bump → applied on every node (${NODES} nodes; samples = nodes × bumps)`);
  console.log(
    `${"mode".padEnd(14)}${col("bumps", 6)}${col("samples", 8)}${col("p50", 9)}${col("p90", 9)}${col("p99", 9)}${col("max", 9)}${col("target p99", 17)}${col("misses", 7)}${col("admin POST p50", 15)}${col("hints/node", 11)}${col("epoch pulls/node", 17)}${col("CP CPU", 8)}${col("bench CPU", 10)}`,
  );
  for (const r of results) {
    const p99 = percentile(r.applied, 99);
    const verdict = r.misses === 0 && p99 <= TARGET_P99_MS[r.mode] ? "ok" : "MISSED";
    console.log(
      `${r.mode.padEnd(14)}${col(String(r.bumps), 6)}${col(String(r.applied.length), 8)}${col(ms(percentile(r.applied, 50)), 9)}${col(ms(percentile(r.applied, 90)), 9)}${col(ms(p99), 9)}${col(ms(r.applied.at(-1) ?? Number.NaN), 9)}${col(`≤ ${TARGET_P99_MS[r.mode]} ms ${verdict}`, 17)}${col(String(r.misses), 7)}${col(ms(percentile(r.postMs, 50)), 15)}${col(r.hintsPerNode.toFixed(1), 11)}${col(r.epochPullsPerNode.toFixed(1), 17)}${col(`${Math.round((100 * r.cpCpuS) / r.wallS)}%`, 8)}${col(`${Math.round((100 * r.benchCpuS) / r.wallS)}%`, 10)}`,
    );
  }
  console.log("");
  console.log(
    "Where the time goes, p50 / p99 (ms): bump → pull sent (hint delivery or poll wait) | pull round trip (CP work + queueing) | answer → applied (validation, Runtime DB transaction, cache; agents share this process)",
  );
  for (const r of results) {
    const pair = (list: number[]) => `${ms(percentile(list, 50))} / ${ms(percentile(list, 99))}`;
    console.log(`${r.mode.padEnd(14)}${col(pair(r.beforePull), 22)}${col(pair(r.roundTrip), 22)}${col(pair(r.afterAnswer), 22)}`);
  }
  console.log("(CP CPU / bench CPU: process CPU time over the mode's wall time, pauses included; 100% = one core of 2.)");
}

async function waitUntil(what: string, probe: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
