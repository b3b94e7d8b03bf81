/** End-user credentials every role handles alike: password hashes, card keys and invite codes, usernames. */
export { CARD_KEY_GROUPS, canonicalCode, codeHash, codeHint, generateCode, INVITE_CODE_GROUPS } from "./codes.js";
export { hashPassword, PASSWORD_HASH_PREFIX, type ParsedPasswordHash, parsePasswordHash, verifyPassword } from "./password-hash.js";
export { emailProblem, normalizeUsername, usernameProblem } from "./usernames.js";
