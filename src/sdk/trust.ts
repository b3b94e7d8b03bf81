/**
 * The SDK's trust decisions about a node, pure so each one is tested on its own: the stapled
 * OCSP response (must-staple, status, signer, CertID, time window) and the optional SPKI pins.
 * The certificate chain and host name are checked by TLS itself before these run.
 *
 * A staple is accepted only when it is signed by the CA that issued the node's certificate (one
 * of the configured OCSP signer CAs), answers for exactly that certificate, says "good", and its
 * window holds now: thisUpdate at most SDK_STAPLE_MAX_AGE_MS old and nextUpdate not passed, both
 * give or take SDK_STAPLE_CLOCK_SKEW_MS. Without must-staple a missing staple is tolerated, but
 * a staple that is present is still checked: a node that staples "revoked" is refused either way.
 */
import { createHash } from "node:crypto";
import { SDK_STAPLE_CLOCK_SKEW_MS, SDK_STAPLE_MAX_AGE_MS } from "../shared/config/defaults.js";
import { AuthNexusError, isAuthNexusError } from "../shared/errors/index.js";
import { type CertIdHash, certIdOf, type VerifiedOcspResponse, verifyOcspResponse } from "../shared/pki/ocsp/index.js";

export interface StapleInput {
  /** The stapled OCSP response, or null when the node sent none. */
  staple: Buffer | null;
  /** DER of the node's server certificate, and of the CA TLS verified it against. */
  serverCertDer: Buffer;
  issuerDer: Buffer;
  /** DER of each CA allowed to sign staples. */
  ocspSignerDers: readonly Buffer[];
  mustStaple: boolean;
  now: number;
}

/** What was accepted: the verified response, or "unstapled" when must-staple is off and none came. */
export type StapleVerdict = { kind: "verified"; response: VerifiedOcspResponse } | { kind: "unstapled" };

function refused(reason: string, cause?: unknown): AuthNexusError {
  return new AuthNexusError("NODE_STAPLE_REFUSED", { message: `The node's OCSP staple is refused: ${reason}.`, detail: { reason }, cause });
}

export function checkStaple(input: StapleInput): StapleVerdict {
  if (input.staple === null || input.staple.length === 0) {
    if (input.mustStaple) throw refused("the node stapled no OCSP response (must-staple)");
    return { kind: "unstapled" };
  }
  if (!input.ocspSignerDers.some((der) => der.equals(input.issuerDer))) {
    throw refused("the node's certificate was issued by a CA that is not a configured OCSP signer");
  }
  const response = verifyForEitherHash(input);
  const { status } = response;
  if (status.kind === "revoked") throw refused("the node's certificate is revoked");
  if (status.kind !== "good") throw refused(`the node's certificate status is ${status.kind}`);
  return { kind: "verified", response };
}

/** Our nodes ask with SHA-256 CertIDs; SHA-1 is accepted too, as RFC 6960 responders commonly use it. */
function verifyForEitherHash(input: StapleInput): VerifiedOcspResponse {
  const attempt = (hash: CertIdHash) =>
    verifyOcspResponse(input.staple as Buffer, {
      issuerDer: input.issuerDer,
      certId: certIdOf(input.serverCertDer, input.issuerDer, hash),
      nonce: null,
      // Judged at now - skew: nextUpdate may have passed by up to skew, thisUpdate may be up to
      // max age + skew old, and (with twice the skew allowed ahead) up to skew in the future.
      now: input.now - SDK_STAPLE_CLOCK_SKEW_MS,
      clockSkewMs: 2 * SDK_STAPLE_CLOCK_SKEW_MS,
      maxAgeMs: SDK_STAPLE_MAX_AGE_MS,
    });
  try {
    return attempt("sha256");
  } catch (error) {
    if (!isCertIdMismatch(error)) throw refused(reasonOf(error), error);
  }
  try {
    return attempt("sha1");
  } catch (error) {
    throw refused(reasonOf(error), error);
  }
}

function isCertIdMismatch(error: unknown): boolean {
  return isAuthNexusError(error, "OCSP_RESPONSE_INVALID") && /CertID mismatch/.test(String(error.detail?.reason));
}

function reasonOf(error: unknown): string {
  if (isAuthNexusError(error, "OCSP_RESPONSE_INVALID")) return String(error.detail?.reason ?? error.message);
  return (error as Error).message;
}

/** The pin of a SubjectPublicKeyInfo: base64 of its SHA-256, the form HPKP and curl use. */
export function spkiPin(spkiDer: Buffer): string {
  return createHash("sha256").update(spkiDer).digest("base64");
}

/**
 * With pins configured, a key of the node's verified chain must match one of them, as HPKP
 * defined it: the node's own key (`chainSpkiDers[0]`) or that of the configured CA that signed
 * it (transport.ts finds it among the configured CAs). Pinning the tcp_server_ca key survives
 * node certificate rotations; pinning a node key does not.
 */
export function checkPins(chainSpkiDers: readonly Buffer[], pins: readonly string[]): void {
  if (pins.length === 0) return;
  const chainPins = chainSpkiDers.map(spkiPin);
  if (!chainPins.some((pin) => pins.includes(pin))) {
    const [pin] = chainPins;
    throw new AuthNexusError("NODE_CERT_REFUSED", {
      message: `No key of the node's certificate chain matches the configured SPKI pins (the node's key is ${pin}).`,
      detail: { pin, chain_pins: chainPins },
    });
  }
}
