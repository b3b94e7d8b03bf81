/**
 * A real node API (9091's hono app behind a real mTLS https server on port 0) over a TestCp,
 * plus node identities minted per run, so Channel 1–3 suites talk to the CP exactly as a node
 * does: undici with a client certificate. `mintNode` makes a node row with a client
 * certificate from cp_node_client_ca without running the onboarding job; `mintForeignCert`
 * makes certificates the CP must refuse.
 */
import https from "node:https";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { Agent, fetch as undiciFetch } from "undici";
import { createNodeApiApp } from "../../src/cp/node-api/app.js";
import { createSseHub, type SseHub, type SseHubOptions } from "../../src/cp/node-api/sse-hub.js";
import type { CpContext } from "../../src/cp/services/context.js";
import { ensureCpServerCertificate, loadCpTlsIdentity, nodeApiTlsOptions } from "../../src/cp/services/pki/cp-identity.js";
import { loadActiveCa, recordCertificate } from "../../src/cp/services/pki/inventory.js";
import { newId } from "../../src/shared/ids.js";
import { type CaProfile, issueLeafCertificate, type LeafProfile, nodeUri } from "../../src/shared/pki/index.js";
import { completeSetup, createTestCp, type TestCp } from "./cp-context.js";
import type { DbVariant } from "./databases.js";

export interface NodeIdentity {
  nodeId: string;
  certificateId: string;
  certPem: string;
  keyPem: string;
}

export interface NodeApiResponse {
  status: number;
  json: unknown;
  text: string;
  headers: Headers;
}

export interface NodeApiClient {
  request(
    method: string,
    path: string,
    body?: unknown,
    init?: { rawBody?: string; headers?: Record<string, string> },
  ): Promise<NodeApiResponse>;
  /** For streams (SSE): the raw undici response; the caller reads and cancels the body. */
  open(path: string, signal?: AbortSignal): Promise<Awaited<ReturnType<typeof undiciFetch>>>;
  close(): Promise<void>;
}

export interface TestNodeApi {
  cp: TestCp;
  url: string;
  /** The CP's 9091 trust anchor (cp_server_ca), as a node's package carries it. */
  cpCaPem: string;
  /** The SSE hub behind /events (closed by close()). */
  sse: SseHub;
  mintNode(options?: { name?: string; status?: string }): Promise<NodeIdentity>;
  client(identity: { certPem: string; keyPem: string }): NodeApiClient;
  close(): Promise<void>;
}

/** Setup done, node API listening on 127.0.0.1:0 with the CP's real TLS identity. */
export async function startTestNodeApi(
  variant: DbVariant,
  label = "nodeapi",
  app = createNodeApiApp,
  sseOptions: Partial<SseHubOptions> = {},
): Promise<TestNodeApi> {
  const cp = await createTestCp(variant, label);
  await completeSetup(cp.ctx);
  await ensureCpServerCertificate(cp.ctx);
  const identity = await loadCpTlsIdentity(cp.ctx);
  const sse = createSseHub(cp.ctx, sseOptions);
  const server = https.createServer(nodeApiTlsOptions(identity), getRequestListener(app(cp.ctx, sse).fetch));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const url = `https://127.0.0.1:${port}`;
  const clients: NodeApiClient[] = [];
  return {
    cp,
    url,
    cpCaPem: identity.serverCaPem,
    sse,
    mintNode: (options) => mintNode(cp.ctx, options),
    client(id) {
      const client = nodeApiClient(url, identity.serverCaPem, id);
      clients.push(client);
      return client;
    },
    async close() {
      await sse.closeAll();
      await Promise.all(clients.map((c) => c.close()));
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await cp.close();
    },
  };
}

export async function mintNode(ctx: CpContext, options: { name?: string; status?: string } = {}): Promise<NodeIdentity> {
  const nodeId = newId("nod");
  const now = ctx.clock.now();
  await ctx.controlDb
    .insertInto("nodes")
    .values({
      id: nodeId,
      name: options.name ?? `node-${nodeId.slice(-8)}`,
      host: "node.example.test",
      business_port: 8443,
      status: options.status ?? "active",
      created_at: now,
      updated_at: now,
      created_by: null,
      sse_connected: 0,
      online_users: 0,
    })
    .execute();
  const issued = await issueNodeCertificate(ctx, "cp_node_client_ca", "node_client", nodeId);
  const ca = await loadActiveCa(ctx, "cp_node_client_ca");
  const certificateId = await recordCertificate(ctx.controlDb, ctx.clock, {
    issued,
    caId: ca.id,
    leafProfile: "node_client",
    purpose: "node_client",
    ownerType: "node",
    ownerId: nodeId,
    actor: "test",
  });
  await ctx.controlDb.updateTable("nodes").set({ client_cert_id: certificateId }).where("id", "=", nodeId).execute();
  return { nodeId, certificateId, certPem: issued.certPem, keyPem: issued.keyPem ?? "" };
}

/** A certificate naming `nodeId` that the CP never recorded (same CA) or from another CA. */
export async function mintForeignCert(
  ctx: CpContext,
  nodeId: string,
  ca: CaProfile = "cp_node_client_ca",
): Promise<{ certPem: string; keyPem: string }> {
  const profile: LeafProfile = ca === "cp_node_client_ca" ? "node_client" : "app_client";
  const issued = await issueNodeCertificate(ctx, ca, profile, nodeId);
  return { certPem: issued.certPem, keyPem: issued.keyPem ?? "" };
}

async function issueNodeCertificate(ctx: CpContext, caProfile: CaProfile, profile: LeafProfile, nodeId: string) {
  const ca = await loadActiveCa(ctx, caProfile);
  const uri = profile === "node_client" ? nodeUri(nodeId) : `urn:authnexus:app:${nodeId}`;
  return issueLeafCertificate({ profile, issuer: ca, commonName: nodeId, sans: { uri: [uri] }, clock: ctx.clock });
}

export function nodeApiClient(url: string, cpCaPem: string, identity: { certPem: string; keyPem: string }): NodeApiClient {
  // The CP certificate names localhost/127.0.0.1 and the public CP host.
  const agent = new Agent({ connect: { ca: cpCaPem, cert: identity.certPem, key: identity.keyPem, servername: "localhost" } });
  return {
    async request(method, path, body, init = {}) {
      const headers: Record<string, string> = { ...(init.headers ?? {}) };
      let payload: string | undefined = init.rawBody;
      if (body !== undefined) {
        payload = JSON.stringify(body);
        headers["content-type"] ??= "application/json";
      }
      const res = await undiciFetch(`${url}${path}`, {
        method,
        headers,
        ...(payload !== undefined ? { body: payload } : {}),
        dispatcher: agent,
      });
      const text = await res.text();
      let json: unknown;
      try {
        json = text ? JSON.parse(text) : undefined;
      } catch {
        json = undefined;
      }
      return { status: res.status, json, text, headers: res.headers as unknown as Headers };
    },
    open: (path, signal) =>
      undiciFetch(`${url}${path}`, { headers: { accept: "text/event-stream" }, dispatcher: agent, ...(signal ? { signal } : {}) }),
    close: () => agent.close(),
  };
}
