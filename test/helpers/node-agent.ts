/**
 * Node-side test fixtures: a deploy package written to a temp dir from a PKI minted per run
 * (no CP involved), so package loading, the OCSP stapler and the agent's pieces can be tested
 * on their own; and small waiting helpers for tests that watch a running node.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { AGENT_FILE_NAME, AGENT_PACKAGE_FORMAT, type AgentPackage, PACKAGE_FILES } from "../../src/shared/node-protocol/index.js";
import { type CaProfile, createRootCa, type IssuedCertificate, issueLeafCertificate, nodeUri } from "../../src/shared/pki/index.js";
import type { Clock } from "../../src/shared/time/index.js";
import { makeTempDir, type TempDir } from "./temp-dir.js";

export interface NodePki {
  cas: Record<CaProfile, IssuedCertificate>;
  client: IssuedCertificate;
  server: IssuedCertificate;
}

export async function mintNodePki(nodeId: string, clock: Clock, ocspUrl = "http://127.0.0.1:9/ocsp/"): Promise<NodePki> {
  const profiles: CaProfile[] = ["cp_server_ca", "cp_node_client_ca", "tcp_server_ca", "app_client_ca"];
  const cas = {} as Record<CaProfile, IssuedCertificate>;
  for (const profile of profiles) cas[profile] = await createRootCa({ profile, commonName: `Test ${profile}`, clock });
  const issuer = (profile: CaProfile) => ({ certPem: cas[profile].certPem, keyPem: cas[profile].keyPem ?? "" });
  const client = await issueLeafCertificate({
    profile: "node_client",
    issuer: issuer("cp_node_client_ca"),
    commonName: nodeId,
    sans: { uri: [nodeUri(nodeId)] },
    clock,
  });
  const server = await issueLeafCertificate({
    profile: "node_server",
    issuer: issuer("tcp_server_ca"),
    commonName: "node.test",
    sans: { dns: ["node.test"] },
    ocspUrl,
    clock,
  });
  return { cas, client, server };
}

export interface WrittenPackage {
  dir: TempDir;
  agentFile: string;
  manifest: AgentPackage;
  pki: NodePki;
  /** Absolute path of a package file by its manifest key. */
  file(key: keyof AgentPackage["files"]): string;
}

export interface PackageOverrides {
  manifest?: Partial<AgentPackage>;
  /** Replaces a file's content (by manifest key). */
  files?: Partial<Record<keyof AgentPackage["files"], string>>;
  /** Leaves these files out. */
  omit?: (keyof AgentPackage["files"])[];
}

export async function writeAgentPackage(pki: NodePki, nodeId: string, overrides: PackageOverrides = {}): Promise<WrittenPackage> {
  const dir = await makeTempDir("authnexus-node-package");
  const manifest: AgentPackage = {
    format: AGENT_PACKAGE_FORMAT,
    node_id: nodeId,
    node_name: "test node",
    package_id: "pkg_test",
    created_at: new Date().toISOString(),
    cp_url: "https://127.0.0.1:9",
    ocsp_url: "http://127.0.0.1:9/ocsp/",
    business: { host: "node.test", port: 8443 },
    files: { ...PACKAGE_FILES },
    ...overrides.manifest,
  };
  const contents: Record<keyof AgentPackage["files"], string> = {
    cp_ca: pki.cas.cp_server_ca.certPem,
    client_cert: pki.client.certPem,
    client_key: pki.client.keyPem ?? "",
    server_cert: pki.server.certPem,
    server_key: pki.server.keyPem ?? "",
    server_issuer: pki.cas.tcp_server_ca.certPem,
    app_client_ca: pki.cas.app_client_ca.certPem,
    password_hash_key: `${randomBytes(32).toString("hex")}\n`,
    ...overrides.files,
  };
  const secret = new Set(["client_key", "server_key", "password_hash_key"]);
  for (const [key, relative] of Object.entries(manifest.files) as [keyof AgentPackage["files"], string][]) {
    if (overrides.omit?.includes(key)) continue;
    const target = path.join(dir.path, relative);
    await fs.mkdir(path.dirname(target), { recursive: true });
    await fs.writeFile(target, contents[key], { mode: secret.has(key) ? 0o600 : 0o644 });
  }
  const agentFile = path.join(dir.path, AGENT_FILE_NAME);
  await fs.writeFile(agentFile, JSON.stringify(manifest, null, 2));
  return { dir, agentFile, manifest, pki, file: (key) => path.join(dir.path, manifest.files[key]) };
}

/** Polls `probe` until it returns a truthy value or `timeoutMs` passes (then throws `what`). */
export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 15_000, everyMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
