/**
 * The certificates the node serves and presents right now: the package's at start, then each
 * rotation's. The business listener and the CP client both read them here and hear of a change,
 * so a rotation swaps both without a restart.
 */
import { createHash } from "node:crypto";

export interface KeyedCertificate {
  certPem: string;
  keyPem: string;
}

export interface CurrentCredentials {
  server: KeyedCertificate;
  /** tcp_server_ca that issued `server` (signer of its OCSP responses). */
  serverIssuerPem: string;
  client: KeyedCertificate;
  /** The cp_server_ca bundle the CP's node API certificate must chain to. */
  cpCaPem: string;
}

export class NodeCredentials {
  private current: CurrentCredentials;
  private readonly listeners = new Set<(credentials: CurrentCredentials) => void>();

  constructor(initial: CurrentCredentials) {
    this.current = initial;
  }

  get(): CurrentCredentials {
    return this.current;
  }

  /** SHA-256 (hex) of the DER of the served server certificate and the presented client certificate. */
  fingerprints(): { server: string; client: string } {
    return { server: pemFingerprint(this.current.server.certPem), client: pemFingerprint(this.current.client.certPem) };
  }

  replace(next: CurrentCredentials): void {
    this.current = next;
    for (const listener of this.listeners) listener(next);
  }

  onChange(listener: (credentials: CurrentCredentials) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, ""), "base64");
}

export function pemFingerprint(pem: string): string {
  return createHash("sha256").update(pemToDer(pem)).digest("hex");
}
