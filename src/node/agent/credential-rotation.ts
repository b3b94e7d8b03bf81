/**
 * A rotation, node side. The config pull carries new credentials; they are put in force in an
 * order that never leaves the node without working ones:
 *
 *   1. checked like a deploy package's (names this node, keys match, chain to the issuer), and
 *      proven to open the CP: one call over a throwaway client with the new client certificate
 *      and the new CP trust bundle;
 *   2. the new server certificate's OCSP response fetched and verified — never served unstapled;
 *   3. persisted (./../package/persist-credentials.ts), so a restart from here uses them;
 *   4. swapped: new handshakes on the business port get the new certificate with its staple
 *      (live connections keep theirs), new CP connections present the new client certificate;
 *   5. acked over the new client certificate.
 *
 * A failure before 4 leaves everything as it was, logged with its reason; the CP keeps
 * delivering and the next pull tries again. Credentials already in force are only acked again
 * (an ack lost on the way, or a restart after step 3).
 */
import type { Logger } from "../../shared/log/index.js";
import type { NodeCredentialsDelivery } from "../../shared/node-protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import { type CredentialSet, checkCredentialSet } from "../package/load-agent-package.js";
import { persistRotatedCredentials } from "../package/persist-credentials.js";
import { type NodeCredentials, pemFingerprint, pemToDer } from "../state/node-credentials.js";
import { CpCallError } from "./cp-call-error.js";
import type { CpClient } from "./cp-client.js";
import type { OcspStapler } from "./ocsp-stapler.js";

export interface CredentialRotationOptions {
  nodeId: string;
  agentFile: string;
  credentials: NodeCredentials;
  client: Pick<CpClient, "ackCredentials" | "replaceClientCertificate">;
  /** A throwaway client with other credentials, to prove they open the CP before anything is committed to them. */
  probeClient: (tls: { caPem: string; certPem: string; keyPem: string }) => Pick<CpClient, "pullDelta" | "close">;
  /** The node's delta cursors (the probe reads one page after them). */
  cursors: () => { blacklist: number };
  stapler: Pick<OcspStapler, "fetchFor" | "switchCertificate" | "status">;
  clock: Clock;
  log: { agent: Logger; tls: Logger };
  onApplied?: (rotationId: string) => void;
}

export class CredentialRotation {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: CredentialRotationOptions) {}

  /** Puts a delivery in force and acks it; never throws (a failure is logged and retried on the next pull). */
  apply(delivery: NodeCredentialsDelivery): Promise<void> {
    const next = this.chain.then(() => this.applyOnce(delivery));
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async applyOnce(delivery: NodeCredentialsDelivery): Promise<void> {
    const { credentials, log } = this.options;
    const set = toCredentialSet(delivery);
    const wanted = { server: pemFingerprint(set.serverCertPem), client: pemFingerprint(set.clientCertPem) };
    const held = credentials.fingerprints();
    try {
      if (held.server !== wanted.server || held.client !== wanted.client) await this.putInForce(delivery.rotation_id, set);
      const ack = await this.options.client.ackCredentials(delivery.rotation_id, {
        server_cert_sha256: wanted.server,
        client_cert_sha256: wanted.client,
      });
      log.agent.info("credentials.acked", {
        rotation_id: delivery.rotation_id,
        previous_client_cert_retire_at: ack.previous_client_cert_retire_at,
      });
      this.options.onApplied?.(delivery.rotation_id);
    } catch (error) {
      log.agent.warn("credentials.apply_failed", {
        rotation_id: delivery.rotation_id,
        error: error instanceof Error ? error.message : String(error),
        action: "the node keeps its current certificates and tries again on the next config pull",
      });
    }
  }

  private async probe(tls: { caPem: string; certPem: string; keyPem: string }): Promise<void> {
    const client = this.options.probeClient(tls);
    try {
      await probeCall(client, this.options.cursors().blacklist);
    } finally {
      await client.close();
    }
  }

  private async putInForce(rotationId: string, set: CredentialSet): Promise<void> {
    const { nodeId, clock, log, stapler } = this.options;
    const problems = await checkCredentialSet(set, nodeId, clock);
    if (problems.length > 0) throw new Error(`delivered certificates refused: ${problems.join("; ")}`);
    const cpCaPem = set.cpCaPem ?? this.options.credentials.get().cpCaPem;
    await this.probe({ caPem: cpCaPem, certPem: set.clientCertPem, keyPem: set.clientKeyPem });
    const serverDer = pemToDer(set.serverCertPem);
    const issuerDer = pemToDer(set.serverIssuerPem);
    const response = await stapler.fetchFor(serverDer, issuerDer);
    // The new certificate must be stapled as good, unless the node is disabled (then both are revoked alike).
    const disabled = stapler.status().status === "revoked";
    if (response.status.kind !== "good" && !(disabled && response.status.kind === "revoked")) {
      throw new Error(`the OCSP responder says "${response.status.kind}" for the new server certificate`);
    }
    const removed = await persistRotatedCredentials(this.options.agentFile, rotationId, set);
    // Stapler first: the listener's next handshake serves the new certificate and asks for its staple.
    stapler.switchCertificate(serverDer, issuerDer, response);
    this.options.credentials.replace({
      server: { certPem: set.serverCertPem, keyPem: set.serverKeyPem },
      serverIssuerPem: set.serverIssuerPem,
      client: { certPem: set.clientCertPem, keyPem: set.clientKeyPem },
      cpCaPem,
    });
    this.options.client.replaceClientCertificate({ caPem: cpCaPem, certPem: set.clientCertPem, keyPem: set.clientKeyPem });
    log.tls.info("credentials.rotated", {
      rotation_id: rotationId,
      server_cert_sha256: pemFingerprint(set.serverCertPem),
      client_cert_sha256: pemFingerprint(set.clientCertPem),
      staple: response.status.kind,
      old_files_removed: removed.length,
    });
  }
}

/**
 * One call to the CP as the node will make them after the swap. A 410 (the cursor is older than
 * the retained log) still proves the TLS handshake and the CP's identity check passed.
 */
async function probeCall(client: Pick<CpClient, "pullDelta">, since: number): Promise<void> {
  try {
    await client.pullDelta("blacklist", since, 1);
  } catch (error) {
    if (error instanceof CpCallError && error.status === 410) return;
    throw new Error(`the new certificates do not open the CP: ${(error as Error).message}`);
  }
}

function toCredentialSet(delivery: NodeCredentialsDelivery): CredentialSet {
  return {
    serverCertPem: delivery.server_cert_pem,
    serverKeyPem: delivery.server_key_pem,
    serverIssuerPem: delivery.server_issuer_pem,
    clientCertPem: delivery.client_cert_pem,
    clientKeyPem: delivery.client_key_pem,
    ...(delivery.cp_ca_pem === undefined ? {} : { cpCaPem: delivery.cp_ca_pem }),
  };
}
