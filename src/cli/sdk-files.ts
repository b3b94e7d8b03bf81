/**
 * Writing what `pki issue-client` receives into the directory a vendor ships beside its program:
 * the client certificate and key, the server CA and OCSP signer CA, and authnexus-sdk.json.
 * Nothing is ever overwritten: existing files are refused before the certificate is even issued,
 * every file is created exclusively, and a write that fails half-way removes what it wrote.
 */
import fs from "node:fs";
import path from "node:path";
import { SDK_CONFIG_FILE_NAME, SDK_CONFIG_FILES } from "../shared/sdk-config.js";

export type SdkFileKey = keyof typeof SDK_CONFIG_FILES | "sdk_config";

interface SdkFileSpec {
  key: SdkFileKey;
  name: string;
  mode: number;
  what: string;
}

const DIR_MODE = 0o700;

/** In the order they are written and printed. */
export const SDK_FILES: readonly SdkFileSpec[] = [
  { key: "client_cert", name: SDK_CONFIG_FILES.client_cert, mode: 0o644, what: "client certificate" },
  { key: "client_key", name: SDK_CONFIG_FILES.client_key, mode: 0o600, what: "private key, shown only this once: keep it secret" },
  { key: "server_ca", name: SDK_CONFIG_FILES.server_ca, mode: 0o644, what: "server CA bundle, tcp_server_ca" },
  { key: "ocsp_signer_ca", name: SDK_CONFIG_FILES.ocsp_signer_ca, mode: 0o644, what: "OCSP signer CA" },
  { key: "sdk_config", name: SDK_CONFIG_FILE_NAME, mode: 0o644, what: "SDK configuration" },
];

export type SdkFileContents = Record<SdkFileKey, string>;

export interface WrittenSdkFile {
  key: SdkFileKey;
  path: string;
  mode: number;
  what: string;
}

/**
 * Throws (writing nothing) unless the files can be created: `dir` is a writable directory
 * holding none of them, or does not exist yet and its nearest existing ancestor is a writable
 * directory.
 */
export function checkSdkOutputDir(dir: string): void {
  const target = path.resolve(dir);
  const stat = statOrNull(target);
  if (stat) {
    if (!stat.isDirectory()) throw new Error(`${target} exists and is not a directory`);
    const existing = SDK_FILES.map((f) => path.join(target, f.name)).filter((p) => fs.existsSync(p));
    if (existing.length > 0) {
      throw new Error(`refusing to overwrite ${existing.join(", ")}: choose an empty directory (nothing was issued or written)`);
    }
    assertWritable(target);
    return;
  }
  let ancestor = path.dirname(target);
  while (!statOrNull(ancestor) && path.dirname(ancestor) !== ancestor) ancestor = path.dirname(ancestor);
  if (!statOrNull(ancestor)?.isDirectory()) throw new Error(`cannot create ${target}: ${ancestor} is not a directory`);
  assertWritable(ancestor);
}

/**
 * Creates `dir` (0700) if missing and every file with its mode, exclusively. On any failure the
 * files written so far (and the directory, when this call created it) are removed again.
 */
export function writeSdkFiles(dir: string, contents: SdkFileContents): WrittenSdkFile[] {
  const target = path.resolve(dir);
  const createdDir = statOrNull(target) === null;
  if (createdDir) {
    fs.mkdirSync(target, { recursive: true, mode: DIR_MODE });
    fs.chmodSync(target, DIR_MODE);
  }
  const written: WrittenSdkFile[] = [];
  try {
    for (const spec of SDK_FILES) {
      const file = path.join(target, spec.name);
      writeExclusive(file, contents[spec.key], spec.mode);
      written.push({ key: spec.key, path: file, mode: spec.mode, what: spec.what });
    }
  } catch (error) {
    for (const file of written) fs.rmSync(file.path, { force: true });
    if (createdDir) fs.rmSync(target, { recursive: true, force: true });
    throw error;
  }
  return written;
}

/** 'wx' refuses a file that appeared meanwhile; the mode is set at creation (a key is never briefly readable) and then exactly, whatever the umask. */
function writeExclusive(file: string, data: string, mode: number): void {
  let fd: number;
  try {
    fd = fs.openSync(file, "wx", mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") throw new Error(`refusing to overwrite ${file}`);
    throw error;
  }
  try {
    fs.fchmodSync(fd, mode);
    fs.writeFileSync(fd, data);
  } finally {
    fs.closeSync(fd);
  }
}

function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw error;
  }
}

function assertWritable(dir: string): void {
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    throw new Error(`cannot write to ${dir}`);
  }
}
