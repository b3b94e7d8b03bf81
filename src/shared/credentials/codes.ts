/**
 * Card keys and invite codes: random codes a person types, in Crockford base32 (no I, L, O, U),
 * grouped by dashes — `7KQ3M-XW2PD-9HF4N-C6RTA-JB8VE` for a card key (25 characters, 125 bits),
 * four groups for an invite code (100 bits). Input is forgiving: case, spaces, dashes, and the
 * look-alikes O→0, I/L→1 are folded before lookup. Only a hash of the canonical form is stored;
 * the codes are random enough that a plain SHA-256 cannot be reversed by guessing.
 */
import { randomBytes } from "node:crypto";
import { sha256Hex } from "../ids.js";

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const GROUP = 5;
export const CARD_KEY_GROUPS = 5;
export const INVITE_CODE_GROUPS = 4;

/** A fresh code of `groups` groups of five characters; `random` is injectable for tests. */
export function generateCode(groups: number, random: (size: number) => Buffer = randomBytes): string {
  const length = groups * GROUP;
  // 5 bits per character from whole bytes: draw 8 bits per character, keep the low 5 (uniform).
  const bytes = random(length);
  let code = "";
  for (let i = 0; i < length; i++) code += ALPHABET[(bytes[i] as number) & 31];
  return (code.match(/.{5}/g) ?? []).join("-");
}

/** The canonical characters of a typed code, or null when it cannot be one (wrong length, other characters). */
export function canonicalCode(typed: string, groups: number): string | null {
  const folded = typed.toUpperCase().replace(/[\s-]/g, "").replace(/O/g, "0").replace(/[IL]/g, "1");
  if (folded.length !== groups * GROUP) return null;
  for (const c of folded) if (!ALPHABET.includes(c)) return null;
  return folded;
}

/** What is stored and looked up. */
export function codeHash(canonical: string): string {
  return sha256Hex(canonical);
}

/** The last characters, shown to admins so a card can be told apart without its code. */
export function codeHint(canonical: string): string {
  return canonical.slice(-4);
}
