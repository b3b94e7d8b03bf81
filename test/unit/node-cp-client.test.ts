/**
 * The node's CpClient against a real mTLS server (certificates minted per run): it presents
 * the node's client certificate, honours a path prefix in cp_url, validates answers against
 * the contract, and turns each way a call can fail into the right CpCallError kind — an HTTP
 * refusal with the CP's code, a response that is not JSON or not the contract, one over the
 * size cap (refused, not truncated), a deadline, a server it cannot reach, a server whose
 * certificate it must not trust, and close() aborting a call in flight.
 */
import assert from "node:assert/strict";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import type { TLSSocket } from "node:tls";
import { CpCallError } from "../../src/node/agent/cp-call-error.js";
import { CpClient } from "../../src/node/agent/cp-client.js";
import { createRootCa, issueLeafCertificate } from "../../src/shared/pki/index.js";
import { systemClock, systemScheduler } from "../../src/shared/time/index.js";
import { freePort } from "../helpers/authnexus-process.js";
import { mintNodePki, type NodePki } from "../helpers/node-agent.js";

const NODE_ID = "nod_cpclienttest";
const VALID_DELTA = { changes: [], next_since: 7, has_more: false, head: 7 };

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

describe("node CpClient over mTLS", () => {
  let pki: NodePki;
  let server: Server;
  let baseUrl: string;
  let handler: Handler = (_req, res) => res.end();
  const seen: Array<{ method: string | undefined; url: string | undefined; peerUri: string | undefined; body: string }> = [];
  const clients: CpClient[] = [];
  const tcp = { connections: 0, handshakeFailures: [] as string[], open: new Set<net.Socket>(), idleWaiters: [] as Array<() => void> };
  /**
   * Resolves once every connection the server accepted has closed. Called after the client's
   * pools are destroyed, it marks the point after which no connection can still appear: a
   * spurious reconnect (nodejs/undici#5845) would have been accepted, and have failed its
   * handshake, before it.
   */
  const serverIdle = () => (tcp.open.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => tcp.idleWaiters.push(resolve)));
  const client = (overrides: { cpUrl?: string; timeoutMs?: number; caPem?: string; maxResponseBytes?: number } = {}) => {
    const c = new CpClient({
      cpUrl: overrides.cpUrl ?? baseUrl,
      nodeId: NODE_ID,
      tls: { caPem: overrides.caPem ?? pki.cas.cp_server_ca.certPem, certPem: pki.client.certPem, keyPem: pki.client.keyPem ?? "" },
      requestTimeoutMs: () => overrides.timeoutMs ?? 5000,
      scheduler: systemScheduler,
      ...(overrides.maxResponseBytes ? { maxResponseBytes: overrides.maxResponseBytes } : {}),
    });
    clients.push(c);
    return c;
  };
  const failure = async (promise: Promise<unknown>): Promise<CpCallError> => {
    try {
      await promise;
    } catch (error) {
      assert.ok(error instanceof CpCallError, `a CpCallError, got ${String(error)}`);
      return error;
    }
    assert.fail("the call should have failed");
  };

  before(async () => {
    pki = await mintNodePki(NODE_ID, systemClock);
    const cpServer = await issueLeafCertificate({
      profile: "cp_server",
      issuer: { certPem: pki.cas.cp_server_ca.certPem, keyPem: pki.cas.cp_server_ca.keyPem ?? "" },
      commonName: "cp.test",
      sans: { ip: ["127.0.0.1"] },
      clock: systemClock,
    });
    server = createServer(
      {
        cert: cpServer.certPem,
        key: cpServer.keyPem ?? "",
        ca: pki.cas.cp_node_client_ca.certPem,
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          const peer = (req.socket as TLSSocket).getPeerCertificate();
          seen.push({ method: req.method, url: req.url, peerUri: peer.subjectaltname, body: Buffer.concat(chunks).toString("utf8") });
          handler(req, res);
        });
      },
    );
    server.on("connection", (socket: net.Socket) => {
      tcp.connections += 1;
      tcp.open.add(socket);
      socket.once("close", () => {
        tcp.open.delete(socket);
        if (tcp.open.size === 0) for (const resolve of tcp.idleWaiters.splice(0)) resolve();
      });
    });
    server.on("tlsClientError", (error) => tcp.handshakeFailures.push(error.message));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const answer =
    (status: number, body: unknown, type = "application/json"): Handler =>
    (_req, res) => {
      res.writeHead(status, { "content-type": type });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
    };

  test("a valid answer comes back parsed, from a call that presented the node's certificate under cp_url's path prefix", async () => {
    handler = answer(200, VALID_DELTA);
    seen.length = 0;
    const page = await client({ cpUrl: `${baseUrl}/behind/proxy/` }).pullDelta("auth-epochs", 3, 50);
    assert.deepEqual(page, VALID_DELTA);
    assert.equal(seen[0]?.method, "GET");
    assert.equal(seen[0]?.url, `/behind/proxy/cp/v2/nodes/${NODE_ID}/deltas/auth-epochs?since=3&limit=50`);
    assert.match(seen[0]?.peerUri ?? "", new RegExp(`URI:urn:authnexus:node:${NODE_ID}`));
  });

  test("a POST carries its JSON body", async () => {
    handler = answer(200, { accepted: 2 });
    seen.length = 0;
    const accepted = await client().ackConfigs({ acks: [{ type: "cp_agent_runtime", scope: "global", version: 4 }] } as never);
    assert.equal(accepted, 2);
    assert.equal(seen[0]?.method, "POST");
    assert.deepEqual(JSON.parse(seen[0]?.body ?? ""), { acks: [{ type: "cp_agent_runtime", scope: "global", version: 4 }] });
  });

  test("an HTTP refusal keeps the CP's status, code and public details; 4xx is not retryable, 5xx is", async () => {
    handler = answer(410, { error: "DELTA_CURSOR_EXPIRED", message: "replay", details: { since: 3, oldest_available: 9, head: 12 } });
    const gone = await failure(client().pullDelta("blacklist", 3));
    assert.equal(gone.kind, "http");
    assert.equal(gone.status, 410);
    assert.equal(gone.code, "DELTA_CURSOR_EXPIRED");
    assert.deepEqual((gone.details.body as { details?: unknown }).details, { since: 3, oldest_available: 9, head: 12 });
    assert.equal(gone.retryable, false);
    handler = answer(503, "upstream down", "text/plain");
    const down = await failure(client().pullDelta("blacklist", 3));
    assert.equal(down.status, 503);
    assert.equal(down.retryable, true);
  });

  test("an answer that is not JSON, or not the contract, is an invalid response", async () => {
    handler = answer(200, "<html>proxy error</html>", "text/html");
    const notJson = await failure(client().pullDelta("blacklist", 0));
    assert.equal(notJson.kind, "invalid_response");
    assert.match(notJson.message, /not JSON/);
    handler = answer(200, { changes: "nope" });
    const offContract = await failure(client().pullDelta("blacklist", 0));
    assert.equal(offContract.kind, "invalid_response");
    assert.match(offContract.message, /does not match the contract/);
  });

  test("an answer over the size cap is refused, not truncated", async () => {
    handler = answer(200, { ...VALID_DELTA, padding: "x".repeat(10_000) });
    const tooBig = await failure(client({ maxResponseBytes: 4096 }).pullDelta("blacklist", 0));
    assert.equal(tooBig.kind, "invalid_response");
    assert.match(tooBig.message, /larger than 4096 bytes/);
  });

  test("a CP that does not answer within the deadline is a timeout", async () => {
    const held: ServerResponse[] = [];
    handler = (_req, res) => void held.push(res);
    const failuresBefore = tcp.handshakeFailures.length;
    const started = Date.now();
    const late = await failure(client({ timeoutMs: 200 }).pullDelta("blacklist", 0));
    assert.equal(late.kind, "timeout");
    assert.equal(late.socketCode, "UND_ERR_HEADERS_TIMEOUT", "undici's own timeout, not an abort (an abort would reconnect)");
    assert.ok(late.retryable);
    assert.ok(Date.now() - started < 3000, "the deadline cut the call short");
    for (const res of held) res.destroy();
    await Promise.all(clients.map((c) => c.close()));
    await serverIdle();
    assert.deepEqual(
      tcp.handshakeFailures.slice(failuresBefore),
      [],
      "a timed-out call leaves no half-opened connection behind (nodejs/undici#5845)",
    );
  });

  test("a CP that accepts the connection but never completes the handshake still times out near the deadline", async () => {
    const stalled = net.createServer(() => undefined);
    const sockets: net.Socket[] = [];
    stalled.on("connection", (socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => stalled.listen(0, "127.0.0.1", resolve));
    try {
      const started = Date.now();
      const late = await failure(
        client({ cpUrl: `https://127.0.0.1:${(stalled.address() as AddressInfo).port}`, timeoutMs: 300 }).pullDelta("blacklist", 0),
      );
      const took = Date.now() - started;
      assert.equal(late.kind, "timeout");
      assert.ok(took < 4000, `gave up after ${took} ms, not undici's fixed 10 s connect timeout`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => stalled.close(() => resolve()));
    }
  });

  test("close() aborts a call in flight, and closing again is harmless", async () => {
    const held: ServerResponse[] = [];
    handler = (_req, res) => void held.push(res);
    const c = client();
    const pending = failure(c.pullDelta("blacklist", 0));
    while (held.length === 0) await new Promise((resolve) => setImmediate(resolve));
    const failuresBefore = tcp.handshakeFailures.length;
    await c.close();
    assert.equal((await pending).kind, "aborted");
    await c.close();
    for (const res of held) res.destroy();
    await serverIdle();
    assert.deepEqual(tcp.handshakeFailures.slice(failuresBefore), [], "closing leaves no half-opened connection behind");
  });

  test("an event stream ended by its subscriber closes its connection and opens no other (nodejs/undici#5845)", async () => {
    const streams: ServerResponse[] = [];
    handler = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(": open\n\n");
      streams.push(res);
    };
    const c = client();
    const before = { ...tcp, handshakeFailures: tcp.handshakeFailures.length };
    for (let round = 1; round <= 3; round++) {
      const subscriber = new AbortController();
      const body = await c.openEventStream(subscriber.signal);
      const reader = body.getReader();
      assert.match(Buffer.from((await reader.read()).value ?? []).toString("utf8"), /: open/);
      const closed = new Promise<void>((resolve) => streams.at(-1)?.on("close", () => resolve()));
      subscriber.abort(new Error("dropped"));
      await reader.cancel().catch(() => undefined);
      await closed;
      assert.equal(tcp.connections - before.connections, round, `round ${round}: one connection per stream`);
    }
    // A spurious reconnect (what aborting inside a live undici pool does) would be accepted
    // before the pools are gone and the server has seen every connection close.
    await c.close();
    await serverIdle();
    assert.equal(tcp.connections - before.connections, 3, "no connection beyond the three streams");
    assert.deepEqual(tcp.handshakeFailures.slice(before.handshakeFailures), [], "no half-opened connection for the server to log");
  });

  test("nothing listening is a network error; a server certificate from another CA is a TLS error", async () => {
    const refused = await failure(client({ cpUrl: `https://127.0.0.1:${await freePort()}` }).pullDelta("blacklist", 0));
    assert.equal(refused.kind, "network");
    assert.equal(refused.socketCode, "ECONNREFUSED");
    const stranger = await createRootCa({ profile: "cp_server_ca", commonName: "Somebody else", clock: systemClock });
    const untrusted = await failure(client({ caPem: stranger.certPem }).pullDelta("blacklist", 0));
    assert.equal(untrusted.kind, "tls");
    assert.ok(untrusted.retryable);
  });
});
