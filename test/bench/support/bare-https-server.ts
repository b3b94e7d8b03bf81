/**
 * The floor under the node API for test/bench/checkin.bench.ts: a bare node:https server with
 * the CP's own 9091 TLS settings (the same certificate chain and key, client certificates
 * required and checked against cp_node_client_ca, TLS ≥ 1.2) that reads each request body and
 * answers a fixed small JSON 404 — no framework, no database, no log. What remains of a
 * request's cost here is Node's TLS and HTTP on this machine, which no change to AuthNexus
 * code can remove. Runs as its own process, like the CP.
 *
 * Usage: node --import tsx test/bench/support/bare-https-server.ts <identity.json> <port>
 *        (identity.json: {"certPem","keyPem","serverCaPem","nodeClientCaPems"}; prints "ready")
 */
import { readFileSync } from "node:fs";
import https from "node:https";
import { type CpTlsIdentity, nodeApiTlsOptions } from "../../../src/cp/services/pki/cp-identity.js";

const identity = JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as CpTlsIdentity;
const port = Number(process.argv[3]);
const body = JSON.stringify({ error: "ROUTE_NOT_FOUND", message: "No such endpoint." });

const server = https.createServer(nodeApiTlsOptions(identity), (req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(404, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.listen(port, "127.0.0.1", () => console.log("ready"));
process.on("SIGTERM", () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
