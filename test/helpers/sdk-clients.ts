/**
 * SDK clients for business-plane tests: an in-memory SDK configuration pinned to one node (so a
 * test knows which node a client talks to), and a probe around each client that records every
 * event it emits with the moment it arrived, so a test can wait for a push and measure how long
 * it took from the admin call that caused it. A raw connection from another loopback address
 * (127.0.0.2) stands in for a client whose IP differs from the others'.
 */
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import tls from "node:tls";
import { NodeConnection } from "../../src/sdk/connection.js";
import { AuthNexusClient, type Push, type SdkConfig, type Session } from "../../src/sdk/index.js";
import type { HostPort } from "../../src/shared/config/host-port.js";
import { type AuthNexusError, type ErrorCode, isAuthNexusError } from "../../src/shared/errors/index.js";
import { splitPemBundle } from "../../src/shared/pki/index.js";
import type { Message } from "../../src/shared/protocol/index.js";
import { systemScheduler } from "../../src/shared/time/index.js";
import { waitFor } from "./node-agent.js";

/** What a client needs of an application's client certificate (deployment.ts ClientMaterial has it). */
export interface ClientTrustMaterial {
  certPem: string;
  keyPem: string;
  serverCaPem: string;
  ocspSignerCaPem: string;
}

/** An SDK configuration naming only `nodes` (in that order), with must-staple on. */
export function pinnedSdkConfig(appId: string, material: ClientTrustMaterial, nodes: HostPort[], spkiPins: string[] = []): SdkConfig {
  return {
    appId,
    nodes: nodes.map((n) => ({ host: n.host, port: n.port })),
    trust: {
      clientCertPem: material.certPem,
      clientKeyPem: material.keyPem,
      serverCaPems: splitPemBundle(material.serverCaPem),
      ocspSignerDers: splitPemBundle(material.ocspSignerCaPem).map((pem) => new X509Certificate(pem).raw),
      mustStaple: true,
      spkiPins,
    },
  };
}

const CLIENT_EVENTS = ["announcement", "force_logout", "kill_process", "disconnected", "reconnected", "session_ended"] as const;
export type ClientEventName = (typeof CLIENT_EVENTS)[number];

export interface Seen {
  kind: ClientEventName;
  /** performance.now() when the event fired. */
  at: number;
  value: unknown;
}

/** One SDK client and everything it has emitted. */
export class Probe {
  readonly seen: Seen[] = [];
  session: Session | null = null;

  constructor(
    readonly name: string,
    readonly client: AuthNexusClient,
    readonly deviceId: string,
  ) {
    for (const kind of CLIENT_EVENTS) client.on(kind, (value: unknown) => this.seen.push({ kind, at: performance.now(), value }));
  }

  count(kind: ClientEventName): number {
    return this.seen.filter((s) => s.kind === kind).length;
  }

  /** The first `kind` event (already seen or still to come). */
  async next(kind: ClientEventName, timeoutMs = 5000): Promise<Seen> {
    return waitFor(`${this.name}: ${kind}`, () => this.seen.find((s) => s.kind === kind), timeoutMs, 5);
  }

  /** The push of the first `kind` event. */
  async push(kind: "announcement" | "force_logout" | "kill_process", timeoutMs = 5000): Promise<Push & { at: number }> {
    const seen = await this.next(kind, timeoutMs);
    return { ...(seen.value as Push), at: seen.at };
  }

  get token(): Buffer {
    if (!this.session) throw new Error(`${this.name} never logged in`);
    return this.session.token;
  }
}

export interface ConnectProbeOptions {
  appId: string;
  appSecret: string;
  material: ClientTrustMaterial;
  node: HostPort;
  deviceId: string;
  name?: string;
  /** SPKI pins (base64 SHA-256) the client requires in the node's chain. */
  spkiPins?: string[];
}

/** Connects an SDK client to exactly one node (no reconnection: a lost connection stays visible). */
export async function connectProbe(options: ConnectProbeOptions): Promise<Probe> {
  const client = await AuthNexusClient.connect({
    config: pinnedSdkConfig(options.appId, options.material, [options.node], options.spkiPins),
    appSecret: options.appSecret,
    deviceId: options.deviceId,
    reconnect: false,
    requestTimeoutMs: 10_000,
    connectTimeoutMs: 10_000,
  });
  return new Probe(options.name ?? options.deviceId, client, options.deviceId);
}

/** Asserts that `work` fails with the AuthNexusError `code`; returns the error. */
export async function expectCode(work: Promise<unknown>, code: ErrorCode, what = "the call"): Promise<AuthNexusError> {
  try {
    await work;
  } catch (error) {
    if (isAuthNexusError(error, code)) return error;
    throw new Error(`${what}: expected ${code}, got ${isAuthNexusError(error) ? error.code : String(error)}`, { cause: error });
  }
  throw new Error(`${what}: expected ${code}, but it succeeded`);
}

/** A protocol connection opened from another loopback address, logged in with a password. */
export interface RawClient {
  connection: NodeConnection;
  pushes: Message<"push">[];
  closedWith: AuthNexusError | null | undefined;
  close(): Promise<void>;
}

export async function connectRawFrom(
  localAddress: string,
  options: Omit<ConnectProbeOptions, "name"> & { username: string; password: string },
): Promise<RawClient> {
  // TCP from the chosen address first; TLS over it (the node's certificate names the host).
  const tcp = net.connect({ host: options.node.host, port: options.node.port, localAddress });
  const socket = tls.connect({
    socket: tcp,
    host: options.node.host,
    ca: splitPemBundle(options.material.serverCaPem),
    cert: options.material.certPem,
    key: options.material.keyPem,
    minVersion: "TLSv1.2",
  });
  await once(socket, "secureConnect");
  const raw: RawClient = {
    connection: undefined as unknown as NodeConnection,
    pushes: [],
    closedWith: undefined,
    close: async () => {
      raw.connection.close();
      await raw.connection.whenClosed;
    },
  };
  raw.connection = new NodeConnection(socket, systemScheduler, {
    push: (body) => raw.pushes.push(body),
    closed: (error) => {
      raw.closedWith = error;
    },
  });
  await raw.connection.request(
    "hello",
    { app_id: options.appId, app_secret: options.appSecret, device_id: options.deviceId, sdk_version: "test-raw/1" },
    5000,
  );
  await raw.connection.request("login_password", { username: options.username, password: options.password }, 5000);
  return raw;
}
