/**
 * The hash chain of the audit trails, pure (no I/O): every row of a trail carries
 * `chain_hash = HMAC-SHA256(key, previous hash ‖ canonical encoding of the row)`, the first row
 * of a chain linking to a genesis value bound to the table and the chain id. A database writer
 * without the key can delete, edit or add rows, but not leave a chain that verifies.
 *
 * Keys are derived with HKDF-SHA256 from a secret each writer already holds: the Control DB's
 * trails from the CP master key, the Runtime DB's from the deployment's password-hash key (every
 * node has it in its deploy package, and the CP can unseal it), so the CP verifies both.
 */
import { createHmac, hkdfSync } from "node:crypto";

export type AuditDatabase = "control" | "runtime";

/** A column value as the databases return it: text, an integer, or null. */
export type ChainValue = string | number | null;

export const AUDIT_KEY_BYTES = 32;
const KEY_INFO = "authnexus audit chain v1 ";
const GENESIS_LABEL = "authnexus.audit.genesis.v1";

/** The chain key of one database, from the master key (control) or the password-hash key (runtime). */
export function deriveAuditKey(secret: Buffer, database: AuditDatabase): Buffer {
  if (secret.length < 16) throw new Error("audit chain secret is too short");
  return Buffer.from(hkdfSync("sha256", secret, Buffer.alloc(0), KEY_INFO + database, AUDIT_KEY_BYTES));
}

/** What the first row of a chain links to: moving a chain to another table or id breaks it. */
export function genesisHash(key: Buffer, table: string, chainId: string): Buffer {
  return createHmac("sha256", key)
    .update(encodeFields([GENESIS_LABEL, table, chainId]))
    .digest();
}

/** The hash a row carries, given the hash of the row before it in its chain. */
export function linkHash(
  key: Buffer,
  previous: Buffer,
  table: string,
  chainId: string,
  seq: number,
  values: readonly ChainValue[],
): Buffer {
  return createHmac("sha256", key)
    .update(previous)
    .update(encodeFields([table, chainId, seq, ...values]))
    .digest();
}

/**
 * Unambiguous encoding: per field a tag byte (0 null, 1 text, 2 integer) and, for text and
 * integers, a 4-byte big-endian length and the UTF-8 bytes (integers in decimal), so no two
 * different rows encode alike (no separator a value could contain).
 */
export function encodeFields(values: readonly (ChainValue | bigint)[]): Buffer {
  const parts: Buffer[] = [];
  for (const value of values) {
    if (value === null || value === undefined) {
      parts.push(TAG_NULL);
      continue;
    }
    const isText = typeof value === "string";
    const body = Buffer.from(isText ? value : integerText(value), "utf8");
    const header = Buffer.allocUnsafe(5);
    header[0] = isText ? 1 : 2;
    header.writeUInt32BE(body.length, 1);
    parts.push(header, body);
  }
  return Buffer.concat(parts);
}

const TAG_NULL = Buffer.from([0]);

function integerText(value: number | bigint): string {
  if (typeof value === "bigint") return value.toString();
  if (!Number.isSafeInteger(value)) throw new Error(`audit chain: ${value} is not an integer column value`);
  return String(value);
}
