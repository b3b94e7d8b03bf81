/**
 * Agent (admin) passwords: scrypt, because an admin login is rare and an offline attack on a
 * leaked Control DB must be slow. End-user passwords use the fast keyed scheme of the business
 * plane instead (server-held secret, not stored in the database).
 *
 * The password is NFKC-normalised and SHA-256'd before scrypt. scrypt keys PBKDF2-HMAC with
 * its input, and HMAC zero-pads short keys, so "pw" and "pw\0" would otherwise derive the same
 * hash; a fixed-length input removes that ambiguity while any character stays allowed.
 */
import { createHash, randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { AGENT_PASSWORD_MAX_LENGTH, AGENT_PASSWORD_MIN_LENGTH } from "../../../shared/config/defaults.js";
import { AuthNexusError } from "../../../shared/errors/index.js";

const SCRYPT_N = 16384;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
const KEY_LENGTH = 32;
const PREFIX = `$scrypt-sha256$n=${SCRYPT_N},r=${SCRYPT_R},p=${SCRYPT_P}$`;

function derive(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  const input = createHash("sha256").update(password.normalize("NFKC"), "utf8").digest();
  return new Promise((resolve, reject) => {
    scrypt(input, salt, KEY_LENGTH, { N: n, r, p, maxmem: 256 * n * r }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export async function hashAgentPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P);
  return `${PREFIX}${salt.toString("hex")}$${key.toString("hex")}`;
}

export async function verifyAgentPassword(password: string, stored: string): Promise<boolean> {
  const match = /^\$scrypt-sha256\$n=(\d+),r=(\d+),p=(\d+)\$([0-9a-f]{32})\$([0-9a-f]{64})$/.exec(stored);
  if (!match) return false;
  const [, n, r, p, saltHex, keyHex] = match as unknown as [string, string, string, string, string, string];
  const key = await derive(password, Buffer.from(saltHex, "hex"), Number(n), Number(r), Number(p));
  return timingSafeEqual(key, Buffer.from(keyHex, "hex"));
}

/** A fixed hash to verify against when the username is unknown, so both paths cost the same. */
let decoyHash: Promise<string> | undefined;
export function decoyPasswordHash(): Promise<string> {
  decoyHash ??= hashAgentPassword(randomBytes(16).toString("hex"));
  return decoyHash;
}

export function assertPasswordPolicy(password: string, username: string): void {
  const problems: string[] = [];
  if (password.length < AGENT_PASSWORD_MIN_LENGTH) problems.push(`at least ${AGENT_PASSWORD_MIN_LENGTH} characters`);
  if (password.length > AGENT_PASSWORD_MAX_LENGTH) problems.push(`at most ${AGENT_PASSWORD_MAX_LENGTH} characters`);
  if (password.toLowerCase().includes(username.toLowerCase())) problems.push("must not contain the username");
  if (new Set(password).size < 5) problems.push("at least 5 distinct characters");
  if (problems.length > 0) {
    throw new AuthNexusError("WEAK_PASSWORD", { message: `Password does not meet the policy: ${problems.join("; ")}.` });
  }
}
