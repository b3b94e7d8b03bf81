/**
 * Full mutual-TLS handshakes on the business port (docs/benchmarks.md), against a bare node:tls
 * server with the same certificates in the same run. The node is real (test/helpers/
 * deployment.ts: CP and node in this process); the load generator is another process
 * (support/business-loadgen.ts) opening new connection after new connection, K at a time
 * (default 16), each a full handshake — no session resumption on either side — with the
 * application's client certificate (ECDSA P-256, like every AuthNexus key), the node's
 * certificate checked against the server CA, and the OCSP staple asked for and required:
 * present and byte-identical to the response the node's stapler verified. Each connection is
 * closed cleanly (TLS close_notify, FIN) once the handshake is done, or once hello_ok arrived in
 * the "+ hello" rows.
 *
 * The baseline (support/bare-tls.ts, in its own process) is node:tls with the node's own
 * certificate and key, the same client-CA list, client certificates required, TLS ≥ 1.2, no
 * session tickets, and the same staple served from the OCSPRequest event — the handshake the
 * node does, without its admission layers (certificate semantics, the application's trust
 * bundles, the connection registry, the hello deadline). In the "+ hello" rows it answers
 * hello with a canned hello_ok of the node's size. A second baseline runs the same bare server
 * inside this process — the node's, where the test CP idles too — so the gap splits into what
 * the node's own code does per handshake and what its process costs.
 *
 * Both sides of a handshake cost about the same CPU (ECDHE, one ECDSA signature and two
 * verifications each, plus the client's certificate-chain checks), so the single loadgen process
 * can run out of core before the server does: its CPU share is printed, and besides handshakes/s
 * the bench reports each server's CPU time per handshake and the one-core ceiling it implies.
 * The target ratio (≥ 0.9) is checked on both.
 *
 * Every server gets an untimed 3 s of handshakes first, so no row pays for JIT warm-up.
 *
 * Run: node --import tsx test/bench/business-handshake.bench.ts [seconds=5] [concurrency=16] [rounds=2]
 *      (BENCH_CPU_PROF=<dir> writes a V8 CPU profile of this process — the node — per node row)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { join } from "node:path";
import type { HandshakeResult } from "./support/business-loadgen.js";
import {
  type CpuShares,
  cpuWindow,
  type JsonLineChild,
  ms,
  nodeWarnings,
  ownCpuSeconds,
  startBusinessTarget,
} from "./support/business-target.js";
import { loadAverage } from "./support/cp-child.js";

const SECONDS = Number(process.argv[2] ?? 5);
const CONCURRENCY = Number(process.argv[3] ?? 16);
const ROUNDS = Number(process.argv[4] ?? 2);
const WARMUP_SECONDS = 1;
const WARMUP_ROUND_SECONDS = 3;
const TARGET_RATIO = 0.9;
const PROFILE_DIR = process.env.BENCH_CPU_PROF;

type Server = "node" | "bare" | "bare in-process";
interface Row {
  server: Server;
  hello: boolean;
  round: number;
  result: HandshakeResult;
  cpu: CpuShares;
}

const rows: Row[] = [];
const target = await startBusinessTarget({ label: "handshake", users: 1, maxConnections: 10_000 });
try {
  console.log(`load average at start: ${loadAverage()}; node ${target.node.nodeId} on 127.0.0.1:${target.node.address.port}`);
  const sample = { userId: "", username: "" };
  const bare = await target.startBareServer(sample);
  const inProcess = await target.startInProcessBareServer(sample);
  const nodeLoadgen = await target.startLoadgen();
  const bareLoadgen = await target.startLoadgen(bare.port);
  const inProcessLoadgen = await target.startLoadgen(inProcess.port);
  const bareCpu = () => bare.child.cpuSeconds();
  // Untimed: JIT and pools warm on every server before the first measured row.
  for (const loadgen of [nodeLoadgen, bareLoadgen, inProcessLoadgen])
    await loadgen.call({ cmd: "handshakes", seconds: WARMUP_ROUND_SECONDS, warmup: 0, concurrency: CONCURRENCY, hello: true });
  for (let round = 1; round <= ROUNDS; round++) {
    for (const hello of [false, true]) {
      await measure("node", hello, round, nodeLoadgen, ownCpuSeconds);
      await measure("bare", hello, round, bareLoadgen, bareCpu);
      await measure("bare in-process", hello, round, inProcessLoadgen, ownCpuSeconds);
    }
  }
  printTable();
  console.log(`load average at end: ${loadAverage()}`);
} finally {
  const warnings = nodeWarnings(target.node);
  console.log(warnings.length === 0 ? "node: no warnings logged" : `node warnings and errors:\n  ${warnings.join("\n  ")}`);
  await target.stop();
}

async function measure(
  server: Row["server"],
  hello: boolean,
  round: number,
  loadgen: JsonLineChild,
  serverCpu: () => number,
): Promise<void> {
  const profiling = server === "node" && PROFILE_DIR ? await startProfile() : null;
  const running = loadgen.call<HandshakeResult>({
    cmd: "handshakes",
    seconds: SECONDS,
    warmup: WARMUP_SECONDS,
    concurrency: CONCURRENCY,
    hello,
  });
  await new Promise((resolve) => setTimeout(resolve, WARMUP_SECONDS * 1000));
  const window = cpuWindow(serverCpu, loadgen);
  const result = await running;
  const cpu = window();
  if (profiling) await stopProfile(profiling, `handshake${hello ? "-hello" : ""}-${round}`);
  if (Object.keys(result.failures).length > 0) throw new Error(`${server}: handshakes failed: ${JSON.stringify(result.failures)}`);
  rows.push({ server, hello, round, result, cpu });
  console.log(
    `  round ${round} ${server.padEnd(15)} ${hello ? "TLS + hello" : "TLS"}: ${Math.round(result.perSecond)}/s, p50 ${ms(result.latencyMs.p50)}, p99 ${ms(result.latencyMs.p99)}, server CPU ${Math.round((1e6 * cpu.serverS) / result.handshakes)} µs each`,
  );
}

async function startProfile(): Promise<Session> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 100 });
  await session.post("Profiler.start");
  return session;
}

async function stopProfile(session: Session, name: string): Promise<void> {
  const { profile } = await session.post("Profiler.stop");
  session.disconnect();
  mkdirSync(PROFILE_DIR as string, { recursive: true });
  const file = join(PROFILE_DIR as string, `node-${name}.cpuprofile`);
  writeFileSync(file, JSON.stringify(profile));
  console.log(`    profile: ${file}`);
}

function printTable(): void {
  const cpuUs = (r: Row) => (1e6 * r.cpu.serverS) / Math.max(1, r.result.handshakes);
  const pct = (v: number) => `${Math.round(100 * v)}%`;
  console.log("");
  console.log(
    `new connection after new connection, ${CONCURRENCY} at a time, ${SECONDS} s per row after ${WARMUP_SECONDS} s warm-up; full mTLS handshake, staple required`,
  );
  console.log(
    `${"round".padEnd(6)} ${"server".padEnd(16)} ${"until".padEnd(12)} ${"hs/s".padStart(6)} ${"p50".padStart(9)} ${"p99".padStart(9)} ${"CPU/hs".padStart(8)} ${"ceiling".padStart(8)} ${"server".padStart(6)} ${"loadgen".padStart(7)} ${"other".padStart(6)}`,
  );
  for (const r of rows) {
    console.log(
      `${String(r.round).padEnd(6)} ${r.server.padEnd(16)} ${(r.hello ? "TLS + hello" : "TLS").padEnd(12)} ${Math.round(r.result.perSecond).toString().padStart(6)} ${ms(r.result.latencyMs.p50).padStart(9)} ${ms(r.result.latencyMs.p99).padStart(9)} ${`${Math.round(cpuUs(r))} µs`.padStart(8)} ${`${Math.round(1e6 / cpuUs(r))}/s`.padStart(8)} ${pct(r.cpu.serverS / r.cpu.wallS).padStart(6)} ${pct(r.cpu.loadgenS / r.cpu.wallS).padStart(7)} ${pct(r.cpu.otherS / r.cpu.wallS).padStart(6)}`,
    );
  }
  console.log(
    "(CPU/hs = server CPU time per handshake; ceiling = handshakes/s one full core would give at that cost; server / loadgen / other = CPU time over wall time, 100% = one core of 2; other = the rest of the machine, this process included when it is not the server.)",
  );
  console.log("");
  for (const hello of [false, true]) {
    const sum = (server: Server) => {
      const mine = rows.filter((r) => r.server === server && r.hello === hello);
      const handshakes = mine.reduce((a, r) => a + r.result.handshakes, 0);
      return {
        perSecond: handshakes / mine.reduce((a, r) => a + r.result.seconds, 0),
        cpuUs: (1e6 * mine.reduce((a, r) => a + r.cpu.serverS, 0)) / Math.max(1, handshakes),
      };
    };
    const [n, b, p] = [sum("node"), sum("bare"), sum("bare in-process")];
    const rate = n.perSecond / b.perSecond;
    const capacity = b.cpuUs / n.cpuUs;
    const what = hello ? "TLS + hello" : "TLS handshake";
    console.log(
      `${what}, all rounds: node ${Math.round(n.perSecond)}/s vs bare node:tls ${Math.round(b.perSecond)}/s, ratio ${rate.toFixed(2)}; server CPU ${Math.round(n.cpuUs)} vs ${Math.round(b.cpuUs)} µs per handshake, capacity ratio ${capacity.toFixed(2)} (one-core ceilings ${Math.round(1e6 / n.cpuUs)}/s vs ${Math.round(1e6 / b.cpuUs)}/s); target ≥ ${TARGET_RATIO}: ${rate >= TARGET_RATIO && capacity >= TARGET_RATIO ? "met" : "MISSED"}`,
    );
    console.log(
      `${what}, against the bare server inside the node's process: ${Math.round(n.cpuUs)} vs ${Math.round(p.cpuUs)} µs, capacity ratio ${(p.cpuUs / n.cpuUs).toFixed(2)}: the node's own admission work is ${Math.round(n.cpuUs - p.cpuUs)} µs per handshake, its process (CP idle in it) ${Math.round(p.cpuUs - b.cpuUs)} µs`,
    );
  }
}
