/**
 * The baseline under the node's business port for the business-port benchmarks: a bare
 * node:tls server with the node's own TLS settings — the node's business certificate and key
 * (ECDSA P-256), client certificates required and chained to the same application client CAs,
 * TLS ≥ 1.2, no session tickets — and the node's current OCSP response stapled through the
 * OCSPRequest event, as the node staples it. No admission layers, no database, no log.
 *
 * On an accepted connection it splits frames (the shared FrameDecoder, header only) and answers
 * every request with a canned frame of the size the node's answer has: hello → hello_ok,
 * login_password / login_token → auth_ok (same node id, user id and username lengths),
 * heartbeat → heartbeat_ack. What remains of a request's cost here is Node's TLS and a frame
 * each way, which no change to AuthNexus code can remove.
 *
 * Runs in its own process (./bare-tls-server.ts) or, for the handshake bench's second
 * baseline, inside the node's process.
 */
import { constants as cryptoConstants, randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import tls, { type TLSSocket } from "node:tls";
import { encodeMessage, FrameDecoder, MESSAGES } from "../../../src/shared/protocol/index.js";

export interface BareTlsConfig {
  certPem: string;
  keyPem: string;
  caPems: string[];
  /** The OCSP response to staple (base64), or null. */
  staple: string | null;
  nodeId: string;
  userId: string;
  username: string;
}

export interface BareTlsServer {
  port: number;
  connections(): number;
  close(): Promise<void>;
}

export async function startBareTlsServer(config: BareTlsConfig): Promise<BareTlsServer> {
  const staple = config.staple === null ? null : Buffer.from(config.staple, "base64");
  const authOk = (method: "password" | "token") =>
    encodeMessage("auth_ok", 0, {
      method,
      token: randomBytes(32),
      session_expires_at: Date.now() + 7 * 86_400_000,
      user_id: config.userId,
      username: config.username,
      card_expires_at: null,
    });
  const answers = new Map<number, Buffer>([
    [
      MESSAGES.hello.type,
      encodeMessage("hello_ok", 0, {
        node_id: config.nodeId,
        server_time: Date.now(),
        heartbeat_interval_ms: 30_000,
        idle_timeout_ms: 90_000,
        max_frame_bytes: 65_536,
      }),
    ],
    [MESSAGES.login_password.type, authOk("password")],
    [MESSAGES.login_token.type, authOk("token")],
    [MESSAGES.heartbeat.type, encodeMessage("heartbeat_ack", 0, { server_time: Date.now() })],
  ]);

  const sockets = new Set<TLSSocket>();
  const server = tls.createServer({
    key: config.keyPem,
    cert: config.certPem,
    ca: config.caPems,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.2",
    secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
  });
  server.on("OCSPRequest", (_certificate: Buffer, _issuer: Buffer, callback: (error: Error | null, response?: Buffer) => void) =>
    callback(null, staple ?? undefined),
  );
  server.on("secureConnection", (socket: TLSSocket) => {
    sockets.add(socket);
    const decoder = new FrameDecoder();
    socket.on("data", (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        const canned = answers.get(frame.type);
        if (!canned) {
          socket.destroy();
          return;
        }
        const answer = Buffer.from(canned);
        answer.writeUInt32BE(frame.requestId, 8);
        socket.write(answer);
      }
    });
    socket.on("error", () => undefined);
    socket.once("close", () => sockets.delete(socket));
  });
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
