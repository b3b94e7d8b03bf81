/**
 * The node's business port: the TLS listener SDK clients connect to, and the first three of
 * the four layers that decide who may talk to it (docs/architecture.md, "PKI"):
 *
 *   1. the client certificate chains to a trusted app client CA (OpenSSL, during the handshake);
 *   2. certificate semantics: the clientAuth EKU and exactly one `urn:authnexus:app:<app_id>`
 *      URI SAN;
 *   3. the CP binding: the certificate's issuer is in that application's published trust
 *      bundles (app_client_ca_bundle, app_mtls_trust_bundle);
 *   4. the business handshake (the hello frame), in ./service.ts.
 *
 * Every handshake gets the stapler's current OCSP response (TLS 1.2 and 1.3). No session is ever
 * resumed: a resumed session would carry no staple. Connections are capped in total and per
 * IP before TLS even starts; a client has handshake_timeout_ms to complete TLS, as long again to
 * send hello, and heartbeat_timeout_seconds between frames after that. A refusal is logged under
 * [TLS] naming its layer.
 *
 * Two things node:tls does not do for us. Its handshakeTimeout only reports a timeout (a
 * tlsClientError) and leaves the socket open, and it is fixed when the server is created; so
 * the edge keeps its own list of sockets still in the TLS handshake and cuts them on the live
 * handshake_timeout_ms, and destroys every socket that failed its handshake. And a client
 * certificate that fails the chain check does not fail the handshake: Node completes it, then
 * destroys the socket and reports only a "socket hang up"; the edge reads the verification
 * error from the socket so a layer-1 refusal is logged as a warning with its reason.
 */
import { createHash, constants as cryptoConstants, X509Certificate } from "node:crypto";
import type { AddressInfo, Socket } from "node:net";
import tls, { type PeerCertificate, type TLSSocket } from "node:tls";
import { BUSINESS_DEADLINE_SWEEP_MS } from "../../shared/config/defaults.js";
import type { HostPort } from "../../shared/config/host-port.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import type { Logger } from "../../shared/log/index.js";
import type { ServerRuntimeSettings } from "../../shared/node-protocol/index.js";
import { parseAppUri, splitPemBundle } from "../../shared/pki/index.js";
import { hasClientAuth, uriSans } from "../../shared/pki/peer-certificate.js";
import { type CancelTimer, every, type Scheduler } from "../../shared/time/index.js";
import type { LoadedAgentPackage } from "../package/load-agent-package.js";
import type { AppliedConfigStore } from "../state/config-store.js";
import type { NodeCredentials } from "../state/node-credentials.js";
import { BusinessConnection, type ConnectionHost } from "./connection.js";
import type { ConnectionRegistry } from "./registry.js";

export interface BusinessEdgeOptions {
  pkg: LoadedAgentPackage;
  store: AppliedConfigStore;
  registry: ConnectionRegistry;
  scheduler: Scheduler;
  log: { tls: Logger; server: Logger };
  /** The certificate served and its key: the package's, then each rotation's (swapped for new handshakes). */
  credentials: NodeCredentials;
  /** The OCSP response to staple on a handshake serving `certificate` (DER), or null. */
  staple: (certificate: Buffer | undefined) => Buffer | null;
  /** Serves requests on accepted connections. */
  host: Omit<ConnectionHost, "scheduler" | "closed">;
  /** Called when a connection has closed (after the registry forgot it). */
  onClosed?: (connection: BusinessConnection, reason: string) => void;
  /** Called for each connection refused before hello: at the connection limits, or by layer 1, 2 or 3 (metrics). */
  onRefused?: (layer: "connection_limit" | "1" | "2" | "3") => void;
}

const SPAN_TRUST_TYPES = new Set(["app_client_ca_bundle", "app_mtls_trust_bundle"]);
/**
 * node:tls's own handshake timeout, fixed at creation: only a backstop (the largest
 * handshake_timeout_ms the settings allow). The live deadline is the edge's sweep.
 */
const TLS_HANDSHAKE_BACKSTOP_MS = 60_000;

/** Client certificates whose layer-2/3 verdict is remembered (the map is simply emptied when full). */
const ACCEPTED_CERTIFICATES_MAX = 4096;

/** A socket accepted and still in its TLS handshake, with the time by which it must finish it. */
interface Handshaking {
  socket: Socket;
  deadline: number;
}

export class BusinessEdge {
  private readonly server: tls.Server;
  private address_: HostPort | null = null;
  /** app id → SHA-256 (hex) of the DER of every CA its certificates may be issued by (layer 3). */
  private readonly trustByApp = new Map<string, Set<string>>();
  /**
   * Client certificate SHA-256 → the app id layers 2 and 3 accepted it for. Every installation
   * of an application presents the same certificate, and decoding it into Node's object graph
   * (names, SANs, fingerprints, the public key) was a quarter of the node's CPU per handshake.
   * Only acceptances are kept (a refusal is logged with the serial, so it is decoded anyway),
   * and the whole map is dropped whenever the trust bundles change.
   */
  private readonly acceptedCertificates = new Map<string, string>();
  /** TCP sockets accepted and not yet closed, in total and per IP: the connection limits count these. */
  private sockets = 0;
  private readonly socketsPerIp = new Map<string, number>();
  /** Sockets in their TLS handshake, by peer address and port. */
  private readonly handshaking = new Map<string, Handshaking>();
  private refusedSinceLastReport = 0;
  private stopSweep: CancelTimer = () => {};
  private stopTrustWatch: () => void = () => {};
  private stopCredentialWatch: () => void = () => {};
  private host: ConnectionHost | null = null;

  constructor(private readonly options: BusinessEdgeOptions) {
    this.server = tls.createServer(this.tlsOptions());
    this.server.on("connection", (socket: Socket) => this.admit(socket));
    this.server.on("secureConnection", (socket: TLSSocket) => this.accept(socket));
    this.server.on("OCSPRequest", (certificate: Buffer, _issuer: Buffer, callback: (error: Error | null, response?: Buffer) => void) => {
      const staple = this.options.staple(certificate);
      callback(null, staple ?? undefined);
    });
    this.server.on("tlsClientError", (error: NodeJS.ErrnoException, socket: TLSSocket) => this.handshakeFailed(error, socket));
  }

  get address(): HostPort | null {
    return this.address_;
  }

  private get settings(): ServerRuntimeSettings {
    return this.options.store.serverRuntimeSettings();
  }

  async listen(requested: HostPort): Promise<HostPort> {
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error) =>
        reject(new Error(`cannot listen on ${requested.host}:${requested.port} for the business port: ${error.message}`, { cause: error }));
      this.server.once("error", onError);
      this.server.listen(requested.port, requested.host, () => {
        this.server.off("error", onError);
        resolve();
      });
    });
    const bound = this.server.address() as AddressInfo;
    this.address_ = { host: bound.address, port: bound.port };
    this.stopSweep = every(this.options.scheduler, BUSINESS_DEADLINE_SWEEP_MS, () => this.sweep(), { background: true });
    this.stopTrustWatch = this.options.store.onApplied((applied) => {
      if (applied.type === "server_runtime_settings" || SPAN_TRUST_TYPES.has(applied.type))
        this.refreshTrust(applied.type === "server_runtime_settings" ? null : applied.scope);
    });
    this.stopCredentialWatch = this.options.credentials.onChange(() => this.refreshCredentials());
    return this.address_;
  }

  /** Stops accepting and cuts every connection (their sessions stay valid for a token login elsewhere). */
  async close(): Promise<void> {
    this.stopSweep();
    this.stopTrustWatch();
    this.stopCredentialWatch();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // server.close() waits for every socket, those still in their TLS handshake included.
    for (const { socket } of [...this.handshaking.values()]) socket.destroy();
    this.handshaking.clear();
    for (const connection of [...this.options.registry.connections()]) connection.destroy("node stopping");
    await closed;
  }

  /** Rebuilds the TLS trust list after a bundle changed; layer-3 fingerprints of that app are recomputed on next use. */
  private refreshTrust(scope: string | null): void {
    if (scope?.startsWith("app:")) this.trustByApp.delete(scope.slice(4));
    this.acceptedCertificates.clear();
    try {
      this.server.setSecureContext(this.tlsOptions());
    } catch (error) {
      this.options.log.tls.error("trust.refresh_failed", { error: (error as Error).message });
    }
  }

  /** A rotation: new handshakes get the new certificate; connections already open keep theirs. */
  private refreshCredentials(): void {
    try {
      this.server.setSecureContext(this.tlsOptions());
      this.options.log.tls.info("certificate.swapped", { listener: "business" });
    } catch (error) {
      this.options.log.tls.error("certificate.swap_failed", { error: (error as Error).message });
    }
  }

  /** Every CA any application trusts, plus the package's app_client_ca: layer 1's anchors. */
  private tlsOptions(): tls.TlsOptions {
    const { pkg, store } = this.options;
    const anchors = new Set(pkg.appClientCaPems);
    for (const pem of store.allTrustBundlePems()) for (const one of splitPemBundle(pem)) anchors.add(one);
    const served = this.options.credentials.get().server;
    return {
      key: served.keyPem,
      cert: served.certPem,
      ca: [...anchors],
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
      // No resumption: a resumed session would carry no staple. With SSL_OP_NO_TICKET TLS 1.2
      // issues no ticket (minting them cost ~45% of the server's handshake CPU) and its session
      // ids, like the two stateful tickets OpenSSL still sends on TLS 1.3 (node:tls cannot set
      // their number to 0), name sessions this server never keeps: they cannot resume.
      secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
      handshakeTimeout: TLS_HANDSHAKE_BACKSTOP_MS,
    };
  }

  /** Before TLS: the connection limits, in total and per IP. */
  private admit(socket: Socket): void {
    const ip = socket.remoteAddress ?? "unknown";
    const settings = this.settings;
    const fromIp = this.socketsPerIp.get(ip) ?? 0;
    if (this.sockets >= settings.max_connections || fromIp >= settings.max_connections_per_ip) {
      this.refusedSinceLastReport += 1;
      this.options.onRefused?.("connection_limit");
      socket.destroy();
      return;
    }
    this.sockets += 1;
    this.socketsPerIp.set(ip, fromIp + 1);
    const key = peerKey(socket);
    const handshaking = { socket, deadline: this.options.scheduler.clock.now() + settings.handshake_timeout_ms };
    this.handshaking.set(key, handshaking);
    socket.once("close", () => {
      if (this.handshaking.get(key) === handshaking) this.handshaking.delete(key);
      this.sockets -= 1;
      const left = (this.socketsPerIp.get(ip) ?? 1) - 1;
      if (left > 0) this.socketsPerIp.set(ip, left);
      else this.socketsPerIp.delete(ip);
    });
  }

  /** After TLS (layer 1 passed): layers 2 and 3, then the connection is handed the socket. */
  private accept(socket: TLSSocket): void {
    this.handshaking.delete(peerKey(socket));
    // TLS had handshake_timeout_ms (the server's handshakeTimeout); hello gets as long again.
    const deadline = this.options.scheduler.clock.now() + this.settings.handshake_timeout_ms;
    const leafFingerprint = socket.getPeerX509Certificate()?.fingerprint256;
    const knownAppId = leafFingerprint === undefined ? undefined : this.acceptedCertificates.get(leafFingerprint);
    if (knownAppId !== undefined) {
      this.options.registry.add(new BusinessConnection(socket, this.connectionHost(), knownAppId, deadline));
      return;
    }
    const ip = socket.remoteAddress ?? "unknown";
    const certificate = socket.getPeerCertificate(true);
    const verdict = this.checkCertificate(certificate);
    if ("refused" in verdict) {
      this.options.onRefused?.(verdict.layer === 2 ? "2" : "3");
      this.options.log.tls.warn("client.refused", {
        layer: verdict.layer,
        reason: verdict.refused,
        ip,
        serial: certificate.serialNumber,
        app_id: verdict.appId,
      });
      const refusal = new BusinessConnection(socket, this.connectionHost(), verdict.appId ?? "", deadline);
      refusal.end(new AuthNexusError("CLIENT_CERT_REFUSED", { message: `The client certificate is not accepted: ${verdict.refused}.` }));
      return;
    }
    if (leafFingerprint !== undefined) this.rememberAccepted(leafFingerprint, verdict.appId);
    const connection = new BusinessConnection(socket, this.connectionHost(), verdict.appId, deadline);
    this.options.registry.add(connection);
  }

  private rememberAccepted(leafFingerprint: string, appId: string): void {
    // Bounded: a deployment has a few certificates per application, not thousands.
    if (this.acceptedCertificates.size >= ACCEPTED_CERTIFICATES_MAX) this.acceptedCertificates.clear();
    this.acceptedCertificates.set(leafFingerprint, appId);
  }

  /** Layers 2 and 3 on the certificate OpenSSL already parsed. */
  private checkCertificate(
    certificate: tls.DetailedPeerCertificate,
  ): { appId: string } | { refused: string; layer: 2 | 3; appId: string | null } {
    if (!hasClientAuth(certificate)) return { refused: "no clientAuth extended key usage", layer: 2, appId: null };
    const uris = uriSans(certificate.subjectaltname ?? "");
    const appIds = uris.map(parseAppUri);
    const [appId] = appIds;
    if (uris.length !== 1 || appId === null || appId === undefined) {
      return { refused: `expected exactly one urn:authnexus:app URI SAN, found ${uris.length} URI SAN(s)`, layer: 2, appId: null };
    }
    const issuer = issuerOf(certificate);
    if (issuer === null || !this.trustOf(appId).has(fingerprint(issuer.raw)) || !signedBy(certificate.raw, issuer.raw)) {
      return { refused: "the issuing CA is not in the application's trust bundles", layer: 3, appId };
    }
    return { appId };
  }

  private trustOf(appId: string): Set<string> {
    let trusted = this.trustByApp.get(appId);
    if (!trusted) {
      trusted = new Set();
      for (const pem of this.options.store.appTrustPems(appId))
        for (const one of splitPemBundle(pem)) trusted.add(fingerprint(pemToDer(one)));
      this.trustByApp.set(appId, trusted);
    }
    return trusted;
  }

  /** One host for every connection (the service is a class: its methods are bound, not spread). */
  private connectionHost(): ConnectionHost {
    if (this.host) return this.host;
    const service = this.options.host;
    this.host = {
      scheduler: this.options.scheduler,
      maxFrameBytes: service.maxFrameBytes,
      serve: (connection, request) => service.serve(connection, request),
      heartbeat: (connection, requestId) => service.heartbeat(connection, requestId),
      idleTimeoutMs: () => service.idleTimeoutMs(),
      internalError: (connection, error) => service.internalError(connection, error),
      closed: (connection, reason) => {
        this.options.registry.remove(connection);
        this.options.onClosed?.(connection, reason);
      },
    };
    return this.host;
  }

  private handshakeFailed(error: NodeJS.ErrnoException, socket: TLSSocket): void {
    const ip = peerAddress(socket);
    // node:tls leaves a socket that timed out in its handshake open: every failure ends here.
    socket.destroy();
    this.options.onRefused?.("1");
    // A certificate that failed the chain check (unknown issuer, expired, wrong purpose…) shows
    // up as a "socket hang up": node:tls finished the handshake, then cut it for that reason
    // (its TLS handle, and with it the certificate, is already gone).
    const verifyError = (socket as { authorizationError?: unknown }).authorizationError;
    if (verifyError) {
      this.options.log.tls.warn("handshake.failed", { layer: 1, reason: String(verifyError), ip });
      return;
    }
    const quiet = error.code === "ECONNRESET" || error.code === "ERR_TLS_HANDSHAKE_TIMEOUT";
    this.options.log.tls[quiet ? "debug" : "warn"]("handshake.failed", {
      layer: 1,
      reason: error.code,
      ip,
      error: error.message,
    });
  }

  /** Deadlines: hello within the handshake budget, then a frame within the idle timeout. */
  private sweep(): void {
    const now = this.options.scheduler.clock.now();
    for (const [key, { socket, deadline }] of this.handshaking) {
      if (deadline > now) continue;
      this.handshaking.delete(key);
      this.options.log.tls.debug("handshake.timeout", { ip: socket.remoteAddress });
      socket.destroy();
    }
    for (const connection of this.options.registry.connections()) {
      if (connection.closed || connection.deadline > now) continue;
      connection.end(new AuthNexusError(connection.ready ? "IDLE_TIMEOUT" : "HANDSHAKE_TIMEOUT"));
    }
    if (this.refusedSinceLastReport > 0) {
      this.options.log.tls.warn("connections.refused", {
        count: this.refusedSinceLastReport,
        reason: "connection limit",
        max_connections: this.settings.max_connections,
        max_connections_per_ip: this.settings.max_connections_per_ip,
      });
      this.refusedSinceLastReport = 0;
    }
  }
}

function issuerOf(certificate: tls.DetailedPeerCertificate): PeerCertificate | null {
  const issuer = certificate.issuerCertificate;
  // A self-issued certificate points at itself: that is no CA of ours.
  if (!issuer || issuer === certificate || issuer.fingerprint256 === certificate.fingerprint256) return null;
  return issuer;
}

/**
 * The peer address of a TLS socket, also once node:tls destroyed it: the TCP socket under it
 * (`_parent`, node:tls's own field) remembers the address `admit` read.
 */
function peerAddress(socket: TLSSocket): string | undefined {
  return socket.remoteAddress ?? (socket as { _parent?: Socket })._parent?.remoteAddress;
}

/** A TCP connection's peer (address and port): the same on the raw socket and on the TLS socket over it. */
function peerKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

/**
 * Whether `issuerDer` really signed `leafDer`. Node links a peer certificate to its issuer by
 * name alone, among the certificates the client sent; layer 3 trusts that issuer only once its
 * signature on the leaf checks out. Runs once per certificate (verdicts are remembered).
 */
function signedBy(leafDer: Buffer, issuerDer: Buffer): boolean {
  try {
    const leaf = new X509Certificate(leafDer);
    const issuer = new X509Certificate(issuerDer);
    return leaf.checkIssued(issuer) && leaf.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function fingerprint(der: Buffer): string {
  return createHash("sha256").update(der).digest("hex");
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, ""), "base64");
}
