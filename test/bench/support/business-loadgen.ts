/**
 * The load generator of the business-port benchmarks, in its own process so it never shares an
 * event loop with the node it measures. Speaks the binary protocol (docs/protocol.md) over raw
 * node:tls with the shared codec (src/shared/protocol): every connection is a full mutual-TLS
 * handshake with the application's client certificate, the node's certificate checked against
 * the server CA and its OCSP staple asked for (it must be present and byte-identical to the
 * response the node's stapler fetched and verified), then `hello`.
 *
 * Driven by its parent with one JSON command per line on stdin; answers one JSON line per
 * command on stdout ({"error": "..."} when a command failed):
 *
 *   {"cmd":"open","count":500,"concurrency":32,"login":"password","devicePrefix":"d","users":[…]}
 *       opens `count` connections (hello, then a password login when asked), keeps them open
 *   {"cmd":"run","streams":[{"op":"heartbeat"|"login_token"|"login_password","rate":1000},…],"seconds":5,"warmup":1}
 *       drives the open connections: each stream at `rate` requests/s in all (open loop, spread
 *       round-robin, a request is sent when due even if the previous one on its connection is
 *       unanswered; several streams run at once), or one stream at rate 0 for a closed loop
 *       (each connection sends its next request when its last is answered); latency is from
 *       just before the write to the decoded answer, per stream
 *   {"cmd":"handshakes","seconds":5,"warmup":1,"concurrency":16,"hello":false}
 *       new connection after new connection: TLS (+ hello) then a clean close
 *   {"cmd":"close"}   closes every open connection
 *   {"cmd":"exit"}
 *
 * Usage: node --import tsx test/bench/support/business-loadgen.ts <config.json>
 *        (config: {"host","port","certPem","keyPem","caPem","staple" (base64 or null),"appId","secret"})
 */
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import tls, { type TLSSocket } from "node:tls";
import {
  type Decoded,
  decodeMessage,
  encodeMessage,
  FrameDecoder,
  type Message,
  type MessageName,
} from "../../../src/shared/protocol/index.js";

export interface LoadgenConfig {
  host: string;
  port: number;
  certPem: string;
  keyPem: string;
  caPem: string;
  /** The OCSP response every handshake must staple (base64), or null to not ask for one. */
  staple: string | null;
  appId: string;
  secret: string;
}

export interface LoadgenUser {
  username: string;
  password: string;
}

export type LoadgenCommand =
  | { cmd: "open"; count: number; concurrency: number; login: "password" | "none"; devicePrefix: string; users: LoadgenUser[] }
  | { cmd: "run"; streams: Stream[]; seconds: number; warmup: number }
  | { cmd: "handshakes"; seconds: number; warmup: number; concurrency: number; hello: boolean }
  | { cmd: "close" }
  | { cmd: "exit" };

export interface OpenResult {
  opened: number;
  total: number;
  seconds: number;
  /** Sizes of the first hello_ok and auth_ok frames, bytes. */
  helloOkBytes: number;
  authOkBytes: number;
  /** A user id and username the node answered with (for a baseline's same-size answers). */
  sampleUserId: string | null;
  sampleUsername: string | null;
  loadgenCpuS: number;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export type Op = "heartbeat" | "login_token" | "login_password";
/** One kind of request at `rate` per second over all connections; rate 0 = closed loop (the only stream then). */
export interface Stream {
  op: Op;
  rate: number;
}

export interface StreamResult extends Stream {
  requests: number;
  errors: Record<string, number>;
  perSecond: number;
  latencyMs: LatencySummary;
  answerBytes: number;
}

export interface RunResult {
  streams: StreamResult[];
  seconds: number;
  loadgenCpuS: number;
}

export interface HandshakeResult {
  handshakes: number;
  failures: Record<string, number>;
  seconds: number;
  perSecond: number;
  latencyMs: LatencySummary;
  loadgenCpuS: number;
}

const config = JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as LoadgenConfig;
const expectedStaple = config.staple === null ? null : Buffer.from(config.staple, "base64");
// One secure context for every connection: the client's own PEM parsing stays out of the loop.
const secureContext = tls.createSecureContext({ cert: config.certPem, key: config.keyPem, ca: config.caPem, minVersion: "TLSv1.2" });
const CONNECT_TIMEOUT_MS = 30_000;

type Waiter = { resolve: (answer: Decoded) => void; reject: (error: Error) => void };

/** One SDK-like connection: a request id counter, the frame decoder, and what waits for answers. */
class Connection {
  readonly decoder = new FrameDecoder();
  nextId = 1;
  token: Buffer | null = null;
  /** For setup calls: request id → promise. */
  readonly waiters = new Map<number, Waiter>();
  /** For load: request id → [performance.now() at the write, the stream it belongs to]. */
  readonly sentAt = new Map<number, [number, number]>();
  onAnswer: ((connection: Connection, answer: Decoded, frameBytes: number, ms: number, stream: number) => void) | null = null;
  closed = false;

  constructor(readonly socket: TLSSocket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => undefined);
    socket.once("close", () => {
      this.closed = true;
      for (const waiter of this.waiters.values()) waiter.reject(new Error("connection closed"));
      this.waiters.clear();
    });
  }

  call<N extends MessageName>(name: N, body: Message<N>): Promise<Decoded> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiters.set(id, { resolve, reject });
      this.socket.write(encodeMessage(name, id, body));
    });
  }

  /** Sends a prepared frame whose request id bytes (8..11) are overwritten with the next id. */
  fire(frame: Buffer, stream: number): void {
    const id = this.nextId++;
    frame.writeUInt32BE(id, 8);
    this.sentAt.set(id, [performance.now(), stream]);
    this.socket.write(frame);
  }

  private onData(chunk: Buffer): void {
    const arrived = performance.now();
    for (const frame of this.decoder.push(chunk)) {
      const answer = decodeMessage(frame);
      if (!answer) throw new Error(`unknown answer type 0x${frame.type.toString(16)}`);
      const waiter = this.waiters.get(frame.requestId);
      if (waiter) {
        this.waiters.delete(frame.requestId);
        lastFrameBytes = frame.payload.length + 12;
        waiter.resolve(answer);
        continue;
      }
      const sent = this.sentAt.get(frame.requestId);
      if (sent !== undefined) {
        this.sentAt.delete(frame.requestId);
        this.onAnswer?.(this, answer, frame.payload.length + 12, arrived - sent[0], sent[1]);
      } else if (answer.name === "error") {
        throw new Error(`connection-level error ${answer.body.code}: ${answer.body.message}`);
      }
    }
  }
}

let lastFrameBytes = 0;
const open: Connection[] = [];

/** TLS with the staple checked; resolves once the handshake is done. */
function connectTls(): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    let staple: Buffer | null = null;
    const options: tls.ConnectionOptions & { requestOCSP: boolean } = {
      host: config.host,
      port: config.port,
      secureContext,
      requestOCSP: expectedStaple !== null,
      rejectUnauthorized: true,
    };
    const socket = tls.connect(options);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("TLS handshake timed out"));
    }, CONNECT_TIMEOUT_MS);
    socket.once("OCSPResponse", (response: Buffer) => {
      staple = response;
    });
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      if (expectedStaple !== null && (staple === null || !staple.equals(expectedStaple))) {
        socket.destroy();
        reject(new Error(staple === null ? "no OCSP staple" : "a different OCSP staple"));
        return;
      }
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once("close", () => {
      clearTimeout(timer);
      reject(new Error("closed during the TLS handshake"));
    });
  });
}

function expect(answer: Decoded, name: MessageName, what: string): void {
  if (answer.name === name) return;
  const detail = answer.name === "error" ? `error ${answer.body.code} ${answer.body.message}` : answer.name;
  throw new Error(`${what}: expected ${name}, got ${detail}`);
}

function hello(connection: Connection, deviceId: string): Promise<Decoded> {
  return connection.call("hello", { app_id: config.appId, app_secret: config.secret, device_id: deviceId, sdk_version: "bench-1.0.0" });
}

async function openConnections(command: Extract<LoadgenCommand, { cmd: "open" }>): Promise<OpenResult> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  const result: OpenResult = {
    opened: 0,
    total: 0,
    seconds: 0,
    helloOkBytes: 0,
    authOkBytes: 0,
    sampleUserId: null,
    sampleUsername: null,
    loadgenCpuS: 0,
  };
  let next = 0;
  const base = open.length;
  const worker = async () => {
    for (let i = next++; i < command.count; i = next++) {
      const connection = new Connection(await connectTls());
      const index = base + i;
      const helloOk = await hello(connection, `${command.devicePrefix}-${index}`);
      expect(helloOk, "hello_ok", "hello");
      result.helloOkBytes ||= lastFrameBytes;
      if (command.login === "password") {
        const user = command.users[index % command.users.length] as LoadgenUser;
        const answer = await connection.call("login_password", { username: user.username, password: user.password });
        expect(answer, "auth_ok", `login of ${user.username}`);
        if (answer.name === "auth_ok") {
          connection.token = answer.body.token;
          result.authOkBytes ||= lastFrameBytes;
          result.sampleUserId ??= answer.body.user_id;
          result.sampleUsername ??= answer.body.username;
        }
      }
      open.push(connection);
      result.opened += 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(command.concurrency, command.count) }, worker));
  const used = process.cpuUsage(cpu);
  result.total = open.length;
  result.seconds = (performance.now() - started) / 1000;
  result.loadgenCpuS = (used.user + used.system) / 1e6;
  return result;
}

/** The request frame of `op` for one connection (its request id is filled in per send). */
function requestFrame(op: Op, connection: Connection, user: LoadgenUser | undefined): Buffer {
  if (op === "heartbeat") return encodeMessage("heartbeat", 0, {});
  if (op === "login_token") {
    if (!connection.token) throw new Error("login_token needs connections opened with a password login");
    return encodeMessage("login_token", 0, { token: connection.token });
  }
  if (!user) throw new Error("login_password needs the users the connections logged in as");
  return encodeMessage("login_password", 0, { username: user.username, password: user.password });
}

const ANSWER_OF: Record<Op, MessageName> = { heartbeat: "heartbeat_ack", login_token: "auth_ok", login_password: "auth_ok" };

async function run(command: Extract<LoadgenCommand, { cmd: "run" }>, users: LoadgenUser[]): Promise<RunResult> {
  const live = open.filter((c) => !c.closed);
  if (live.length === 0) throw new Error("no open connections");
  const closedLoop = command.streams.some((s) => s.rate === 0);
  if (closedLoop && command.streams.length !== 1) throw new Error("a closed loop runs alone");
  const indexOf = new Map(live.map((c, i) => [c, i]));
  const streams = command.streams.map((stream) => ({
    ...stream,
    // Connection k of `open` logged in as users[k % users.length], on its own device.
    frames: live.map((c) => requestFrame(stream.op, c, users[open.indexOf(c) % Math.max(1, users.length)])),
    latencies: [] as number[],
    errors: {} as Record<string, number>,
    answerBytes: 0,
  }));
  let recording = false;
  let running = true;
  let cpu = process.cpuUsage();
  let recordStart = 0;
  const send = (connection: Connection, stream: number) => {
    // A fresh buffer per write: the socket may still hold the previous one.
    connection.fire(Buffer.from((streams[stream] as (typeof streams)[number]).frames[indexOf.get(connection) as number] as Buffer), stream);
  };
  for (const connection of live) {
    connection.onAnswer = (c, answer, bytes, ms, index) => {
      const stream = streams[index] as (typeof streams)[number];
      if (answer.name !== ANSWER_OF[stream.op]) {
        const key = answer.name === "error" ? `${answer.body.code} ${answer.body.message}` : answer.name;
        stream.errors[key] = (stream.errors[key] ?? 0) + 1;
      } else stream.answerBytes = bytes;
      if (recording) stream.latencies.push(ms);
      if (closedLoop && running) send(c, index);
    };
  }
  const warmupEnds = performance.now() + command.warmup * 1000;
  const ends = warmupEnds + command.seconds * 1000;
  const startRecording = () => {
    recording = true;
    recordStart = performance.now();
    cpu = process.cpuUsage();
  };
  if (closedLoop) {
    for (const connection of live) send(connection, 0);
    await sleep(command.warmup * 1000);
    startRecording();
    await sleep(command.seconds * 1000);
  } else {
    // Open loop: every tick sends what is due since the start, round-robin over the connections
    // (each stream starting at its own offset, so streams do not land on the same connection).
    const started = performance.now();
    const sent = streams.map(() => 0);
    const cursors = streams.map((_, i) => Math.floor((i * live.length) / streams.length));
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        if (!recording && now >= warmupEnds) startRecording();
        if (now >= ends) {
          resolve();
          return;
        }
        streams.forEach((stream, i) => {
          const due = Math.floor(((now - started) / 1000) * stream.rate);
          for (; (sent[i] as number) < due; sent[i] = (sent[i] as number) + 1) {
            send(live[cursors[i] as number] as Connection, i);
            cursors[i] = ((cursors[i] as number) + 1) % live.length;
          }
        });
        setTimeout(tick, 1);
      };
      tick();
    });
  }
  const seconds = (performance.now() - recordStart) / 1000;
  const used = process.cpuUsage(cpu);
  recording = false;
  running = false;
  // Let the requests still in flight drain before the next command.
  const deadline = performance.now() + 10_000;
  while (live.some((c) => c.sentAt.size > 0) && performance.now() < deadline) await sleep(10);
  for (const connection of live) connection.onAnswer = null;
  return {
    streams: streams.map((s) => ({
      op: s.op,
      rate: s.rate,
      requests: s.latencies.length,
      errors: s.errors,
      perSecond: s.latencies.length / seconds,
      latencyMs: summarize(s.latencies),
      answerBytes: s.answerBytes,
    })),
    seconds,
    loadgenCpuS: (used.user + used.system) / 1e6,
  };
}

async function handshakes(command: Extract<LoadgenCommand, { cmd: "handshakes" }>): Promise<HandshakeResult> {
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let recording = false;
  let count = 0;
  let cpu = process.cpuUsage();
  let recordStart = 0;
  const warmupEnds = performance.now() + command.warmup * 1000;
  const ends = warmupEnds + command.seconds * 1000;
  let device = 0;
  const worker = async () => {
    while (performance.now() < ends) {
      if (!recording && performance.now() >= warmupEnds) {
        recording = true;
        recordStart = performance.now();
        cpu = process.cpuUsage();
      }
      const started = performance.now();
      try {
        const socket = await connectTls();
        const connection = new Connection(socket);
        if (command.hello) expect(await hello(connection, `hs-${device++}`), "hello_ok", "hello");
        const took = performance.now() - started;
        if (recording) {
          latencies.push(took);
          count += 1;
        }
        await new Promise<void>((resolve) => {
          socket.once("close", () => resolve());
          socket.end();
        });
      } catch (error) {
        const key = (error as Error).message;
        failures[key] = (failures[key] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: command.concurrency }, worker));
  const seconds = (performance.now() - recordStart) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    handshakes: count,
    failures,
    seconds,
    perSecond: count / seconds,
    latencyMs: summarize(latencies),
    loadgenCpuS: (used.user + used.system) / 1e6,
  };
}

async function closeAll(): Promise<{ closed: number }> {
  const all = open.splice(0);
  await Promise.all(
    all.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.closed) return resolve();
          c.socket.once("close", () => resolve());
          c.socket.end();
          setTimeout(() => c.socket.destroy(), 2000).unref();
        }),
    ),
  );
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

let users: LoadgenUser[] = [];
const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    const command = JSON.parse(line) as LoadgenCommand;
    try {
      let answer: unknown;
      if (command.cmd === "open") {
        users = command.users.length > 0 ? command.users : users;
        answer = await openConnections(command);
      } else if (command.cmd === "run") answer = await run(command, users);
      else if (command.cmd === "handshakes") answer = await handshakes(command);
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
