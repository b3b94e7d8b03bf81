/**
 * Channel 4 over HTTP: our OCSP responder (a real `authnexus serve-cp` process, statuses read
 * from the Control DB on every request, signed on demand) against `openssl ocsp -index … -port`
 * serving the same certificate with the same CA key, in the same run. The same client drives
 * both: C concurrent workers POSTing the same openssl-made request for D seconds, a new
 * connection per request (openssl's responder closes after each answer), plus one extra run
 * against ours with keep-alive. One response from each is checked by `openssl ocsp -respin`.
 *
 * Run: node --import tsx test/bench/ocsp-http.bench.ts [seconds=5] [concurrency=8]
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import type { Kysely } from "kysely";
import { loadActiveCa } from "../../src/cp/services/pki/inventory.js";
import { type ControlSchema, openDatabase } from "../../src/shared/db/index.js";
import { freePort } from "../helpers/authnexus-process.js";
import { runProcess, startCpProcess } from "../helpers/cp-process.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const SECONDS = Number(process.argv[2] ?? 5);
const CONCURRENCY = Number(process.argv[3] ?? 8);

const dir = await makeTempDir("authnexus-ocsp-bench");
const masterKey = randomBytes(32);
const cp = await startCpProcess({
  dataDir: dir.path,
  extraArgs: process.env.BENCH_LOG_LEVEL ? ["--log-level", process.env.BENCH_LOG_LEVEL] : [],
  env: { AUTHNEXUS_MASTER_KEY: masterKey.toString("hex") },
  nodeArgs: process.env.BENCH_CP_NODE_ARGS?.split(" ") ?? [],
});
try {
  const token = (await cp.waitForStderr(/Console token: (\S+)/))[1] ?? "";
  await completeSetupOver(cp.adminFetch, token);
  const ours = Number((await cp.waitForListener("ocsp")).split(":").pop());
  await writeOpensslFiles(dir.path, masterKey);
  const openssl = await startOpensslResponder(dir.path);
  try {
    await runProcess("openssl", ["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-reqout", "req.der"], { cwd: dir.path });
    const request = readFileSync(join(dir.path, "req.der"));
    for (const [name, port] of [
      ["authnexus", ours],
      ["openssl", openssl.port],
    ] as const)
      await verifyWithOpenssl(dir.path, name, port);

    const rows: Array<[string, number]> = [];
    const measure = async (label: string, port: number, keepAlive: boolean) => {
      await load(port, request, 1, keepAlive); // warm-up
      const rate = await load(port, request, SECONDS, keepAlive);
      rows.push([label, rate]);
      console.log(`${label.padEnd(52)} ${Math.round(rate)}/s`);
    };
    await measure("openssl ocsp -index -port (new connection each)", openssl.port, false);
    await measure("authnexus serve-cp 9092 (new connection each)", ours, false);
    await measure("authnexus serve-cp 9092 (keep-alive)", ours, true);
    const [opensslRate, oursRate] = [rows[0]?.[1] ?? 0, rows[1]?.[1] ?? 0];
    console.log(`ratio authnexus / openssl (same client, new connection each): ${(oursRate / opensslRate).toFixed(2)}`);
  } finally {
    openssl.stop();
  }
} finally {
  await cp.stop();
  await dir.cleanup();
}

async function completeSetupOver(adminFetch: typeof cp.adminFetch, consoleToken: string): Promise<void> {
  const res = await adminFetch("POST", "/admin/v1/setup/initialize", {
    body: { console_token: consoleToken, admin_username: "root", admin_password: "correct horse battery staple" },
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`setup failed: ${res.status} ${res.text}`);
}

/** The CP's own 9091 certificate and cp_server_ca (key unsealed with the master key) as files openssl reads. */
async function writeOpensslFiles(dataDir: string, key: Buffer): Promise<void> {
  const db = await openDatabase<ControlSchema>({ type: "sqlite", path: join(dataDir, "control.db"), busyTimeoutMs: 5000 });
  try {
    const ca = await loadActiveCa({ controlDb: db as Kysely<ControlSchema>, masterKey: key }, "cp_server_ca");
    const leaf = await db
      .selectFrom("certificates")
      .select(["cert_pem", "serial_hex", "not_after", "subject"])
      .where("purpose", "=", "cp_server")
      .executeTakeFirstOrThrow();
    writeFileSync(join(dataDir, "ca.pem"), ca.certPem);
    writeFileSync(join(dataDir, "ca.key"), ca.keyPem, { mode: 0o600 });
    writeFileSync(join(dataDir, "leaf.pem"), leaf.cert_pem);
    const expiry = new Date(leaf.not_after).toISOString().replace(/[-:T]/g, "").slice(2, 14);
    writeFileSync(
      join(dataDir, "index.txt"),
      `V\t${expiry}Z\t\t${leaf.serial_hex.toUpperCase()}\tunknown\t/${leaf.subject.replace(/, /g, "/")}\n`,
    );
  } finally {
    await db.destroy();
  }
}

async function startOpensslResponder(cwd: string): Promise<{ port: number; stop(): void }> {
  const port = await freePort();
  const child = spawn(
    "openssl",
    [
      "ocsp",
      "-index",
      "index.txt",
      "-port",
      String(port),
      "-rsigner",
      "ca.pem",
      "-rkey",
      "ca.key",
      "-CA",
      "ca.pem",
      "-nmin",
      "5",
      "-ignore_err",
    ],
    {
      cwd,
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  // Not a connect probe: the single-threaded responder would sit waiting on the probe's socket.
  const ready = await new Promise<boolean>((resolve) => {
    let seen = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes("waiting for OCSP client connections")) resolve(true);
    });
    child.on("exit", () => resolve(false));
    setTimeout(() => resolve(false), 10_000);
  });
  if (ready) return { port, stop: () => child.kill("SIGTERM") };
  child.kill("SIGKILL");
  throw new Error("openssl ocsp responder did not start");
}

async function verifyWithOpenssl(cwd: string, name: string, port: number): Promise<void> {
  const r = await runProcess(
    "openssl",
    ["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-url", `http://127.0.0.1:${port}/ocsp/`, "-CAfile", "ca.pem"],
    { cwd },
  );
  if (!/leaf\.pem: good/.test(r.stdout) || !/Response verify OK/.test(r.stderr + r.stdout))
    throw new Error(`${name}: openssl did not verify a good answer:\n${r.stdout}\n${r.stderr}`);
  console.log(`${name}: openssl ocsp verified the response (good)`);
}

/** Requests per second over `seconds` with CONCURRENCY workers; every answer must be a 200 OCSP success. */
async function load(port: number, body: Buffer, seconds: number, keepAlive: boolean): Promise<number> {
  const agent = new http.Agent({ keepAlive, maxSockets: CONCURRENCY });
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  const worker = async () => {
    while (performance.now() < deadline) {
      const answer = await post(port, body, agent);
      if (!isSuccessfulOcspResponse(answer)) throw new Error("OCSP answer was not successful");
      done++;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  agent.destroy();
  return (done * 1000) / (performance.now() - started);
}

/** OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED (0 = successful), ... } */
function isSuccessfulOcspResponse(der: Buffer): boolean {
  const lengthByte = der[1] ?? 0;
  const statusAt = 2 + (lengthByte & 0x80 ? lengthByte & 0x7f : 0);
  return der[0] === 0x30 && der[statusAt] === 0x0a && der[statusAt + 1] === 0x01 && der[statusAt + 2] === 0x00;
}

function post(port: number, body: Buffer, agent: http.Agent): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path: "/ocsp/",
        method: "POST",
        agent,
        headers: { "content-type": "application/ocsp-request", "content-length": body.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks)) : reject(new Error(`HTTP ${res.statusCode}`))));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}
