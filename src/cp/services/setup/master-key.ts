/**
 * The master key seals CA private keys and server secrets at rest (AES-256-GCM). It comes from
 * AUTHNEXUS_MASTER_KEY, from --master-key-file, or, for a first try-out, is generated into the
 * data dir with mode 0600 and a loud warning: production keeps it outside the data dir (a
 * secret store or a separately mounted file), so a copied database alone reveals no key.
 */
import fs from "node:fs";
import path from "node:path";
import { AuthNexusError } from "../../../shared/errors/index.js";
import type { Logger } from "../../../shared/log/index.js";
import { encodeMasterKey, generateMasterKey, openSecret, parseMasterKey, sealSecret } from "../../../shared/pki/index.js";

export const MASTER_KEY_FILE_NAME = "master.key";
const KEY_CHECK_PLAINTEXT = Buffer.from("authnexus master key check v1");
const KEY_CHECK_AAD = "master-key-check";

export interface MasterKeySource {
  envValue?: string | undefined;
  file?: string | undefined;
  dataDir: string;
}

export function loadMasterKey(source: MasterKeySource, log: Logger): Buffer {
  if (source.envValue) return parseMasterKey(source.envValue);
  if (source.file) return readKeyFile(path.resolve(source.file), log);
  const generatedPath = path.resolve(source.dataDir, MASTER_KEY_FILE_NAME);
  if (fs.existsSync(generatedPath)) {
    log.warn("master key is kept in the data dir; production should keep it elsewhere", { master_key_path: generatedPath });
    return readKeyFile(generatedPath, log);
  }
  const key = generateMasterKey();
  fs.mkdirSync(source.dataDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(generatedPath, `${encodeMasterKey(key)}\n`, { mode: 0o600, flag: "wx" });
  log.warn("generated a master key in the data dir; production should pass --master-key-file or AUTHNEXUS_MASTER_KEY from a secret store", {
    master_key_path: generatedPath,
  });
  return key;
}

function readKeyFile(file: string, log: Logger): Buffer {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (cause) {
    throw new AuthNexusError("CONFIG_INVALID", { message: `cannot read master key file ${file}: ${(cause as Error).message}`, cause });
  }
  const mode = fs.statSync(file).mode & 0o077;
  if (mode !== 0) log.warn("master key file is readable by group or others; chmod 600 it", { master_key_path: file });
  return parseMasterKey(text);
}

/** A small sealed value stored at setup, so a wrong master key fails at start, not at first use. */
export function sealKeyCheck(masterKey: Buffer): Buffer {
  return sealSecret(masterKey, KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD);
}

export function assertKeyCheck(masterKey: Buffer, sealed: Buffer): void {
  try {
    openSecret(masterKey, sealed, KEY_CHECK_AAD);
  } catch (cause) {
    throw new AuthNexusError("MASTER_KEY_INVALID", {
      message:
        "the master key does not match the one this Control DB was set up with; pass the original --master-key-file or AUTHNEXUS_MASTER_KEY",
      cause,
    });
  }
}
