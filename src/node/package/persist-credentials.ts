/**
 * Makes a rotation's credentials survive a restart: they are written next to node_agent.json
 * under names carrying the rotation id (keys mode 0600, each file synced), then node_agent.json
 * is replaced in one rename to name them. The rename is the commit point: a crash before it
 * leaves the old credentials in force (and the CP delivers the new ones again), a crash after
 * it starts the node on the new ones. The files the old manifest named are removed afterwards.
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { AgentPackage } from "../../shared/node-protocol/index.js";
import type { CredentialSet } from "./load-agent-package.js";

type CredentialFile = "server_cert" | "server_key" | "server_issuer" | "client_cert" | "client_key" | "cp_ca";

const SECRET: ReadonlySet<CredentialFile> = new Set(["server_key", "client_key"]);

/** Writes the credentials and points node_agent.json at them; returns the files it removed. */
export async function persistRotatedCredentials(agentFile: string, rotationId: string, set: CredentialSet): Promise<string[]> {
  const directory = path.dirname(agentFile);
  const manifest = JSON.parse(await fs.readFile(agentFile, "utf8")) as AgentPackage & Record<string, unknown>;
  const contents: Partial<Record<CredentialFile, string>> = {
    server_cert: set.serverCertPem,
    server_key: set.serverKeyPem,
    server_issuer: set.serverIssuerPem,
    client_cert: set.clientCertPem,
    client_key: set.clientKeyPem,
    ...(set.cpCaPem === undefined ? {} : { cp_ca: set.cpCaPem }),
  };
  const names: Partial<Record<CredentialFile, string>> = {
    server_cert: `server-${rotationId}.crt`,
    server_key: `server-${rotationId}.key`,
    server_issuer: `server-issuer-${rotationId}.crt`,
    client_cert: `client-${rotationId}.crt`,
    client_key: `client-${rotationId}.key`,
    ...(set.cpCaPem === undefined ? {} : { cp_ca: `cp-ca-${rotationId}.pem` }),
  };
  for (const key of Object.keys(names) as CredentialFile[]) {
    await writeSynced(path.join(directory, names[key] as string), contents[key] as string, SECRET.has(key) ? 0o600 : 0o644);
  }
  const replaced = (Object.keys(names) as CredentialFile[]).map((key) => manifest.files[key]);
  const next = { ...manifest, files: { ...manifest.files, ...names } };
  const temporary = `${agentFile}.${rotationId}.tmp`;
  await writeSynced(temporary, `${JSON.stringify(next, null, 2)}\n`, 0o600);
  await fs.rename(temporary, agentFile);
  await syncDirectory(directory);
  const stillNamed = new Set(Object.values(next.files));
  const removed: string[] = [];
  for (const old of replaced) {
    if (stillNamed.has(old)) continue;
    const absolute = path.resolve(directory, old);
    // Only files inside the package directory: the manifest may name a shared file elsewhere.
    if (!absolute.startsWith(path.resolve(directory) + path.sep)) continue;
    await fs.rm(absolute, { force: true });
    removed.push(absolute);
  }
  return removed;
}

async function writeSynced(file: string, text: string, mode: number): Promise<void> {
  const handle = await fs.open(file, "w", mode);
  try {
    await handle.writeFile(text, "utf8");
    await handle.chmod(mode);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDirectory(directory: string): Promise<void> {
  const handle = await fs.open(directory, "r").catch(() => null);
  if (!handle) return;
  try {
    await handle.sync();
  } catch {
    // Some filesystems refuse to sync a directory; the rename is still atomic there.
  } finally {
    await handle.close();
  }
}
