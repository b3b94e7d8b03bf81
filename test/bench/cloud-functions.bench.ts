/**
 * Cloud functions on the business port (docs/benchmarks.md, "Cloud functions"): call latency
 * through the SDK, and what runaway functions do to everyone else's heartbeats. A real server
 * node (test/helpers/deployment.ts via support/business-target.ts: CP and node in this process,
 * SQLite Runtime DB, the node's default pool of 2 function workers) faces a load generator in
 * its own process that speaks through the SDK (support/sdk-loadgen.ts: AuthNexusClient, the
 * staple verified by the SDK). H users (default 200), one client each, each its own device:
 * hello, a password login, one user variable set.
 *
 * Functions, made through the admin API as a vendor would:
 *  - noop:    `return 1`
 *  - vars:    two app_vars.get, one user_vars.get, returns a small table
 *  - spin:    `while true do end`, timeout_ms 100 (stopped inside Lua at its limit)
 *  - pattern: a pathological string.find, timeout_ms 100 (stuck in C: the pool terminates the
 *             worker after its grace and starts a fresh one)
 *
 * Phases, each 1 s of warm-up then D seconds measured:
 *  - calls, on the first C clients (default 50): heartbeat at R1/s (the round trip a call is
 *    compared with), noop and vars at R1/s (default 200/s, open loop: round-robin, sent when
 *    due whether or not the last one was answered), then noop and vars in a closed loop (each
 *    client's next call when its last is answered: the pool's throughput);
 *  - runaways, on all H clients: heartbeats at R2/s (default 1,000/s) alone (the baseline),
 *    then with four more clients calling spin back to back, the baseline again, then with four
 *    calling pattern, then the baseline a third time. The runaway callers run from the start
 *    of the warm-up; their answers are counted by outcome; the pool's worker replacements are
 *    the node's `function_worker.replaced` log events from the start of the phase until none
 *    came for 1.5 s after it (the workers still stuck when it ended are replaced then).
 * Latency is measured in the load generator, from just before the SDK call to its promise
 * settling. CPU: the bench process (the node, its function workers, the idle CP) and the load
 * generator over each measured window; "other" is the rest of the machine. The node's event
 * loop delay (perf_hooks.monitorEventLoopDelay) over the same window tells a stall of the loop
 * that serves heartbeats from a process that was only waiting for a core.
 *
 * Run: node --import tsx test/bench/cloud-functions.bench.ts [seconds=5] [call-clients=50] [heartbeat-clients=200] [rates=200,1000]
 *      (about 70 s with the defaults; figures in docs/benchmarks.md)
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { waitFor } from "../helpers/node-agent.js";
import {
  type CpuShares,
  cpuWindow,
  JsonLineChild,
  ms,
  nodeWarnings,
  ownCpuSeconds,
  startBusinessTarget,
} from "./support/business-target.js";
import { loadAverage } from "./support/cp-child.js";
import type { SdkBackground, SdkLoadgenConfig, SdkOpenResult, SdkRunResult, SdkStream } from "./support/sdk-loadgen.js";

const SECONDS = Number(process.argv[2] ?? 5);
const CALL_CLIENTS = Number(process.argv[3] ?? 50);
const HEARTBEAT_CLIENTS = Number(process.argv[4] ?? 200);
const [CALL_RATE = 200, HEARTBEAT_RATE = 1000] = (process.argv[5] ?? "200,1000").split(",").map(Number);
const WARMUP_SECONDS = 1;
const RUNAWAY_CALLERS = 4;
const RUNAWAY_TIMEOUT_MS = 100;
const TARGET_CALL_P99_MS = 5;
const TARGET_HEARTBEAT_RISE_MS = 1;
const SDK_LOADGEN_SCRIPT = fileURLToPath(new URL("./support/sdk-loadgen.ts", import.meta.url));

const FUNCTIONS = [
  { name: "noop", script: "return 1" },
  {
    name: "vars",
    script: [
      'local motd = app_vars.get("motd")',
      'local limit = app_vars.get("limit")',
      'local level = user_vars.get("level")',
      "return { motd = motd, limit = limit, level = level, user = username }",
    ].join("\n"),
  },
  { name: "spin", script: "while true do end", timeout_ms: RUNAWAY_TIMEOUT_MS },
  { name: "pattern", script: 'return string.find(string.rep("a", 40000), ".-.-.-.-.-.-.-.-.-.-b")', timeout_ms: RUNAWAY_TIMEOUT_MS },
];

interface Phase {
  name: string;
  group: "calls" | "runaways";
  streams: SdkStream[];
  background?: SdkBackground[];
}
interface Measured extends Phase {
  result: SdkRunResult;
  cpu: CpuShares;
  /** The pool's worker replacements in the run (warm-up included), by reason. */
  replaced: Record<string, number>;
  /** The node's event loop delay over the measured window (this process's), ms. */
  loopDelay: { p99: number; max: number };
}

const calls = { from: 0, to: CALL_CLIENTS };
const everyone = { from: 0, to: HEARTBEAT_CLIENTS };
const runaways = (fn: string): SdkBackground[] => [{ fn, from: HEARTBEAT_CLIENTS, to: HEARTBEAT_CLIENTS + RUNAWAY_CALLERS }];
const heartbeats = { op: "heartbeat" as const, rate: HEARTBEAT_RATE, ...everyone };
const PLAN: Phase[] = [
  { name: `heartbeat @${CALL_RATE}/s`, group: "calls", streams: [{ op: "heartbeat", rate: CALL_RATE, ...calls }] },
  { name: `noop @${CALL_RATE}/s`, group: "calls", streams: [{ op: "call", fn: "noop", rate: CALL_RATE, ...calls }] },
  { name: `vars @${CALL_RATE}/s`, group: "calls", streams: [{ op: "call", fn: "vars", rate: CALL_RATE, ...calls }] },
  { name: "noop closed", group: "calls", streams: [{ op: "call", fn: "noop", rate: 0, ...calls }] },
  { name: "vars closed", group: "calls", streams: [{ op: "call", fn: "vars", rate: 0, ...calls }] },
  { name: "baseline 1", group: "runaways", streams: [heartbeats] },
  { name: `+ ${RUNAWAY_CALLERS}× spin`, group: "runaways", streams: [heartbeats], background: runaways("spin") },
  { name: "baseline 2", group: "runaways", streams: [heartbeats] },
  { name: `+ ${RUNAWAY_CALLERS}× pattern`, group: "runaways", streams: [heartbeats], background: runaways("pattern") },
  { name: "baseline 3", group: "runaways", streams: [heartbeats] },
];

const measured: Measured[] = [];
let loadgen: JsonLineChild | null = null;
const target = await startBusinessTarget({
  label: "cloud",
  users: HEARTBEAT_CLIENTS,
  maxConnections: HEARTBEAT_CLIENTS + RUNAWAY_CALLERS + 100,
});
try {
  const { deployment, app, node } = target;
  console.log(`load average at start: ${loadAverage()}; ${target.db} Runtime DB; node ${node.nodeId} on 127.0.0.1:${node.address.port}`);
  await deployment.admin("PUT", `/applications/${app.appId}/configs/app_variables`, {
    content: { variables: { motd: "welcome", limit: 42 }, public: [] },
  });
  for (const fn of FUNCTIONS) await deployment.admin("POST", `/applications/${app.appId}/cloud-functions`, fn);
  const store = node.server.agent.store;
  await waitFor(
    "the node holds the functions and the variables",
    () => FUNCTIONS.every((fn) => store.cloudFunction(app.appId, fn.name)) && store.appVariables(app.appId).variables.motd === "welcome",
    30_000,
  );

  const configFile = join(target.dir.path, "sdk-loadgen.json");
  const config: SdkLoadgenConfig = {
    host: "127.0.0.1",
    port: node.address.port,
    appId: app.appId,
    secret: app.secret,
    material: target.client,
  };
  writeFileSync(configFile, JSON.stringify(config), { mode: 0o600 });
  loadgen = await JsonLineChild.start("sdk-loadgen", SDK_LOADGEN_SCRIPT, [configFile]);
  const opened = await loadgen.call<SdkOpenResult>({
    cmd: "open",
    count: HEARTBEAT_CLIENTS,
    concurrency: 16,
    devicePrefix: "dev",
    users: target.users,
    userVariable: { key: "level", value: "7" },
  });
  const extra = await loadgen.call<SdkOpenResult>({
    cmd: "open",
    count: RUNAWAY_CALLERS,
    concurrency: RUNAWAY_CALLERS,
    devicePrefix: "runaway",
    users: target.users,
  });
  console.log(
    `${extra.total} SDK clients logged in (${opened.opened} in ${opened.seconds.toFixed(1)} s, ${extra.opened} runaway callers); SDK heartbeat interval ${opened.heartbeatIntervalMs} ms`,
  );

  for (const phase of PLAN) {
    const before = node.events().length;
    const running = loadgen.call<SdkRunResult>({
      cmd: "run",
      streams: phase.streams,
      background: phase.background ?? [],
      seconds: SECONDS,
      warmup: WARMUP_SECONDS,
    });
    await new Promise((resolve) => setTimeout(resolve, WARMUP_SECONDS * 1000));
    const window = cpuWindow(ownCpuSeconds, loadgen);
    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    const result = await running;
    const cpu = window();
    delay.disable();
    const loopDelay = { p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 };
    // After runaways, the pool replaces the workers still stuck: that belongs to this phase, not the next.
    if (phase.background) await settle(before);
    const replaced: Record<string, number> = {};
    for (const event of node.events().slice(before)) {
      if (event.msg !== "function_worker.replaced") continue;
      const reason = String(event.reason);
      replaced[reason] = (replaced[reason] ?? 0) + 1;
    }
    measured.push({ ...phase, result, cpu, replaced, loopDelay });
    for (const s of result.streams) {
      const what = s.op === "call" ? `call ${s.fn}` : s.op;
      console.log(
        `  ${phase.name.padEnd(22)} ${what.padEnd(12)} ${Math.round(s.perSecond)}/s, p50 ${ms(s.latencyMs.p50)}, p99 ${ms(s.latencyMs.p99)}${s.sample ? `, answer ${s.sample}` : ""}`,
      );
      if (Object.keys(s.errors).length > 0) throw new Error(`${phase.name}: errors answered: ${JSON.stringify(s.errors)}`);
    }
    for (const b of result.background)
      console.log(
        `  ${"".padEnd(22)} runaway ${b.fn}: ${b.perSecond.toFixed(1)} answers/s, mean ${ms(b.meanMs, 0)}, ${JSON.stringify(b.outcomes)}; workers replaced ${JSON.stringify(replaced)}`,
      );
  }
  await loadgen.call({ cmd: "close" });
  printTables();
  console.log(`load average at end: ${loadAverage()}`);
} finally {
  const warnings = nodeWarnings(target.node);
  console.log(warnings.length === 0 ? "node: no warnings logged" : `node warnings and errors:\n  ${warnings.join("\n  ")}`);
  await loadgen?.stop();
  await target.stop();
}

/** Waits until the pool has replaced no worker for 1.5 s (at most 10 s). */
async function settle(since: number): Promise<void> {
  const replacements = () =>
    target.node
      .events()
      .slice(since)
      .filter((e) => e.msg === "function_worker.replaced").length;
  const deadline = performance.now() + 10_000;
  let seen = replacements();
  let quietSince = performance.now();
  while (performance.now() < deadline && performance.now() - quietSince < 1500) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = replacements();
    if (now !== seen) [seen, quietSince] = [now, performance.now()];
  }
}

function printTables(): void {
  const pct = (v: number) => `${Math.round(100 * v)}%`;
  const row = (m: Measured) => m.result.streams[0] as SdkRunResult["streams"][number];
  console.log("");
  console.log(
    `${SECONDS} s per phase after ${WARMUP_SECONDS} s warm-up; calls on ${CALL_CLIENTS} SDK clients, runaway phases' heartbeats on ${HEARTBEAT_CLIENTS}; open loop at R/s in all, or closed loop (one call in flight per client)`,
  );
  console.log(
    `${"phase".padEnd(24)} ${"request".padEnd(12)} ${"req/s".padStart(7)} ${"p50".padStart(9)} ${"p90".padStart(9)} ${"p99".padStart(9)} ${"max".padStart(10)} ${"CPU/req".padStart(8)} ${"node".padStart(5)} ${"loadgen".padStart(7)} ${"other".padStart(6)} ${"loop p99".padStart(8)} ${"loop max".padStart(8)}  runaway answers, workers replaced`,
  );
  for (const m of measured) {
    const s = row(m);
    const l = s.latencyMs;
    const closed = s.rate === 0;
    const cpuPerRequest = closed ? `${Math.round((1e6 * m.cpu.serverS) / Math.max(1, s.requests))} µs` : "";
    const bg = m.result.background.map((b) => `${b.fn} ${b.perSecond.toFixed(1)}/s ${JSON.stringify(b.outcomes)}`).join(" ");
    const replaced = Object.keys(m.replaced).length > 0 ? ` replaced ${JSON.stringify(m.replaced)}` : "";
    console.log(
      `${m.name.padEnd(24)} ${(s.op === "call" ? (s.fn as string) : s.op).padEnd(12)} ${Math.round(s.perSecond).toString().padStart(7)} ${ms(l.p50).padStart(9)} ${ms(l.p90).padStart(9)} ${ms(l.p99).padStart(9)} ${ms(l.max, 1).padStart(10)} ${cpuPerRequest.padStart(8)} ${pct(m.cpu.serverS / m.cpu.wallS).padStart(5)} ${pct(m.cpu.loadgenS / m.cpu.wallS).padStart(7)} ${pct(m.cpu.otherS / m.cpu.wallS).padStart(6)} ${ms(m.loopDelay.p99, 1).padStart(8)} ${ms(m.loopDelay.max, 1).padStart(8)}  ${bg}${replaced}`,
    );
  }
  console.log(
    "(CPU/req = node process CPU time, function workers included, per answered call, closed loops only; node / loadgen / other = CPU time over wall time, 100% = one core of 2; loop = the node's event loop delay, monitorEventLoopDelay at 1 ms resolution.)",
  );
  console.log("");
  const verdict = (ok: boolean) => (ok ? "met" : "MISSED");
  const find = (name: string) => measured.find((m) => m.name === name);
  const hb = find(`heartbeat @${CALL_RATE}/s`);
  for (const fn of ["noop", "vars"]) {
    const m = find(`${fn} @${CALL_RATE}/s`);
    if (!m || !hb) continue;
    const [s, b] = [row(m), row(hb)];
    console.log(
      `${`call ${fn} @${CALL_RATE}/s:`.padEnd(22)} p50 ${ms(s.latencyMs.p50)}, p99 ${ms(s.latencyMs.p99)} (heartbeat round trip p50 ${ms(b.latencyMs.p50)}, p99 ${ms(b.latencyMs.p99)}); target p99 ≤ ${TARGET_CALL_P99_MS} ms: ${verdict(s.latencyMs.p99 <= TARGET_CALL_P99_MS)}`,
    );
  }
  for (const fn of ["noop", "vars"]) {
    const m = find(`${fn} closed`);
    if (m) console.log(`${`call ${fn} closed loop:`.padEnd(22)} ${Math.round(row(m).perSecond)}/s, p99 ${ms(row(m).latencyMs.p99)}`);
  }
  const baselines = measured.filter((m) => m.name.startsWith("baseline")).map((m) => row(m).latencyMs.p99);
  const base = Math.min(...baselines);
  const worst = Math.max(...baselines);
  for (const m of measured.filter((one) => one.background && one.background.length > 0)) {
    const p99 = row(m).latencyMs.p99;
    console.log(
      `heartbeat @${HEARTBEAT_RATE}/s ${m.name}: p99 ${ms(p99)} against baselines ${baselines.map((b) => ms(b)).join(" / ")}: rise ${ms(p99 - base)} over the lowest, ${ms(p99 - worst)} over the highest; target rise < ${TARGET_HEARTBEAT_RISE_MS} ms: ${verdict(p99 - base < TARGET_HEARTBEAT_RISE_MS)}`,
    );
  }
}
