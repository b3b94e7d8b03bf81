/**
 * The node's deploy package in a development folder: unpacked (with the CP's own ustar reader,
 * keys 0600 as the archive says) into <dir>/node, and its node_agent.json pointed at the CP's
 * bound node API and OCSP addresses on every start — the package names the CP's public URLs,
 * and a development CP may listen on ports chosen at start.
 */
import fs from "node:fs";
import path from "node:path";
import { readTarGz } from "../../cp/packages/tar-archive.js";
import { AGENT_FILE_NAME, type AgentPackage, agentPackageSchema } from "../../shared/node-protocol/index.js";
import { statOrNull, writeAtomically } from "./folder.js";

const PUBLIC_FILE_MODE = 0o644;

/** The manifest of the package unpacked at `dir`, or null when there is none (or it is unreadable). */
export function readInstalledManifest(dir: string): AgentPackage | null {
  try {
    const parsed = agentPackageSchema.safeParse(JSON.parse(fs.readFileSync(path.join(dir, AGENT_FILE_NAME), "utf8")));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/**
 * Unpacks `archive` into `<dir>.partial`, then swaps it in for `dir`: an interrupted unpack
 * never leaves a half package where the node looks for one.
 */
export function installDeployPackage(archive: Buffer, dir: string): void {
  const entries = readTarGz(archive);
  const partial = `${dir}.partial`;
  fs.rmSync(partial, { recursive: true, force: true });
  fs.mkdirSync(partial, { mode: 0o700 });
  for (const entry of entries) {
    const target = path.join(partial, ...entry.path.split("/"));
    if (entry.type === "directory") {
      if (!statOrNull(target)) fs.mkdirSync(target, { mode: entry.mode });
      fs.chmodSync(target, entry.mode);
      continue;
    }
    fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 });
    const fd = fs.openSync(target, "wx", entry.mode);
    try {
      fs.fchmodSync(fd, entry.mode);
      fs.writeFileSync(fd, entry.content);
    } finally {
      fs.closeSync(fd);
    }
  }
  if (!readInstalledManifest(partial)) throw new Error(`the deploy package has no valid ${AGENT_FILE_NAME}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(partial, dir);
}

/** Rewrites cp_url and ocsp_url in `<dir>/node_agent.json` (only when they differ). */
export function pointAgentAt(dir: string, cpUrl: string, ocspUrl: string): string {
  const file = path.join(dir, AGENT_FILE_NAME);
  const manifest = readInstalledManifest(dir);
  if (!manifest) throw new Error(`${file} is missing or invalid`);
  if (manifest.cp_url !== cpUrl || manifest.ocsp_url !== ocspUrl) {
    writeAtomically(file, `${JSON.stringify({ ...manifest, cp_url: cpUrl, ocsp_url: ocspUrl }, null, 2)}\n`, PUBLIC_FILE_MODE);
  }
  return file;
}
