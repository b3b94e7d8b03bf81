/**
 * Builds a node's deploy package (format: src/shared/node-protocol/agent-package.ts): the
 * node_agent.json manifest at the root, then the certificates, keys, CA bundles and the
 * password-hash key it names. Pure: the caller fetches everything from the inventory, so the
 * builder can be tested byte for byte and never touches the database.
 */
import { createHash } from "node:crypto";
import { AuthNexusError } from "../../shared/errors/index.js";
import {
  AGENT_FILE_NAME,
  AGENT_PACKAGE_FORMAT,
  type AgentPackage,
  agentPackageSchema,
  PACKAGE_FILES,
} from "../../shared/node-protocol/index.js";
import { createTarGz, type TarEntry } from "./tar-archive.js";

/** Private keys and secrets: owner-only after `tar -x`. */
export const SECRET_FILE_MODE = 0o600;
export const PUBLIC_FILE_MODE = 0o644;
const PUBLIC_DIR_MODE = 0o755;
const SECRET_DIR_MODE = 0o700;

export interface DeployPackageInput {
  nodeId: string;
  nodeName: string;
  packageId: string;
  /** Epoch ms: the manifest's created_at and every file's mtime. */
  createdAt: number;
  cpUrl: string;
  ocspUrl: string;
  business: { host: string; port: number };
  cpServerCaPem: string;
  client: { certPem: string; keyPem: string };
  server: { certPem: string; keyPem: string };
  tcpServerCaPem: string;
  appClientCaPem: string;
  /** The deployment's password-hash server secret (raw bytes; written as hex). */
  passwordHashKey: Buffer;
}

export interface BuiltDeployPackage {
  archive: Buffer;
  sha256: string;
  manifest: AgentPackage;
}

export function buildDeployPackage(input: DeployPackageInput): BuiltDeployPackage {
  const manifest = buildManifest(input);
  const archive = createTarGz(packageEntries(input, manifest), input.createdAt);
  return { archive, sha256: createHash("sha256").update(archive).digest("hex"), manifest };
}

/** The manifest, validated against the contract before it is packed: a node must never get one it would refuse. */
export function buildManifest(input: DeployPackageInput): AgentPackage {
  const manifest = {
    format: AGENT_PACKAGE_FORMAT,
    node_id: input.nodeId,
    node_name: input.nodeName,
    package_id: input.packageId,
    created_at: new Date(input.createdAt).toISOString(),
    cp_url: input.cpUrl.replace(/\/+$/, ""),
    ocsp_url: input.ocspUrl,
    business: { host: input.business.host, port: input.business.port },
    files: { ...PACKAGE_FILES },
  };
  const parsed = agentPackageSchema.safeParse(manifest);
  if (!parsed.success) {
    throw new AuthNexusError("INTERNAL", {
      message: "deploy package manifest does not match the agent package contract",
      detail: { issues: parsed.error.issues },
    });
  }
  return parsed.data;
}

function packageEntries(input: DeployPackageInput, manifest: AgentPackage): TarEntry[] {
  const file = (path: string, content: string, mode: number): TarEntry => ({
    type: "file",
    path,
    mode,
    content: Buffer.from(content, "utf8"),
  });
  const pem = (text: string) => `${text.trim()}\n`;
  return [
    file(AGENT_FILE_NAME, `${JSON.stringify(manifest, null, 2)}\n`, PUBLIC_FILE_MODE),
    ...directoriesOf(Object.values(PACKAGE_FILES)),
    file(PACKAGE_FILES.cp_ca, pem(input.cpServerCaPem), PUBLIC_FILE_MODE),
    file(PACKAGE_FILES.client_cert, pem(input.client.certPem), PUBLIC_FILE_MODE),
    file(PACKAGE_FILES.client_key, pem(input.client.keyPem), SECRET_FILE_MODE),
    file(PACKAGE_FILES.server_cert, pem(input.server.certPem), PUBLIC_FILE_MODE),
    file(PACKAGE_FILES.server_key, pem(input.server.keyPem), SECRET_FILE_MODE),
    file(PACKAGE_FILES.server_issuer, pem(input.tcpServerCaPem), PUBLIC_FILE_MODE),
    file(PACKAGE_FILES.app_client_ca, pem(input.appClientCaPem), PUBLIC_FILE_MODE),
    file(PACKAGE_FILES.password_hash_key, `${input.passwordHashKey.toString("hex")}\n`, SECRET_FILE_MODE),
  ];
}

/** Every parent directory of the files, parents first; "secrets/" is owner-only like its contents. */
function directoriesOf(paths: readonly string[]): TarEntry[] {
  const dirs = new Set<string>();
  for (const path of paths) {
    const parts = path.split("/").slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  return [...dirs]
    .sort()
    .map((path) => ({ type: "directory", path, mode: path.split("/")[0] === "secrets" ? SECRET_DIR_MODE : PUBLIC_DIR_MODE }));
}
