/**
 * Requests on the business port (docs/benchmarks.md): token-login and heartbeat latency over
 * C (default 500) logged-in SDK connections, and password logins per second. A real server node
 * (test/helpers/deployment.ts: CP and node in this process, SQLite Runtime DB, or PostgreSQL
 * with BENCH_DB=postgres) faces a load generator in its own process
 * (support/business-loadgen.ts: raw node:tls and the shared codec, mutual TLS with the
 * application's client certificate, staple checked). C users, one per connection, each
 * connection its own device: hello, then a password login that yields the token the token
 * logins replay.
 *
 * Phases, each 1 s of warm-up then D seconds measured, on the same C connections:
 *  - heartbeat, then login_token: open loop at each rate R (requests/s in all, round-robin over
 *    the connections, so each sends one every C/R seconds; a request is sent when due even if
 *    the last one on its connection is unanswered), then closed loop (each connection sends its
 *    next request when its last is answered: the saturation throughput);
 *  - mixed: heartbeats and token logins at the first rate each, at the same time, on the same
 *    connections (a login's database work shares the node's event loop with every heartbeat);
 *  - login_password: open loop at the first rate, then closed loop (logins/s).
 * Latency is from just before the loadgen's write to the decoded answer, in the loadgen.
 *
 * In the same run, the same loadgen with the same C connections drives the baseline: a bare
 * node:tls server in its own process (support/bare-tls-server.ts) with the node's certificate,
 * key, client-CA list, TLS settings and staple, answering each request with a canned frame of
 * the size the node answers with. Its numbers are the transport's (TLS records, one frame each
 * way, the loadgen itself) on this machine; node ÷ baseline is what AuthNexus adds.
 *
 * Reported per phase: requests/s, p50/p90/p99/max latency, the server's CPU share (this process
 * for the node — with the CP and the agent idle in it, measured alone before the phases — and
 * /proc/<pid>/stat for the bare server), CPU time per request in closed loops, and the loadgen's
 * CPU share (a loadgen at 100% means the server was not the limit).
 *
 * Run: node --import tsx test/bench/business-requests.bench.ts [seconds=5] [connections=500] [rates=500,2000]
 *      (BENCH_ONLY=heartbeat,login_token,mixed,login_password picks phases; BENCH_DB=postgres for
 *      a throwaway PostgreSQL Runtime DB; BENCH_CPU_PROF=<dir> writes a V8 CPU profile of this
 *      process — the node — per phase, summarised by support/cpuprofile-summary.ts;
 *      BENCH_SQLITE_PRAGMA="…" tries a SQLite setting on the node's Runtime DB connection)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { join } from "node:path";
import type { OpenResult, RunResult, Stream, StreamResult } from "./support/business-loadgen.js";
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
const CONNECTIONS = Number(process.argv[3] ?? 500);
const RATES = (process.argv[4] ?? "500,2000").split(",").map(Number);
const WARMUP_SECONDS = 1;
const IDLE_SECONDS = 3;
const TARGET_P99_MS = { login_token: 3, heartbeat: 1 } as const;
const TARGET_PASSWORD_PER_SECOND = 5000;
const PROFILE_DIR = process.env.BENCH_CPU_PROF;
const ONLY = process.env.BENCH_ONLY?.split(",");

type Server = "node" | "baseline";
interface Phase {
  server: Server;
  name: string;
  result: RunResult;
  /** CPU from the end of the warm-up to the loadgen's report (in-flight requests drained). */
  cpu: CpuShares;
}

const R0 = RATES[0] ?? 500;
const PLAN: Array<{ name: string; group: string; streams: Stream[] }> = [
  ...RATES.map((rate) => ({ name: `heartbeat @${rate}/s`, group: "heartbeat", streams: [{ op: "heartbeat" as const, rate }] })),
  { name: "heartbeat closed", group: "heartbeat", streams: [{ op: "heartbeat" as const, rate: 0 }] },
  ...RATES.map((rate) => ({ name: `login_token @${rate}/s`, group: "login_token", streams: [{ op: "login_token" as const, rate }] })),
  { name: "login_token closed", group: "login_token", streams: [{ op: "login_token" as const, rate: 0 }] },
  {
    name: `mixed @${R0}/s + ${R0}/s`,
    group: "mixed",
    streams: [
      { op: "heartbeat" as const, rate: R0 },
      { op: "login_token" as const, rate: R0 },
    ],
  },
  { name: `login_password @${R0}/s`, group: "login_password", streams: [{ op: "login_password" as const, rate: R0 }] },
  { name: "login_password closed", group: "login_password", streams: [{ op: "login_password" as const, rate: 0 }] },
].filter((phase) => !ONLY || ONLY.includes(phase.group));

const phases: Phase[] = [];
const idle: Record<Server, number> = { node: 0, baseline: 0 };
const target = await startBusinessTarget({ label: "requests", users: CONNECTIONS, maxConnections: CONNECTIONS * 2 + 100 });
try {
  console.log(
    `load average at start: ${loadAverage()}; ${target.db} Runtime DB; node ${target.node.nodeId} on 127.0.0.1:${target.node.address.port}`,
  );
  const loadgen = await target.startLoadgen();
  const opened = await open(loadgen);
  console.log(
    `node: ${opened.opened} connections up (mTLS + staple + hello + password login) in ${opened.seconds.toFixed(1)} s; answers: hello_ok ${opened.helloOkBytes} B, auth_ok ${opened.authOkBytes} B`,
  );
  idle.node = await idleShare(ownCpuSeconds);
  await drive("node", loadgen, ownCpuSeconds);
  await loadgen.call({ cmd: "close" });
  await loadgen.stop();

  const bare = await target.startBareServer({ userId: opened.sampleUserId ?? "", username: opened.sampleUsername ?? "" });
  const baseLoadgen = await target.startLoadgen(bare.port);
  const baseOpened = await open(baseLoadgen);
  if (baseOpened.helloOkBytes !== opened.helloOkBytes || baseOpened.authOkBytes !== opened.authOkBytes)
    throw new Error(`baseline answers differ in size: ${JSON.stringify(baseOpened)}`);
  idle.baseline = await idleShare(() => bare.child.cpuSeconds());
  await drive("baseline", baseLoadgen, () => bare.child.cpuSeconds());
  await baseLoadgen.call({ cmd: "close" });
  printTables();
  console.log(`load average at end: ${loadAverage()}`);
} finally {
  const warnings = nodeWarnings(target.node);
  console.log(warnings.length === 0 ? "node: no warnings logged" : `node warnings and errors:\n  ${warnings.join("\n  ")}`);
  await target.stop();
}

function open(loadgen: JsonLineChild): Promise<OpenResult> {
  return loadgen.call<OpenResult>({
    cmd: "open",
    count: CONNECTIONS,
    concurrency: 32,
    login: "password",
    devicePrefix: "dev",
    users: target.users,
  });
}

/** The server's CPU share with every connection open and nothing asked of it. */
async function idleShare(serverCpu: () => number): Promise<number> {
  const [cpu, wall] = [serverCpu(), performance.now()];
  await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
  return (serverCpu() - cpu) / ((performance.now() - wall) / 1000);
}

async function drive(server: Server, loadgen: JsonLineChild, serverCpu: () => number): Promise<void> {
  for (const { name, streams } of PLAN) {
    const profiling = server === "node" && PROFILE_DIR ? await startProfile() : null;
    // Server CPU over the measured window only: sampled when the warm-up ends.
    const running = loadgen.call<RunResult>({ cmd: "run", streams, seconds: SECONDS, warmup: WARMUP_SECONDS });
    await new Promise((resolve) => setTimeout(resolve, WARMUP_SECONDS * 1000));
    const window = cpuWindow(serverCpu, loadgen);
    const result = await running;
    const cpu = window();
    if (profiling) await stopProfile(profiling, name.replace(/\W+/g, "-"));
    phases.push({ server, name, result, cpu });
    for (const s of result.streams) {
      console.log(
        `  ${server.padEnd(8)} ${name.padEnd(28)} ${s.op.padEnd(14)} ${Math.round(s.perSecond)}/s, p50 ${ms(s.latencyMs.p50)}, p99 ${ms(s.latencyMs.p99)}`,
      );
      if (Object.keys(s.errors).length > 0) throw new Error(`${server} ${name}: errors answered: ${JSON.stringify(s.errors)}`);
    }
  }
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

function printTables(): void {
  const find = (server: Server, name: string) => phases.find((p) => p.server === server && p.name === name);
  const pct = (v: number) => `${Math.round(100 * v)}%`;
  console.log("");
  console.log(
    `${CONNECTIONS} mTLS connections, ${SECONDS} s per phase after ${WARMUP_SECONDS} s warm-up; open loop at R requests/s in all, or closed loop (one request in flight per connection)`,
  );
  console.log(
    `idle CPU with every connection open: node process ${pct(idle.node)} (CP and agent included), bare server ${pct(idle.baseline)}`,
  );
  console.log(
    `${"phase".padEnd(26)} ${"request".padEnd(14)} ${"server".padEnd(9)} ${"req/s".padStart(7)} ${"p50".padStart(9)} ${"p90".padStart(9)} ${"p99".padStart(9)} ${"max".padStart(9)} ${"CPU/req".padStart(8)} ${"server".padStart(6)} ${"loadgen".padStart(7)} ${"other".padStart(6)}`,
  );
  for (const node of phases.filter((p) => p.server === "node")) {
    for (const p of [node, find("baseline", node.name)]) {
      if (!p) continue;
      const closed = p.result.streams.length === 1 && p.result.streams[0]?.rate === 0;
      for (const s of p.result.streams) {
        const l = s.latencyMs;
        const cpuPerRequest = closed ? `${Math.round((1e6 * p.cpu.serverS) / Math.max(1, s.requests))} µs` : "";
        console.log(
          `${p.name.padEnd(26)} ${s.op.padEnd(14)} ${p.server.padEnd(9)} ${Math.round(s.perSecond).toString().padStart(7)} ${ms(l.p50).padStart(9)} ${ms(l.p90).padStart(9)} ${ms(l.p99).padStart(9)} ${ms(l.max, 1).padStart(9)} ${cpuPerRequest.padStart(8)} ${pct(p.cpu.serverS / p.cpu.wallS).padStart(6)} ${pct(p.cpu.loadgenS / p.cpu.wallS).padStart(7)} ${pct(p.cpu.otherS / p.cpu.wallS).padStart(6)}`,
        );
      }
    }
  }
  console.log(
    "(CPU/req = server CPU time per answered request, closed loops only; server / loadgen / other = CPU time over wall time, 100% = one core of 2; other = the rest of the machine, this process included when it is not the server: a phase with much of it shared its cores.)",
  );
  console.log("");
  const verdict = (ok: boolean) => (ok ? "met" : "MISSED");
  const stream = (p: Phase | undefined, op: string): StreamResult | undefined => p?.result.streams.find((s) => s.op === op);
  for (const phase of phases.filter((p) => p.server === "node")) {
    for (const op of ["login_token", "heartbeat"] as const) {
      const n = stream(phase, op);
      const b = stream(find("baseline", phase.name), op);
      if (!n || !b || n.rate === 0) continue;
      const ratio = (key: "p50" | "p99") => `×${(n.latencyMs[key] / b.latencyMs[key]).toFixed(1)}`;
      console.log(
        `${`${phase.name}, ${op}:`.padEnd(42)} p50 ${ms(n.latencyMs.p50)} (baseline ${ms(b.latencyMs.p50)}, ${ratio("p50")}), p99 ${ms(n.latencyMs.p99)} (baseline ${ms(b.latencyMs.p99)}, ${ratio("p99")}); target p99 ≤ ${TARGET_P99_MS[op]} ms: ${verdict(n.latencyMs.p99 <= TARGET_P99_MS[op])}`,
      );
    }
  }
  for (const op of ["heartbeat", "login_token", "login_password"] as const) {
    const [n, b] = [find("node", `${op} closed`), find("baseline", `${op} closed`)];
    const [ns, bs] = [stream(n, op), stream(b, op)];
    if (!n || !b || !ns || !bs) continue;
    const cpu = (p: Phase, s: StreamResult) => (1e6 * p.cpu.serverS) / Math.max(1, s.requests);
    const goal =
      op === "login_password" ? `; target ≥ ${TARGET_PASSWORD_PER_SECOND}/s: ${verdict(ns.perSecond >= TARGET_PASSWORD_PER_SECOND)}` : "";
    console.log(
      `${op} closed loop: ${Math.round(ns.perSecond)}/s vs baseline ${Math.round(bs.perSecond)}/s (ratio ${(ns.perSecond / bs.perSecond).toFixed(2)}); server CPU ${Math.round(cpu(n, ns))} vs ${Math.round(cpu(b, bs))} µs/request, one-core ceiling ≈ ${Math.round(1e6 / cpu(n, ns))}/s${goal}`,
    );
  }
}
