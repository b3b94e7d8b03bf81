/**
 * Sealing of secrets at rest (CA private keys, and anything else the CP stores encrypted)
 * with AES-256-GCM under the 32-byte master key.
 *
 * Sealed format: version (1 byte, 0x01) | nonce (12) | tag (16) | ciphertext.
 * The associated data names the purpose of the blob (for example "ca-key:tcp_server_ca"), so a
 * blob copied into another row or column fails to open instead of yielding a usable key. The
 * version byte is authenticated too, so it cannot be flipped to select another format.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { AuthNexusError } from "../errors/index.js";

export const MASTER_KEY_BYTES = 32;
const SEAL_VERSION = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + NONCE_BYTES + TAG_BYTES;
const MASTER_KEY_MESSAGE = "master key must be 32 bytes as 64 hex characters or base64";

const HEX_KEY = /^[0-9a-fA-F]{64}$/;
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=?$/;
const BASE64URL_KEY = /^[A-Za-z0-9_-]{43}=?$/;

/** Accepts 64 hex characters, or base64 / base64url (padded or not) of exactly 32 bytes. */
export function parseMasterKey(text: string): Buffer {
  const value = text.trim();
  if (HEX_KEY.test(value)) return Buffer.from(value, "hex");
  if (BASE64_KEY.test(value) || BASE64URL_KEY.test(value)) {
    const unpadded = value.replace(/=$/, "").replace(/\+/g, "-").replace(/\//g, "_");
    const key = Buffer.from(unpadded, "base64url");
    // 43 characters carry 258 bits: refuse the 2 spare bits being set, so every key has one
    // spelling and a typo cannot silently decode to a different key.
    if (key.length === MASTER_KEY_BYTES && key.toString("base64url") === unpadded) return key;
  }
  throw new AuthNexusError("CONFIG_INVALID", { message: MASTER_KEY_MESSAGE });
}

export function generateMasterKey(): Buffer {
  return randomBytes(MASTER_KEY_BYTES);
}

/** Hex, the form operators are asked to store; parseMasterKey reads it back. */
export function encodeMasterKey(key: Buffer): string {
  assertKeyLength(key);
  return key.toString("hex");
}

export function sealSecret(masterKey: Buffer, plaintext: Buffer, associatedData: string): Buffer {
  assertKeyLength(masterKey);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", masterKey, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aadFor(SEAL_VERSION, associatedData));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([SEAL_VERSION]), nonce, cipher.getAuthTag(), ciphertext]);
}

/** Every failure (wrong key, wrong purpose, tampering, unknown format) is one error code. */
export function openSecret(masterKey: Buffer, sealed: Buffer, associatedData: string): Buffer {
  if (masterKey.length !== MASTER_KEY_BYTES) throw decryptFailed("master key has the wrong length");
  if (sealed.length < HEADER_BYTES) throw decryptFailed("sealed secret is truncated");
  const version = sealed[0];
  if (version !== SEAL_VERSION) throw decryptFailed("unknown sealed secret version");
  const nonce = sealed.subarray(1, 1 + NONCE_BYTES);
  const tag = sealed.subarray(1 + NONCE_BYTES, HEADER_BYTES);
  try {
    const decipher = createDecipheriv("aes-256-gcm", masterKey, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(aadFor(version, associatedData));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(sealed.subarray(HEADER_BYTES)), decipher.final()]);
  } catch (cause) {
    throw decryptFailed("authentication failed", cause);
  }
}

function aadFor(version: number, associatedData: string): Buffer {
  return Buffer.concat([Buffer.from([version]), Buffer.from(associatedData, "utf8")]);
}

function assertKeyLength(key: Buffer): void {
  if (key.length !== MASTER_KEY_BYTES) {
    throw new AuthNexusError("CONFIG_INVALID", { message: MASTER_KEY_MESSAGE });
  }
}

function decryptFailed(reason: string, cause?: unknown): AuthNexusError {
  return new AuthNexusError("PKI_DECRYPT_FAILED", { detail: { reason }, cause });
}
