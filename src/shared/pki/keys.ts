/**
 * ECDSA P-256 key handling. One curve everywhere: ECDSA server certificates handshake
 * noticeably faster than RSA in Node, and a single algorithm keeps import paths simple.
 */
import "./crypto-provider.js";
import { createPrivateKey, createPublicKey, KeyObject, webcrypto } from "node:crypto";
import { AuthNexusError } from "../errors/index.js";

export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;

export const EC_KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" } as const;
export const SIGNING_ALGORITHM = { name: "ECDSA", hash: "SHA-256" } as const;

/** Extractable, because the private half is exported to PKCS#8 for node:tls and storage. */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(EC_KEY_ALGORITHM, true, ["sign", "verify"]);
}

export function privateKeyToPem(key: CryptoKey): string {
  return KeyObject.from(key).export({ type: "pkcs8", format: "pem" }).toString();
}

/**
 * Imports a PEM private key (PKCS#8 or SEC1 "EC PRIVATE KEY") for signing. Non-extractable:
 * a signing key loaded from storage never needs to leave WebCrypto again.
 */
export async function importSigningKey(keyPem: string): Promise<CryptoKey> {
  const key = readPrivateKey(keyPem);
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw invalid("issuer key must be an ECDSA P-256 key");
  }
  const pkcs8 = key.export({ type: "pkcs8", format: "der" });
  return webcrypto.subtle.importKey("pkcs8", pkcs8, EC_KEY_ALGORITHM, false, ["sign"]);
}

/** SubjectPublicKeyInfo DER of the public half of a PEM private key. */
export function spkiOfPrivateKey(keyPem: string): Buffer {
  return createPublicKey(readPrivateKey(keyPem)).export({ type: "spki", format: "der" });
}

export async function spkiOfPublicKey(key: CryptoKey): Promise<Buffer> {
  return Buffer.from(await webcrypto.subtle.exportKey("spki", key));
}

function readPrivateKey(keyPem: string): KeyObject {
  try {
    return createPrivateKey(keyPem);
  } catch (cause) {
    throw invalid("issuer key is not a readable private key", cause);
  }
}

function invalid(message: string, cause?: unknown): AuthNexusError {
  return new AuthNexusError("CERTIFICATE_INVALID", { message, cause });
}
