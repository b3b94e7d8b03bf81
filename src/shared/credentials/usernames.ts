/**
 * End-user names and emails. A username is compared in one normalised form (Unicode NFKC,
 * lower case), so "Alice" and "ＡＬＩＣＥ" are one account; the spelling the user chose is kept
 * for display. Allowed: 3 to 32 letters or digits of any script, and . _ - between them, in at
 * most 64 UTF-8 bytes (what the wire protocol carries, so every account can be typed into an SDK).
 */
export const USERNAME_MAX_BYTES = 64;
export const EMAIL_MAX_BYTES = 254;
const USERNAME = /^[\p{L}\p{N}](?:[\p{L}\p{N}._-]{1,30})[\p{L}\p{N}]$/u;
const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,189}\.[^\s@]{2,63}$/;

export function normalizeUsername(username: string): string {
  return username.normalize("NFKC").toLowerCase();
}

/** A reason the username cannot be used, or null when it can. */
export function usernameProblem(username: string): string | null {
  if (username !== username.trim()) return "must not start or end with spaces";
  if (!USERNAME.test(username.normalize("NFKC"))) return "must be 3-32 letters or digits, with . _ - between them";
  if (Buffer.byteLength(username) > USERNAME_MAX_BYTES) return `must be at most ${USERNAME_MAX_BYTES} bytes of UTF-8`;
  return null;
}

export function emailProblem(email: string): string | null {
  // Control characters (NUL above all, which PostgreSQL text refuses) are never part of an address.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
  if (/[\u0000-\u001f\u007f]/.test(email)) return "must be an email address";
  return Buffer.byteLength(email) <= EMAIL_MAX_BYTES && EMAIL.test(email) ? null : "must be an email address";
}
