/**
 * Opening a trusted TLS connection to one node: mutual TLS with the application's client
 * certificate, the node's certificate chained to the configured server CAs and matched to the
 * host name (or IP) by TLS itself, then the stapled OCSP response and the SPKI pins (./trust.ts).
 * Every handshake is a full one: no session is ever offered for resumption, because a resumed
 * session carries no staple and the node's status would go unchecked.
 */
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import tls, { type TLSSocket } from "node:tls";
import { AuthNexusError } from "../shared/errors/index.js";
import type { Scheduler } from "../shared/time/index.js";
import type { NodeAddress, TrustPolicy } from "./config.js";
import { checkPins, checkStaple, type StapleVerdict } from "./trust.js";

export interface OpenOptions {
  timeoutMs: number;
  /** Its clock judges the staple; its timer bounds the handshake. */
  scheduler: Scheduler;
}

export interface TrustedSocket {
  socket: TLSSocket;
  staple: StapleVerdict;
}

/** requestOCSP is a documented tls.connect option the type definitions lack. */
type ConnectOptions = tls.ConnectionOptions & { requestOCSP: boolean };

export function openTrustedSocket(node: NodeAddress, trust: TrustPolicy, options: OpenOptions): Promise<TrustedSocket> {
  return new Promise((resolve, reject) => {
    let staple: Buffer | null = null;
    let settled = false;
    const connectOptions: ConnectOptions = {
      host: node.host,
      port: node.port,
      // SNI carries names only; an IP literal is matched against the certificate's IP SANs.
      ...(isIP(node.host) ? {} : { servername: node.host }),
      ca: trust.serverCaPems,
      cert: trust.clientCertPem,
      key: trust.clientKeyPem,
      minVersion: "TLSv1.2",
      rejectUnauthorized: true,
      requestOCSP: true,
    };
    const socket = tls.connect(connectOptions);
    const fail = (error: AuthNexusError) => {
      if (settled) return;
      settled = true;
      cancelTimer();
      socket.destroy();
      reject(error);
    };
    const cancelTimer = options.scheduler.setTimer(options.timeoutMs, () =>
      fail(
        new AuthNexusError("NODE_UNREACHABLE", {
          message: `${where(node)} did not complete the TLS handshake in ${options.timeoutMs} ms.`,
        }),
      ),
    );
    socket.once("OCSPResponse", (response: Buffer | null) => {
      staple = response && response.length > 0 ? response : null;
    });
    socket.once("error", (error: NodeJS.ErrnoException) => fail(transportError(node, error)));
    socket.once("close", () =>
      fail(new AuthNexusError("NODE_UNREACHABLE", { message: `${where(node)} closed the connection during the handshake.` })),
    );
    socket.once("secureConnect", () => {
      try {
        const verdict = verifyPeer(socket, staple, trust, options.scheduler.clock.now());
        settled = true;
        cancelTimer();
        socket.removeAllListeners("error");
        socket.removeAllListeners("close");
        resolve({ socket, staple: verdict });
      } catch (error) {
        fail(error as AuthNexusError);
      }
    });
  });
}

function verifyPeer(socket: TLSSocket, staple: Buffer | null, trust: TrustPolicy, now: number): StapleVerdict {
  const peer = socket.getPeerCertificate(true);
  const issuer = peer.issuerCertificate;
  if (!peer.raw || !issuer?.raw || issuer.fingerprint256 === peer.fingerprint256) {
    throw new AuthNexusError("NODE_CERT_REFUSED", { message: "The node presented no certificate issued by a configured server CA." });
  }
  const verdict = checkStaple({
    staple,
    serverCertDer: peer.raw,
    issuerDer: issuer.raw,
    ocspSignerDers: trust.ocspSignerDers,
    mustStaple: trust.mustStaple,
    now,
  });
  if (trust.spkiPins.length > 0) checkPins(pinnableKeys(peer.raw, trust.serverCaPems), trust.spkiPins);
  return verdict;
}

/**
 * The keys a pin may match: the node's own, and that of the configured server CA that signed it.
 * The issuer is looked up among the configured CAs, never taken from what the server sent: a
 * server may send any certificate as its "issuer", and Node links it by name only.
 */
function pinnableKeys(leafDer: Buffer, serverCaPems: readonly string[]): Buffer[] {
  const spki = (cert: X509Certificate) => cert.publicKey.export({ type: "spki", format: "der" });
  const leaf = new X509Certificate(leafDer);
  const keys = [spki(leaf)];
  for (const pem of serverCaPems) {
    const ca = new X509Certificate(pem);
    if (leaf.checkIssued(ca) && leaf.verify(ca.publicKey)) keys.push(spki(ca));
  }
  return keys;
}

/** TLS verification failures are the node's certificate; everything else is reachability. */
function transportError(node: NodeAddress, error: NodeJS.ErrnoException): AuthNexusError {
  const code = error.code ?? "";
  const certificateProblem =
    code.startsWith("ERR_TLS_CERT") ||
    /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|HOSTNAME|IP_ADDRESS_MISMATCH/.test(code) ||
    code === "ERR_TLS_CERT_ALTNAME_INVALID";
  if (certificateProblem) {
    return new AuthNexusError("NODE_CERT_REFUSED", {
      message: `The certificate of ${where(node)} is not trusted: ${error.message}.`,
      detail: { tls_code: code },
      cause: error,
    });
  }
  return new AuthNexusError("NODE_UNREACHABLE", {
    message: `${where(node)} could not be reached: ${error.message}.`,
    detail: { tls_code: code },
    cause: error,
  });
}

function where(node: NodeAddress): string {
  return `node ${node.host}:${node.port}`;
}
