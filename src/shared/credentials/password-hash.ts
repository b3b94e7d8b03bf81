/**
 * End-user password hashes, in the one format AuthNexus stores:
 *
 *   $authnexus-fast-hmac-sha256$v=1$<salt_hex>$<hash_hex>
 *
 * hash = HMAC-SHA256(key, "AuthNexusPasswordFastHashV1" ‖ salt ‖ UTF-8(password)), with a
 * 16-byte random salt and the 32-byte server secret as the key. The secret reaches the CP sealed
 * under its master key and each node in its deploy package; it never enters the Runtime DB, so a
 * copy of the Runtime DB alone cannot be used to test guesses. The domain string, salt and
 * password are concatenated in that order: the first two have fixed lengths, so no two inputs
 * collide. Any other format is refused at login (no silent migration).
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

export const PASSWORD_HASH_PREFIX = "$authnexus-fast-hmac-sha256$v=1$";
const DOMAIN = Buffer.from("AuthNexusPasswordFastHashV1", "utf8");
const SALT_BYTES = 16;
const HASH_BYTES = 32;
const FORMAT = /^\$authnexus-fast-hmac-sha256\$v=1\$([0-9a-f]{32})\$([0-9a-f]{64})$/;

export interface ParsedPasswordHash {
  salt: Buffer;
  hash: Buffer;
}

function digest(key: Buffer, salt: Buffer, password: string): Buffer {
  return createHmac("sha256", key).update(DOMAIN).update(salt).update(password, "utf8").digest();
}

/** A new hash of `password`; `random` is injectable for golden vectors. */
export function hashPassword(password: string, key: Buffer, random: (size: number) => Buffer = randomBytes): string {
  const salt = random(SALT_BYTES);
  if (salt.length !== SALT_BYTES) throw new RangeError("the salt must be 16 bytes");
  return `${PASSWORD_HASH_PREFIX}${salt.toString("hex")}$${digest(key, salt, password).toString("hex")}`;
}

/** The salt and hash of a stored value, or null when it is not this format (refused, never migrated). */
export function parsePasswordHash(stored: string): ParsedPasswordHash | null {
  const match = FORMAT.exec(stored);
  if (!match?.[1] || !match[2]) return null;
  return { salt: Buffer.from(match[1], "hex"), hash: Buffer.from(match[2], "hex") };
}

/** Constant-time check; false for a wrong password and for a stored value in any other format. */
export function verifyPassword(password: string, stored: string, key: Buffer): boolean {
  const parsed = parsePasswordHash(stored);
  if (!parsed || parsed.hash.length !== HASH_BYTES) return false;
  return timingSafeEqual(digest(key, parsed.salt, password), parsed.hash);
}
