/**
 * The bare node:tls baseline of the business-port benchmarks (./bare-tls.ts) in its own process.
 *
 * Prints {"port":N} once listening; then answers JSON commands on stdin, one line each:
 *   {"cmd":"memory"}       → process.memoryUsage() after a full GC, and {"connections"}
 *   {"cmd":"connections"}  → {"connections"}
 *
 * Usage: node --expose-gc --import tsx test/bench/support/bare-tls-server.ts <config.json>
 *        (config: {"certPem","keyPem","caPems","staple" (base64 or null),"nodeId","userId","username"})
 */
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { type BareTlsConfig, startBareTlsServer } from "./bare-tls.js";

const server = await startBareTlsServer(JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as BareTlsConfig);
process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);

const gc = (globalThis as { gc?: () => void }).gc;
createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line) as { cmd: string };
  if (command.cmd === "memory") {
    gc?.();
    gc?.();
    process.stdout.write(`${JSON.stringify({ ...process.memoryUsage(), connections: server.connections(), gc: gc !== undefined })}\n`);
  } else process.stdout.write(`${JSON.stringify({ connections: server.connections() })}\n`);
});
process.on("SIGTERM", () => process.exit(0));
process.stdin.on("end", () => process.exit(0));
