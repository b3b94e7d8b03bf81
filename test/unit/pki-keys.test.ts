/**
 * Sealing CA keys at rest, the master key's accepted spellings, and the revocation reason
 * table. The attack the AAD defends against: someone with write access to the Control DB
 * copies the sealed key of one CA into another CA's row (or a leaf-key row) hoping the CP
 * will load it for the wrong purpose.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type ErrorCode, isAuthNexusError } from "../../src/shared/errors/index.js";
import {
  encodeMasterKey,
  generateMasterKey,
  isRevocationReason,
  openSecret,
  parseMasterKey,
  REVOCATION_REASONS,
  revocationReasonCode,
  revocationReasonFromCode,
  sealSecret,
} from "../../src/shared/pki/index.js";

function codeIs(code: ErrorCode, message?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(isAuthNexusError(error, code), `expected AuthNexusError ${code}, got ${String(error)}`);
    if (message) assert.match(error.message, message);
    return true;
  };
}

const AAD = "ca-key:tcp_server_ca";
const PLAINTEXT = Buffer.from("-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n");

describe("sealSecret / openSecret", () => {
  const key = generateMasterKey();

  test("round-trips and uses the documented layout", () => {
    const sealed = sealSecret(key, PLAINTEXT, AAD);
    assert.equal(sealed[0], 0x01);
    assert.equal(sealed.length, 1 + 12 + 16 + PLAINTEXT.length);
    assert.equal(sealed.includes(Buffer.from("secret")), false, "ciphertext does not leak the plaintext");
    assert.deepEqual(openSecret(key, sealed, AAD), PLAINTEXT);
    assert.deepEqual(openSecret(key, sealSecret(key, Buffer.alloc(0), AAD), AAD), Buffer.alloc(0));
  });

  test("uses a fresh nonce every time", () => {
    const a = sealSecret(key, PLAINTEXT, AAD);
    const b = sealSecret(key, PLAINTEXT, AAD);
    assert.notDeepEqual(a.subarray(1, 13), b.subarray(1, 13));
    assert.notDeepEqual(a, b);
  });

  test("refuses a wrong master key", () => {
    const sealed = sealSecret(key, PLAINTEXT, AAD);
    assert.throws(() => openSecret(generateMasterKey(), sealed, AAD), codeIs("PKI_DECRYPT_FAILED"));
    assert.throws(() => openSecret(Buffer.alloc(16), sealed, AAD), codeIs("PKI_DECRYPT_FAILED"));
  });

  test("refuses a blob moved to another purpose (wrong AAD)", () => {
    const sealed = sealSecret(key, PLAINTEXT, AAD);
    assert.throws(() => openSecret(key, sealed, "ca-key:app_client_ca"), codeIs("PKI_DECRYPT_FAILED"));
    assert.throws(() => openSecret(key, sealed, ""), codeIs("PKI_DECRYPT_FAILED"));
  });

  test("refuses any single flipped byte, in header, nonce, tag or ciphertext", () => {
    const sealed = sealSecret(key, PLAINTEXT, AAD);
    for (const index of [0, 1, 12, 13, 28, 29, sealed.length - 1]) {
      const tampered = Buffer.from(sealed);
      tampered[index] = (tampered[index] ?? 0) ^ 0x01;
      assert.throws(() => openSecret(key, tampered, AAD), codeIs("PKI_DECRYPT_FAILED"), `byte ${index}`);
    }
  });

  test("refuses truncated input and an unknown version", () => {
    const sealed = sealSecret(key, PLAINTEXT, AAD);
    for (const length of [0, 1, 28, sealed.length - 1]) {
      assert.throws(() => openSecret(key, sealed.subarray(0, length), AAD), codeIs("PKI_DECRYPT_FAILED"), `length ${length}`);
    }
    const v2 = Buffer.from(sealed);
    v2[0] = 0x02;
    assert.throws(() => openSecret(key, v2, AAD), codeIs("PKI_DECRYPT_FAILED"));
  });

  test("PKI_DECRYPT_FAILED is not exposed to clients", () => {
    try {
      openSecret(key, Buffer.alloc(40), AAD);
      assert.fail("should throw");
    } catch (error) {
      assert.ok(isAuthNexusError(error, "PKI_DECRYPT_FAILED"));
      assert.equal(error.expose, false);
    }
  });

  test("sealing with a key of the wrong length is a configuration error", () => {
    assert.throws(() => sealSecret(Buffer.alloc(31), PLAINTEXT, AAD), codeIs("CONFIG_INVALID"));
  });
});

describe("master key text", () => {
  const key = Buffer.from("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "hex");

  test("accepts 64 hex characters in either case, trimmed", () => {
    assert.deepEqual(parseMasterKey(key.toString("hex")), key);
    assert.deepEqual(parseMasterKey(`  ${key.toString("hex").toUpperCase()}\n`), key);
  });

  test("accepts base64 and base64url, padded or not", () => {
    const special = Buffer.alloc(32, 0xfb); // encodes with "+" / "-" and "/" / "_"
    for (const value of [key, special]) {
      const b64 = value.toString("base64");
      assert.deepEqual(parseMasterKey(b64), value);
      assert.deepEqual(parseMasterKey(b64.replace(/=+$/, "")), value);
      assert.deepEqual(parseMasterKey(value.toString("base64url")), value);
      assert.deepEqual(parseMasterKey(`${value.toString("base64url")}=\n`), value);
    }
  });

  test("encodeMasterKey / generateMasterKey round-trip", () => {
    const generated = generateMasterKey();
    assert.equal(generated.length, 32);
    assert.notDeepEqual(generated, generateMasterKey());
    assert.match(encodeMasterKey(generated), /^[0-9a-f]{64}$/);
    assert.deepEqual(parseMasterKey(encodeMasterKey(generated)), generated);
  });

  test("the spare-bit case really decodes to the same bytes", () => {
    assert.ok(key.toString("base64url").endsWith("8"));
    assert.deepEqual(Buffer.from(`${key.toString("base64url").slice(0, 42)}9`, "base64url"), key);
  });

  test("rejects 31 and 33 bytes, junk and non-canonical base64", () => {
    const bad = [
      "",
      "   ",
      Buffer.alloc(31, 1).toString("hex"),
      Buffer.alloc(33, 1).toString("hex"),
      Buffer.alloc(31, 1).toString("base64"),
      Buffer.alloc(33, 1).toString("base64"),
      `${key.toString("hex").slice(0, 63)}g`,
      "not a key at all",
      // Last character "8" -> "9" only sets a spare bit: it decodes to the same key, but a
      // second spelling of a key is refused.
      `${key.toString("base64url").slice(0, 42)}9`,
      // Mixed alphabets.
      `${Buffer.alloc(32, 0xfb).toString("base64").slice(0, 20)}_${Buffer.alloc(32, 0xfb).toString("base64").slice(21)}`,
    ];
    for (const text of bad) {
      assert.throws(() => parseMasterKey(text), codeIs("CONFIG_INVALID", /32 bytes as 64 hex characters or base64/), JSON.stringify(text));
    }
  });
});

describe("revocation reasons", () => {
  test("match RFC 5280 CRLReason codes", () => {
    const expected = {
      unspecified: 0,
      keyCompromise: 1,
      cACompromise: 2,
      affiliationChanged: 3,
      superseded: 4,
      cessationOfOperation: 5,
      certificateHold: 6,
      removeFromCRL: 8,
      privilegeWithdrawn: 9,
      aACompromise: 10,
    };
    assert.deepEqual(Object.fromEntries(REVOCATION_REASONS.map((r) => [r, revocationReasonCode(r)])), expected);
    for (const [name, code] of Object.entries(expected)) assert.equal(revocationReasonFromCode(code), name);
  });

  test("reject unknown names and unassigned codes", () => {
    assert.equal(isRevocationReason("keyCompromise"), true);
    assert.equal(isRevocationReason("KeyCompromise"), false);
    assert.equal(isRevocationReason("toString"), false);
    assert.equal(isRevocationReason(1), false);
    assert.equal(revocationReasonFromCode(7), null);
    assert.equal(revocationReasonFromCode(11), null);
    assert.equal(revocationReasonFromCode(-1), null);
  });
});
