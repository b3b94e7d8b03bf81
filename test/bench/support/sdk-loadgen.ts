/**
 * A load generator that speaks through the SDK (src/sdk: AuthNexusClient, the client a vendor's
 * program holds), in its own process so it never shares an event loop with the node it measures.
 * Every client is AuthNexusClient.connect with an in-memory configuration pinned to the node
 * (test/helpers/sdk-clients.ts): mutual TLS with the application's client certificate, the
 * node's OCSP staple verified by the SDK, hello, then a password login.
 *
 * Driven by its parent with one JSON command per line on stdin (support/business-target.ts
 * JsonLineChild); answers one JSON line per command ({"error": "..."} when a command failed):
 *
 *   {"cmd":"open","count":200,"concurrency":16,"devicePrefix":"d","users":[…],"userVariable":{"key":"k","value":"v"}}
 *       connects `count` more clients, client k logged in as users[k % users.length] on its own
 *       device, and (when given) sets one user variable through the SDK
 *   {"cmd":"run","streams":[{"op":"heartbeat"|"call","fn":"name","params":…,"rate":200,"from":0,"to":50}],
 *    "background":[{"fn":"spin","from":200,"to":204}],"seconds":5,"warmup":1}
 *       drives clients [from, to): each stream at `rate` requests/s in all (open loop,
 *       round-robin, a request is sent when due even if the previous one of its client is
 *       unanswered), or one stream at rate 0 for a closed loop (each client sends its next
 *       request when its last is answered). `background` clients call `fn` back to back (one in
 *       flight each) from the start of the warm-up to the end of the measured window, their
 *       answers counted by outcome but not timed. Latency is from just before the SDK call to
 *       its promise settling.
 *   {"cmd":"close"}   closes every client
 *   {"cmd":"exit"}
 *
 * Usage: node --import tsx test/bench/support/sdk-loadgen.ts <config.json>
 *        (config: SdkLoadgenConfig below)
 */
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { AuthNexusClient, isAuthNexusError, type SdkConfig } from "../../../src/sdk/index.js";
import type { Value } from "../../../src/shared/protocol/index.js";
import { type ClientTrustMaterial, pinnedSdkConfig } from "../../helpers/sdk-clients.js";
import type { LatencySummary, LoadgenUser } from "./business-loadgen.js";

export interface SdkLoadgenConfig {
  host: string;
  port: number;
  appId: string;
  secret: string;
  material: ClientTrustMaterial;
}

export type SdkOp = "heartbeat" | "call";

export interface SdkStream {
  op: SdkOp;
  /** The cloud function, for op "call". */
  fn?: string;
  params?: Value;
  /** Requests/s over all its clients; 0 = closed loop (the only stream then). */
  rate: number;
  /** Clients [from, to) of those opened. */
  from: number;
  to: number;
}

export interface SdkBackground {
  fn: string;
  from: number;
  to: number;
}

export type SdkLoadgenCommand =
  | {
      cmd: "open";
      count: number;
      concurrency: number;
      devicePrefix: string;
      users: LoadgenUser[];
      userVariable?: { key: string; value: string };
    }
  | { cmd: "run"; streams: SdkStream[]; background?: SdkBackground[]; seconds: number; warmup: number }
  | { cmd: "close" }
  | { cmd: "exit" };

export interface SdkOpenResult {
  opened: number;
  total: number;
  seconds: number;
  heartbeatIntervalMs: number;
}

export interface SdkStreamResult extends SdkStream {
  requests: number;
  /** Error code → count (measured window). */
  errors: Record<string, number>;
  perSecond: number;
  latencyMs: LatencySummary;
  /** One answer, JSON, to show the function ran as meant. */
  sample: string | null;
}

export interface SdkBackgroundResult extends SdkBackground {
  /** Outcome ("ok" or the error code) → count, warm-up included. */
  outcomes: Record<string, number>;
  /** Calls answered per second over the whole run. */
  perSecond: number;
  /** Mean time from a call to its answer, ms. */
  meanMs: number;
}

export interface SdkRunResult {
  streams: SdkStreamResult[];
  background: SdkBackgroundResult[];
  seconds: number;
  loadgenCpuS: number;
}

const config = JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as SdkLoadgenConfig;
const sdkConfig: SdkConfig = pinnedSdkConfig(config.appId, config.material, [{ host: config.host, port: config.port }]);
const clients: AuthNexusClient[] = [];

async function openClients(command: Extract<SdkLoadgenCommand, { cmd: "open" }>): Promise<SdkOpenResult> {
  const started = performance.now();
  const base = clients.length;
  const made: AuthNexusClient[] = new Array(command.count);
  let next = 0;
  let heartbeatIntervalMs = 0;
  const worker = async () => {
    for (let i = next++; i < command.count; i = next++) {
      const index = base + i;
      const client = await AuthNexusClient.connect({
        config: sdkConfig,
        appSecret: config.secret,
        deviceId: `${command.devicePrefix}-${index}`,
        // A lost connection is a failure to report, not to repair behind the figures.
        reconnect: false,
      });
      const user = command.users[index % command.users.length] as LoadgenUser;
      await client.loginPassword(user.username, user.password);
      if (command.userVariable) await client.setUserVariable(command.userVariable.key, command.userVariable.value);
      heartbeatIntervalMs = client.node?.heartbeatIntervalMs ?? 0;
      made[i] = client;
    }
  };
  await Promise.all(Array.from({ length: Math.min(command.concurrency, command.count) }, worker));
  clients.push(...made);
  return { opened: command.count, total: clients.length, seconds: (performance.now() - started) / 1000, heartbeatIntervalMs };
}

function codeOf(error: unknown): string {
  return isAuthNexusError(error) ? error.code : `thrown: ${(error as Error).message}`;
}

async function run(command: Extract<SdkLoadgenCommand, { cmd: "run" }>): Promise<SdkRunResult> {
  const closedLoop = command.streams.some((s) => s.rate === 0);
  if (closedLoop && command.streams.length !== 1) throw new Error("a closed loop runs alone");
  const pick = (from: number, to: number) => {
    const picked = clients.slice(from, to);
    if (picked.length !== to - from || picked.length === 0) throw new Error(`clients [${from}, ${to}) are not open`);
    return picked;
  };
  let recording = false;
  let running = true;
  let inFlight = 0;
  const streams = command.streams.map((stream) => ({
    ...stream,
    clients: pick(stream.from, stream.to),
    cursor: 0,
    sent: 0,
    latencies: [] as number[],
    errors: {} as Record<string, number>,
    sample: null as string | null,
  }));
  type Running = (typeof streams)[number];
  const send = (stream: Running, client: AuthNexusClient): void => {
    const record = recording;
    inFlight += 1;
    const started = performance.now();
    const request: Promise<unknown> =
      stream.op === "heartbeat" ? client.heartbeat() : client.callFunction(stream.fn as string, stream.params ?? null);
    request.then(
      (value) => {
        const took = performance.now() - started;
        inFlight -= 1;
        if (record && recording) {
          stream.latencies.push(took);
          if (stream.sample === null && stream.op === "call") stream.sample = JSON.stringify(value);
        }
        if (closedLoop && running) send(stream, client);
      },
      (error: unknown) => {
        inFlight -= 1;
        if (record && recording) {
          const code = codeOf(error);
          stream.errors[code] = (stream.errors[code] ?? 0) + 1;
        }
        if (closedLoop && running) send(stream, client);
      },
    );
  };

  const background = (command.background ?? []).map((b) => ({
    ...b,
    clients: pick(b.from, b.to),
    outcomes: {} as Record<string, number>,
    took: 0,
  }));
  let backgroundRunning = true;
  const backgroundLoops = background.flatMap((b) =>
    b.clients.map(async (client) => {
      while (backgroundRunning) {
        const started = performance.now();
        let outcome = "ok";
        try {
          await client.callFunction(b.fn, null);
        } catch (error) {
          outcome = codeOf(error);
        }
        b.took += performance.now() - started;
        b.outcomes[outcome] = (b.outcomes[outcome] ?? 0) + 1;
      }
    }),
  );
  const runStarted = performance.now();

  let cpu = process.cpuUsage();
  let recordStart = 0;
  const startRecording = () => {
    recording = true;
    recordStart = performance.now();
    cpu = process.cpuUsage();
  };
  const warmupEnds = performance.now() + command.warmup * 1000;
  const ends = warmupEnds + command.seconds * 1000;
  if (closedLoop) {
    const stream = streams[0] as Running;
    for (const client of stream.clients) send(stream, client);
    await sleep(command.warmup * 1000);
    startRecording();
    await sleep(command.seconds * 1000);
  } else {
    const started = performance.now();
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        if (!recording && now >= warmupEnds) startRecording();
        if (now >= ends) return resolve();
        for (const stream of streams) {
          const due = Math.floor(((now - started) / 1000) * stream.rate);
          for (; stream.sent < due; stream.sent++) {
            send(stream, stream.clients[stream.cursor] as AuthNexusClient);
            stream.cursor = (stream.cursor + 1) % stream.clients.length;
          }
        }
        setTimeout(tick, 1);
      };
      tick();
    });
  }
  const seconds = (performance.now() - recordStart) / 1000;
  const used = process.cpuUsage(cpu);
  recording = false;
  running = false;
  backgroundRunning = false;
  const backgroundSeconds = (performance.now() - runStarted) / 1000;
  // Let what is in flight drain before the next command.
  const deadline = performance.now() + 15_000;
  while (inFlight > 0 && performance.now() < deadline) await sleep(10);
  await Promise.all(backgroundLoops);
  return {
    streams: streams.map((s) => ({
      op: s.op,
      ...(s.fn === undefined ? {} : { fn: s.fn }),
      rate: s.rate,
      from: s.from,
      to: s.to,
      requests: s.latencies.length,
      errors: s.errors,
      perSecond: s.latencies.length / seconds,
      latencyMs: summarize(s.latencies),
      sample: s.sample,
    })),
    background: background.map((b) => {
      const answered = Object.values(b.outcomes).reduce((a, n) => a + n, 0);
      return {
        fn: b.fn,
        from: b.from,
        to: b.to,
        outcomes: b.outcomes,
        perSecond: answered / backgroundSeconds,
        meanMs: answered === 0 ? Number.NaN : b.took / answered,
      };
    }),
    seconds,
    loadgenCpuS: (used.user + used.system) / 1e6,
  };
}

async function closeAll(): Promise<{ closed: number }> {
  const all = clients.splice(0);
  await Promise.all(all.map((c) => c.close().catch(() => undefined)));
  return { closed: all.length };
}

function summarize(values: number[]): LatencySummary {
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) =>
    sorted.length === 0 ? Number.NaN : (sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1] as number);
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    p50: at(50),
    p90: at(90),
    p99: at(99),
    p999: at(99.9),
    max: sorted.length ? (sorted[sorted.length - 1] as number) : Number.NaN,
    mean: sorted.length ? sum / sorted.length : Number.NaN,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    const command = JSON.parse(line) as SdkLoadgenCommand;
    try {
      let answer: unknown;
      if (command.cmd === "open") answer = await openClients(command);
      else if (command.cmd === "run") answer = await run(command);
      else if (command.cmd === "close") answer = await closeAll();
      else {
        await closeAll();
        process.stdout.write(`${JSON.stringify({ bye: true })}\n`, () => process.exit(0));
        return;
      }
      process.stdout.write(`${JSON.stringify(answer)}\n`);
    } catch (error) {
      process.stdout.write(`${JSON.stringify({ error: (error as Error).stack ?? String(error) })}\n`);
    }
  });
});
lines.on("close", () => process.exit(0));
