/**
 * Server memory per idle authenticated connection on the business port (docs/benchmarks.md).
 * A real server node (test/helpers/deployment.ts: CP and node in this process, SQLite Runtime
 * DB) with its connection limits raised through PUT /admin/v1/configs/server_runtime_settings
 * (max_connections and max_connections_per_ip: every bench connection comes from 127.0.0.1);
 * the load generator, another process (support/business-loadgen.ts), opens N connections
 * (default 5,000), each a full mutual-TLS handshake with the staple checked, hello and a
 * password login (U users, default 500, each on N/U devices, app_policy.max_devices_per_user
 * raised to match), then leaves them idle.
 *
 * This process's memory is read after a full garbage collection (V8's gc(), enabled at run
 * time): before the connections (after 50 were opened and closed, so code paths and pools are
 * warm), at N/2 and at N. Per connection = (at N − before) / N; the N/2 → N slope is printed
 * too (it leaves out one-off growth such as SQLite's page cache filling). RSS is what the
 * target is about; heapUsed, external and arrayBuffers say where it sits. The node's registry
 * must hold N connections, every one logged in.
 *
 * In the same run, the baseline: the bare node:tls server (support/bare-tls-server.ts) in its
 * own process, with the node's certificate, key, client-CA list, TLS settings and staple, and
 * the same N connections opened by the same loadgen (hello and login answered with canned
 * frames), measured the same way (its own gc() before each reading). Its figure is what Node's
 * TLS costs per idle connection on this machine.
 *
 * Needs about N + 200 file descriptors in this process and in the loadgen: raise `ulimit -n`
 * first if the bench says so (Node raises its soft limit to the hard one by itself).
 *
 * Run: node --import tsx test/bench/business-memory.bench.ts [connections=5000] [users=500]
 */
import { readFileSync } from "node:fs";
import type { OpenResult } from "./support/business-loadgen.js";
import { fullGc, type JsonLineChild, nodeWarnings, startBusinessTarget } from "./support/business-target.js";
import { loadAverage } from "./support/cp-child.js";

const CONNECTIONS = Number(process.argv[2] ?? 5000);
const USERS = Number(process.argv[3] ?? 500);
const WARMUP_CONNECTIONS = 50;
const SETTLE_MS = 3000;
const TARGET_KIB = 64;

interface Reading {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}
interface Series {
  server: "node" | "bare node:tls";
  before: Reading;
  half: Reading;
  full: Reading;
  afterClose: Reading;
  open: OpenResult[];
}

checkFileLimit();
const devicesPerUser = Math.ceil(CONNECTIONS / USERS);
const target = await startBusinessTarget({
  label: "memory",
  users: USERS,
  maxDevicesPerUser: devicesPerUser,
  maxConnections: CONNECTIONS + WARMUP_CONNECTIONS + 100,
});
try {
  console.log(`load average at start: ${loadAverage()}; node ${target.node.nodeId} on 127.0.0.1:${target.node.address.port}`);
  const series: Series[] = [];
  const registry = () => target.node.server.status().business.connections;
  const loadgen = await target.startLoadgen();
  series.push(
    await measure(
      "node",
      loadgen,
      async () => ownMemory(),
      async (expected) => {
        const metrics = target.node.server.status().business.metrics;
        if (registry() !== expected) throw new Error(`the node's registry holds ${registry()} connections, expected ${expected}`);
        if (expected > 0 && metrics?.onlineUsers !== expected)
          throw new Error(`${metrics?.onlineUsers} connections logged in, expected ${expected}`);
      },
    ),
  );
  const sample = series[0]?.open[0];
  await loadgen.stop();

  const bare = await target.startBareServer({ userId: sample?.sampleUserId ?? "", username: sample?.sampleUsername ?? "" });
  const bareLoadgen = await target.startLoadgen(bare.port);
  series.push(
    await measure(
      "bare node:tls",
      bareLoadgen,
      () => bare.child.call<Reading>({ cmd: "memory" }),
      async (expected) => {
        const { connections } = await bare.child.call<{ connections: number }>({ cmd: "connections" });
        if (connections !== expected) throw new Error(`the bare server holds ${connections} connections, expected ${expected}`);
      },
    ),
  );
  printTable(series);
  console.log(`load average at end: ${loadAverage()}`);
} finally {
  const warnings = nodeWarnings(target.node);
  console.log(warnings.length === 0 ? "node: no warnings logged" : `node warnings and errors:\n  ${warnings.join("\n  ")}`);
  await target.stop();
}

async function measure(
  server: Series["server"],
  loadgen: JsonLineChild,
  read: () => Promise<Reading>,
  check: (expected: number) => Promise<void>,
): Promise<Series> {
  const openSome = (count: number, devicePrefix: string) =>
    loadgen.call<OpenResult>({ cmd: "open", count, concurrency: 32, login: "password", devicePrefix, users: target.users });
  const settle = () => new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  // Warm-up: the code paths, TLS and database pools, then back to no connection at all.
  await openSome(WARMUP_CONNECTIONS, "dev");
  await loadgen.call({ cmd: "close" });
  await settle();
  await check(0);
  const before = await read();
  const half = Math.floor(CONNECTIONS / 2);
  const open: OpenResult[] = [await openSome(half, "dev")];
  await check(half);
  await settle();
  const atHalf = await read();
  open.push(await openSome(CONNECTIONS - half, "dev"));
  await check(CONNECTIONS);
  await settle();
  const full = await read();
  console.log(
    `  ${server}: ${CONNECTIONS} connections open and logged in (${open.map((o) => `${o.opened} in ${o.seconds.toFixed(1)} s`).join(", ")}); RSS ${mib(before.rss)} → ${mib(atHalf.rss)} → ${mib(full.rss)}`,
  );
  await loadgen.call({ cmd: "close" });
  await settle();
  await check(0);
  return { server, before, half: atHalf, full, afterClose: await read(), open };
}

async function ownMemory(): Promise<Reading> {
  fullGc();
  const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage();
  return { rss, heapUsed, external, arrayBuffers };
}

function printTable(series: Series[]): void {
  const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
  const per = (s: Series, key: keyof Reading) => (s.full[key] - s.before[key]) / CONNECTIONS;
  const slope = (s: Series, key: keyof Reading) => (s.full[key] - s.half[key]) / (CONNECTIONS - Math.floor(CONNECTIONS / 2));
  console.log("");
  console.log(`${CONNECTIONS} idle connections (mTLS + hello + password login), memory after a full GC; per connection`);
  console.log(
    `${"server".padEnd(15)} ${"RSS".padStart(10)} ${"RSS N/2→N".padStart(10)} ${"heapUsed".padStart(10)} ${"external".padStart(10)} ${"arrayBuf".padStart(10)} ${"RSS before".padStart(11)} ${"RSS at N".padStart(10)} ${"after close".padStart(12)}`,
  );
  for (const s of series) {
    console.log(
      `${s.server.padEnd(15)} ${kib(per(s, "rss")).padStart(10)} ${kib(slope(s, "rss")).padStart(10)} ${kib(per(s, "heapUsed")).padStart(10)} ${kib(per(s, "external")).padStart(10)} ${kib(per(s, "arrayBuffers")).padStart(10)} ${mib(s.before.rss).padStart(11)} ${mib(s.full.rss).padStart(10)} ${mib(s.afterClose.rss).padStart(12)}`,
    );
  }
  const [node, bare] = series;
  if (node && bare) {
    const n = per(node, "rss");
    console.log(
      `node ${kib(n)} vs bare node:tls ${kib(per(bare, "rss"))} per idle connection (ratio ${(n / per(bare, "rss")).toFixed(2)}; heap ${kib(per(node, "heapUsed"))} vs ${kib(per(bare, "heapUsed"))}); target ≤ ${TARGET_KIB} KiB: ${n <= TARGET_KIB * 1024 ? "met" : "MISSED"}`,
    );
  }
  console.log("(after close: RSS once every connection closed again, after a GC; the allocator keeps some of it for reuse.)");
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Node raises its soft descriptor limit to the hard one at start; both sides need about one descriptor per connection. */
function checkFileLimit(): void {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  const soft = Number(line?.split(/\s{2,}/)[1]);
  const needed = CONNECTIONS + 200;
  if (Number.isFinite(soft) && soft < needed)
    throw new Error(`this process may open ${soft} files; ${CONNECTIONS} connections need about ${needed}: raise \`ulimit -n\` first`);
}
