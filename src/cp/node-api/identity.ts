/**
 * Binds every node API call to the caller's client certificate. The certificate is parsed once
 * per TLS connection (a keep-alive connection carries one certificate for its whole life); the
 * node and certificate status are checked on every request by services/node-identity.
 */
import type { TLSSocket } from "node:tls";
import type { Context, MiddlewareHandler } from "hono";
import { AuthNexusError } from "../../shared/errors/index.js";
import { parseNodeUri } from "../../shared/pki/index.js";
import { canonicalPeerSerial, uriSans } from "../../shared/pki/peer-certificate.js";
import type { CpContext } from "../services/context.js";
import { authenticateNode, type PeerCertificate } from "../services/nodes/identity.js";
import type { NodeApiEnv } from "./env.js";

const peerBySocket = new WeakMap<TLSSocket, PeerCertificate>();

export function peerCertificateOf(c: Context<NodeApiEnv>): PeerCertificate {
  const socket = c.env?.incoming?.socket as TLSSocket | undefined;
  if (!socket || typeof socket.getPeerCertificate !== "function") throw new AuthNexusError("UNAUTHENTICATED");
  const cached = peerBySocket.get(socket);
  if (cached) return cached;
  const certificate = socket.authorized ? socket.getPeerCertificate() : undefined;
  if (!certificate?.raw) throw new AuthNexusError("UNAUTHENTICATED");
  const nodeIds = uriSans(certificate.subjectaltname ?? "")
    .map(parseNodeUri)
    .filter((id): id is string => id !== null);
  const peer: PeerCertificate = {
    nodeId: nodeIds.length === 1 ? (nodeIds[0] ?? null) : null,
    serialHex: canonicalPeerSerial(certificate.serialNumber),
    ip: socket.remoteAddress ?? null,
  };
  peerBySocket.set(socket, peer);
  return peer;
}

/** For /cp/v2/nodes/:id/*: the certificate must speak for `:id`. */
export function nodeFromPath(ctx: CpContext): MiddlewareHandler<NodeApiEnv> {
  return async function nodeIdentityStep(c, next) {
    c.set("node", await authenticateNode(ctx, peerCertificateOf(c), c.req.param("id") ?? ""));
    await next();
  };
}

/** For /cp/v2/objects/*: any node the CP recognises. */
export function anyNode(ctx: CpContext): MiddlewareHandler<NodeApiEnv> {
  return async function anyNodeStep(c, next) {
    c.set("node", await authenticateNode(ctx, peerCertificateOf(c), null));
    await next();
  };
}
