/**
 * Checkin cost (docs/benchmarks.md): how many Channel 1 checkins one CP process sustains. A
 * real `authnexus serve-cp` runs in a child process (SQLite Control DB, log level info as
 * deployed, its log going to a file); this process drives it with N nodes (default 50), each
 * on its own keep-alive mTLS connection (one undici Client per node with the node's client
 * certificate) and one request in flight at a time, for D seconds. Every checkin body is a
 * valid checkinRequest, shaped like serve-node's own (applied config versions, cursors,
 * metrics, metadata, OCSP state).
 *
 * In the same run, the same connections drive a baseline: GET on an unknown sub-path of the
 * node's own prefix, which goes through everything a checkin does before its route — TLS
 * records, the HTTP parser, the node API's middleware (access log, body limit) and the
 * identity step (node row + certificate lookup) — and then answers 404. Checkin cost minus
 * baseline cost is the checkin's own work (body read and validation, the node-row update, the
 * cached heads and config versions).
 *
 * A third row is the floor under both: a bare node:https server in its own process with the
 * CP's TLS settings and certificate (support/bare-https-server.ts), driven the same way with
 * GET → fixed 404: Node's TLS + HTTP on this machine, which no AuthNexus change removes.
 *
 * Reported per run: requests/s, p50/p99 latency, and the CP process's CPU time per request
 * (utime + stime from /proc/<pid>/stat before and after the measured window), plus the bench
 * process's own CPU so a load generator that ran out of core shows.
 *
 * Run: npm run build && node --import tsx test/bench/checkin.bench.ts [seconds=10] [nodes=50]
 *      (BENCH_CP_LOG_LEVEL=warn to quiet the CP's log; BENCH_CP_NODE_ARGS="--cpu-prof" to profile it)
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { Client } from "undici";
import { checkinResponse, nodePaths } from "../../src/shared/node-protocol/index.js";
import { freePort } from "../helpers/authnexus-process.js";
import { REPO_ROOT } from "../helpers/cp-process.js";
import type { NodeIdentity } from "../helpers/node-api.js";
import { loadAverage, percentile, processCpuSeconds, startBenchCp } from "./support/cp-child.js";

const SECONDS = Number(process.argv[2] ?? 10);
const NODES = Number(process.argv[3] ?? 50);
const WARMUP_SECONDS = 2;
const TARGET_PER_SECOND = 2000;

interface NodeConnection {
  identity: NodeIdentity;
  client: Client;
  startedAt: number;
}
interface PhaseResult {
  label: string;
  requests: number;
  perSecond: number;
  p50: number;
  p99: number;
  cpCpuMsPerRequest: number;
  cpCpuShare: number;
  benchCpuShare: number;
}
type Call = (node: NodeConnection, n: number) => Promise<number>;

const cp = await startBenchCp({
  logLevel: process.env.BENCH_CP_LOG_LEVEL ?? "info",
  nodeArgs: process.env.BENCH_CP_NODE_ARGS?.split(" ").filter(Boolean) ?? [],
});
const connections: NodeConnection[] = [];
try {
  console.log(`load average at start: ${loadAverage()}; CP pid ${cp.pid}`);
  // One config item exists, as on any real deployment: checkins report it applied.
  await cp.admin("PUT", "/configs/cp_agent_runtime", { content: { checkin_interval_ms: 15_000 } });
  const [identities, cpCaPem] = await Promise.all([cp.mintNodes(NODES), cp.caPem("cp_server_ca")]);
  for (const identity of identities) {
    // Like the agent's short-call pool, but exactly one connection per node.
    const client = new Client(cp.cpUrl, {
      connect: { ca: cpCaPem, cert: identity.certPem, key: identity.keyPem },
      pipelining: 1,
      keepAliveTimeout: 60_000,
    });
    connections.push({ identity, client, startedAt: Date.now() });
  }
  await checkContract(connections);

  const checkin: Call = async (node, n) => {
    const res = await node.client.request({
      method: "POST",
      path: nodePaths.checkin(node.identity.nodeId),
      headers: { "content-type": "application/json", accept: "application/json" },
      body: checkinBody(node, n),
    });
    await res.body.dump();
    return res.statusCode;
  };
  const baseline: Call = async (node) => {
    const res = await node.client.request({
      method: "GET",
      path: `/cp/v2/nodes/${node.identity.nodeId}/bench-baseline`,
      headers: { accept: "application/json" },
    });
    await res.body.dump();
    return res.statusCode;
  };

  await drive(connections, checkin, 200, WARMUP_SECONDS);
  await drive(connections, baseline, 404, WARMUP_SECONDS / 2);
  const results = [
    await phase("checkin (POST …/checkin → 200)", connections, checkin, 200, cp.cpuSeconds),
    await phase("baseline (GET …/bench-baseline → 404)", connections, baseline, 404, cp.cpuSeconds),
  ];
  await checkRecorded(connections);
  results.push(await measureFloor(identities, cpCaPem, baseline));
  printTable(results);
  console.log(`load average at end: ${loadAverage()}`);
} finally {
  await Promise.all(connections.map((c) => c.client.close().catch(() => undefined)));
  await cp.stop();
}

/** A checkin shaped like serve-node's CheckinLoop sends (n varies the uptime, as time does). */
function checkinBody(node: NodeConnection, n: number): string {
  const now = Date.now();
  return JSON.stringify({
    software_version: "0.1.0",
    node_metadata: {
      hostname: hostname(),
      os: `${process.platform} ${process.arch}`,
      uptime_s: Math.floor((now - node.startedAt) / 1000) + n,
      started_at: node.startedAt,
      pid: process.pid,
    },
    metrics: { connections: 120, online_users: 87, requests_per_s: 42.5, errors_per_s: 0, rss_bytes: 95_000_000, cpu_percent: 3.2 },
    app_versions: [{ type: "cp_agent_runtime", scope: "global", version: 1 }],
    cursors: { commands: 0, "auth-epochs": 0, blacklist: 0 },
    sse_connected: true,
    ocsp: { status: "good", fetched_at: now - 60_000, next_update: now + 3_600_000 },
  });
}

/** The checkin answers per contract; the baseline is a 404 reached only after the identity step (another node's path is a 403). */
async function checkContract(nodes: NodeConnection[]): Promise<void> {
  const [a, b] = nodes;
  if (!a || !b) throw new Error("need at least two nodes");
  const res = await a.client.request({
    method: "POST",
    path: nodePaths.checkin(a.identity.nodeId),
    headers: { "content-type": "application/json" },
    body: checkinBody(a, 0),
  });
  const parsed = checkinResponse.safeParse(await res.body.json());
  if (res.statusCode !== 200 || !parsed.success) throw new Error(`checkin answered ${res.statusCode}: ${JSON.stringify(parsed)}`);
  if (parsed.data.config_pending) throw new Error("checkin reports config_pending although the body lists the only config item as applied");
  const own = await a.client.request({ method: "GET", path: `/cp/v2/nodes/${a.identity.nodeId}/bench-baseline` });
  const ownBody = (await own.body.json()) as { error?: string };
  const other = await a.client.request({ method: "GET", path: `/cp/v2/nodes/${b.identity.nodeId}/bench-baseline` });
  const otherBody = (await other.body.json()) as { error?: string };
  if (
    own.statusCode !== 404 ||
    ownBody.error !== "ROUTE_NOT_FOUND" ||
    other.statusCode !== 403 ||
    otherBody.error !== "NODE_IDENTITY_MISMATCH"
  ) {
    throw new Error(
      `baseline route is not "identity, then 404": own ${own.statusCode} ${ownBody.error}, other ${other.statusCode} ${otherBody.error}`,
    );
  }
}

/** The CP shows the nodes online with this run's metrics: the checkins were stored, not just answered. */
async function checkRecorded(nodes: NodeConnection[]): Promise<void> {
  const view = await cp.admin("GET", `/nodes/${nodes[nodes.length - 1]?.identity.nodeId}`);
  if (view.status !== "online" || view.online_users !== 87) throw new Error(`checkins not recorded: ${JSON.stringify(view).slice(0, 300)}`);
}

/** The same nodes and the same GET against a bare node:https server with the CP's TLS settings, in its own process. */
async function measureFloor(identities: NodeIdentity[], cpCaPem: string, call: Call): Promise<PhaseResult> {
  const identityFile = join(cp.dir.path, "cp-tls.json");
  writeFileSync(identityFile, JSON.stringify(await cp.tlsIdentity()), { mode: 0o600 });
  const port = await freePort();
  const server = spawn(
    process.execPath,
    ["--import", "tsx", join(REPO_ROOT, "test/bench/support/bare-https-server.ts"), identityFile, String(port)],
    { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  const bare: NodeConnection[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      server.stdout?.setEncoding("utf8").on("data", (chunk: string) => chunk.includes("ready") && resolve());
      server.once("exit", (code) => reject(new Error(`bare https server exited (${code})`)));
    });
    for (const identity of identities) {
      bare.push({
        identity,
        client: new Client(`https://127.0.0.1:${port}`, {
          connect: { ca: cpCaPem, cert: identity.certPem, key: identity.keyPem },
          pipelining: 1,
          keepAliveTimeout: 60_000,
        }),
        startedAt: Date.now(),
      });
    }
    await drive(bare, call, 404, WARMUP_SECONDS / 2);
    return await phase("floor (bare node:https, same TLS → 404)", bare, call, 404, () => processCpuSeconds(server.pid ?? -1));
  } finally {
    await Promise.all(bare.map((c) => c.client.close().catch(() => undefined)));
    server.kill("SIGTERM");
  }
}

/** Every node sends `call` back to back for `seconds`; any other status than `expected` aborts the bench. */
async function drive(nodes: NodeConnection[], call: Call, expected: number, seconds: number): Promise<number[]> {
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  await Promise.all(
    nodes.map(async (node) => {
      for (let n = 0; performance.now() < deadline; n++) {
        const started = performance.now();
        const status = await call(node, n);
        latencies.push(performance.now() - started);
        if (status !== expected) throw new Error(`expected ${expected}, got ${status}`);
      }
    }),
  );
  return latencies;
}

/** `serverCpuSeconds` reads the answering process's CPU time (the CP, or the bare server). */
async function phase(
  label: string,
  nodes: NodeConnection[],
  call: Call,
  expected: number,
  serverCpuSeconds: () => number,
): Promise<PhaseResult> {
  const cpuBefore = serverCpuSeconds();
  const benchBefore = process.cpuUsage();
  const started = performance.now();
  const latencies = await drive(nodes, call, expected, SECONDS);
  const wallS = (performance.now() - started) / 1000;
  const cpCpuS = serverCpuSeconds() - cpuBefore;
  const bench = process.cpuUsage(benchBefore);
  latencies.sort((x, y) => x - y);
  return {
    label,
    requests: latencies.length,
    perSecond: latencies.length / wallS,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    cpCpuMsPerRequest: (cpCpuS * 1000) / latencies.length,
    cpCpuShare: cpCpuS / wallS,
    benchCpuShare: (bench.user + bench.system) / 1e6 / wallS,
  };
}

function printTable(results: PhaseResult[]): void {
  console.log("");
  console.log(`${NODES} nodes, one keep-alive mTLS connection each, one request in flight per node, ${SECONDS} s per phase`);
  console.log(
    `${"phase".padEnd(40)} ${"req/s".padStart(7)} ${"p50".padStart(8)} ${"p99".padStart(8)} ${"server CPU/req".padStart(14)} ${"server CPU".padStart(10)} ${"bench CPU".padStart(9)}`,
  );
  for (const r of results) {
    console.log(
      `${r.label.padEnd(40)} ${Math.round(r.perSecond).toString().padStart(7)} ${`${r.p50.toFixed(1)} ms`.padStart(8)} ${`${r.p99.toFixed(1)} ms`.padStart(8)} ${`${(r.cpCpuMsPerRequest * 1000).toFixed(0)} µs`.padStart(14)} ${`${Math.round(r.cpCpuShare * 100)}%`.padStart(10)} ${`${Math.round(r.benchCpuShare * 100)}%`.padStart(9)}`,
    );
  }
  const [checkin, base, floor] = results;
  if (checkin && base && floor) {
    const us = (ms: number) => `${(ms * 1000).toFixed(0)} µs`;
    console.log(
      `per checkin: ${us(floor.cpCpuMsPerRequest)} Node TLS+HTTP floor, ${us(base.cpCpuMsPerRequest - floor.cpCpuMsPerRequest)} node-API stack (hono, access log, identity query), ${us(checkin.cpCpuMsPerRequest - base.cpCpuMsPerRequest)} the checkin's own work`,
    );
    console.log(
      `ratio checkin/baseline CPU = ${(checkin.cpCpuMsPerRequest / base.cpCpuMsPerRequest).toFixed(2)}, checkin/floor = ${(checkin.cpCpuMsPerRequest / floor.cpCpuMsPerRequest).toFixed(2)}`,
    );
    console.log(
      `checkins/s ${Math.round(checkin.perSecond)} vs target ≥ ${TARGET_PER_SECOND}: ${checkin.perSecond >= TARGET_PER_SECOND ? "ok" : "MISSED"}; CPU-bound ceiling at one full core ≈ ${Math.round(1000 / checkin.cpCpuMsPerRequest)}/s`,
    );
  }
  console.log(
    "(server CPU = the answering process's utime+stime: the CP for the first two rows, the bare server for the floor; server CPU / bench CPU = CPU time over wall time, 100% = one core of 2.)",
  );
}
