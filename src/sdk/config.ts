/**
 * Loading the SDK configuration file that `authnexus pki issue-client` writes
 * (src/shared/sdk-config.ts): the nodes, the application and the trust material, read from the
 * files it names beside it. Every problem is one SDK_CONFIG_INVALID naming the file and what is
 * wrong with it, before any connection is tried.
 */

import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { AuthNexusError } from "../shared/errors/index.js";
import { splitPemBundle } from "../shared/pki/parse-certificate.js";
import { type SdkConfigFile, sdkConfigSchema } from "../shared/sdk-config.js";

export interface NodeAddress {
  host: string;
  port: number;
}

/** What a connection needs to trust a node and be trusted by it. */
export interface TrustPolicy {
  clientCertPem: string;
  clientKeyPem: string;
  /** CA certificates the node's server certificate must chain to. */
  serverCaPems: string[];
  /** DER of each CA allowed to sign the stapled OCSP response. */
  ocspSignerDers: Buffer[];
  /** Refuse a node that staples no response (default true). */
  mustStaple: boolean;
  /** Base64 SHA-256 of the server certificate's SubjectPublicKeyInfo; empty means no pinning. */
  spkiPins: string[];
}

export interface SdkConfig {
  appId: string;
  nodes: NodeAddress[];
  trust: TrustPolicy;
}

function invalid(message: string, cause?: unknown): AuthNexusError {
  return new AuthNexusError("SDK_CONFIG_INVALID", { message, cause });
}

/** Reads and checks `authnexus-sdk.json` and the certificate files it names. */
export async function loadSdkConfig(path: string): Promise<SdkConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw invalid(`cannot read the SDK config ${path}: ${(error as Error).message}`, error);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw invalid(`${path} is not JSON: ${(error as Error).message}`, error);
  }
  const parsed = sdkConfigSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`).join("; ");
    throw invalid(`${path} is not a valid SDK config: ${problems}`);
  }
  return resolveFiles(parsed.data, dirname(resolve(path)));
}

async function resolveFiles(file: SdkConfigFile, dir: string): Promise<SdkConfig> {
  const read = async (name: string) => {
    const full = resolve(dir, name);
    try {
      return await readFile(full, "utf8");
    } catch (error) {
      throw invalid(`cannot read ${full} (named by the SDK config): ${(error as Error).message}`, error);
    }
  };
  const [clientCertPem, clientKeyPem, serverCa, signerCa] = await Promise.all([
    read(file.files.client_cert),
    read(file.files.client_key),
    read(file.files.server_ca),
    read(file.files.ocsp_signer_ca),
  ]);
  const serverCaPems = certificates(serverCa, file.files.server_ca);
  const ocspSignerDers = certificates(signerCa, file.files.ocsp_signer_ca).map((pem) => new X509Certificate(pem).raw);
  return {
    appId: file.app_id,
    nodes: file.nodes.map((n) => ({ host: n.host, port: n.port })),
    trust: { clientCertPem, clientKeyPem, serverCaPems, ocspSignerDers, mustStaple: file.must_staple, spkiPins: file.spki_pins },
  };
}

/** The certificates of a PEM bundle, each parsed once so a broken file fails here, not mid-handshake. */
function certificates(bundle: string, name: string): string[] {
  const pems = splitPemBundle(bundle);
  if (pems.length === 0) throw invalid(`${name} holds no certificate`);
  for (const pem of pems) {
    try {
      new X509Certificate(pem);
    } catch (error) {
      throw invalid(`${name} holds a certificate that cannot be parsed: ${(error as Error).message}`, error);
    }
  }
  return pems;
}
