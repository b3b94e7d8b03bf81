/**
 * Reads a deploy package from disk (node_agent.json and the files it names, each relative to
 * the JSON's directory) and checks it before anything connects: the manifest against the
 * shared contract, every certificate parsed, the client certificate naming this node
 * (`urn:authnexus:node:<node_id>`), each key matching its certificate, the business
 * certificate issued by the package's tcp_server_ca. Every problem is reported at once, each
 * naming its file, as one CONFIG_INVALID error; key material never appears in a message.
 */
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { throwIfProblems } from "../../shared/config/options.js";
import { type AgentPackage, agentPackageSchema } from "../../shared/node-protocol/index.js";
import { type CertificateInfo, nodeUri, parseCertificate, splitPemBundle, verifyCertificateChain } from "../../shared/pki/index.js";
import type { Clock } from "../../shared/time/index.js";

export interface PackageCertificate {
  pem: string;
  info: CertificateInfo;
}

export interface LoadedAgentPackage {
  manifest: AgentPackage;
  /** Absolute path of node_agent.json and its directory. */
  file: string;
  directory: string;
  /** cp_server_ca bundle: the trust anchors for the CP's 9091 certificate. */
  cpCaPem: string;
  client: PackageCertificate & { keyPem: string };
  server: PackageCertificate & { keyPem: string };
  /** tcp_server_ca: issuer of the business certificate and signer of its OCSP responses. */
  serverIssuer: PackageCertificate & { der: Buffer };
  appClientCaPems: string[];
  passwordHashKey: Buffer;
  /** Non-fatal findings (loose file permissions on secrets), for the caller to log. */
  warnings: string[];
}

type FileKey = keyof AgentPackage["files"];
const SECRET_FILES: FileKey[] = ["client_key", "server_key", "password_hash_key"];
/** The password-hash key is an HMAC key: shorter than this is not a key the CP made. */
const MIN_PASSWORD_HASH_KEY_BYTES = 16;

export async function loadAgentPackage(agentFile: string, clock: Clock): Promise<LoadedAgentPackage> {
  const file = path.resolve(agentFile);
  const directory = path.dirname(file);
  const manifest = await readManifest(file);
  const problems: string[] = [];
  const warnings: string[] = [];
  const texts = await readFiles(manifest, directory, problems, warnings);
  const where = (key: FileKey) => `files.${key} (${path.join(directory, manifest.files[key])})`;
  const text = (key: FileKey) => texts.get(key);

  const cpCaPem = text("cp_ca");
  if (cpCaPem !== undefined) checkCaBundle(cpCaPem, where("cp_ca"), problems);
  const appCaPem = text("app_client_ca");
  const appClientCaPems = appCaPem !== undefined ? checkCaBundle(appCaPem, where("app_client_ca"), problems) : [];
  const serverIssuer = loadSingleCertificate(text("server_issuer"), where("server_issuer"), problems);
  if (serverIssuer && !serverIssuer.info.isCa) problems.push(`${where("server_issuer")}: not a CA certificate (expected tcp_server_ca)`);

  const client = loadSingleCertificate(text("client_cert"), where("client_cert"), problems);
  if (client) checkClientCertificate(client.info, manifest.node_id, clock, where("client_cert"), problems);
  const clientKey = text("client_key");
  if (client && clientKey !== undefined) checkKeyMatches(clientKey, client.info, where("client_key"), "client_cert", problems);

  const server = loadSingleCertificate(text("server_cert"), where("server_cert"), problems);
  if (server && serverIssuer?.info.isCa) await checkServerCertificate(server.pem, serverIssuer.pem, clock, where("server_cert"), problems);
  const serverKey = text("server_key");
  if (server && serverKey !== undefined) checkKeyMatches(serverKey, server.info, where("server_key"), "server_cert", problems);

  const hashKeyText = text("password_hash_key");
  const passwordHashKey = hashKeyText !== undefined ? readHexKey(hashKeyText, where("password_hash_key"), problems) : Buffer.alloc(0);

  throwIfProblems(problems.map((p) => `${path.basename(file)}: ${p}`));
  // Every value below was checked above; the casts only restate what throwIfProblems proved.
  return {
    manifest,
    file,
    directory,
    cpCaPem: cpCaPem as string,
    client: { ...(client as PackageCertificate), keyPem: clientKey as string },
    server: { ...(server as PackageCertificate), keyPem: serverKey as string },
    serverIssuer: { ...(serverIssuer as PackageCertificate), der: pemToDer(serverIssuer?.pem ?? "") },
    appClientCaPems,
    passwordHashKey,
    warnings,
  };
}

/** A set of node credentials a rotation delivers, as PEM text. */
export interface CredentialSet {
  serverCertPem: string;
  serverKeyPem: string;
  serverIssuerPem: string;
  clientCertPem: string;
  clientKeyPem: string;
  /** The CP trust bundle, when the delivery changes it. */
  cpCaPem?: string;
}

/**
 * The checks loadAgentPackage makes on its certificates, for credentials a rotation delivers:
 * the client certificate names this node and has clientAuth, each key matches its certificate,
 * the business certificate chains to the delivered issuer. Returns the problems (none: usable).
 */
export async function checkCredentialSet(set: CredentialSet, nodeId: string, clock: Clock): Promise<string[]> {
  const problems: string[] = [];
  if (set.cpCaPem !== undefined) checkCaBundle(set.cpCaPem, "CP trust bundle", problems);
  const issuer = loadSingleCertificate(set.serverIssuerPem, "server issuer", problems);
  if (issuer && !issuer.info.isCa) problems.push("server issuer: not a CA certificate");
  const client = loadSingleCertificate(set.clientCertPem, "client certificate", problems);
  if (client) {
    checkClientCertificate(client.info, nodeId, clock, "client certificate", problems);
    checkKeyMatches(set.clientKeyPem, client.info, "client key", "client_cert", problems);
  }
  const server = loadSingleCertificate(set.serverCertPem, "server certificate", problems);
  if (server) {
    if (issuer?.info.isCa) await checkServerCertificate(server.pem, issuer.pem, clock, "server certificate", problems);
    checkKeyMatches(set.serverKeyPem, server.info, "server key", "server_cert", problems);
  }
  return problems;
}

async function readManifest(file: string): Promise<AgentPackage> {
  let raw: string;
  try {
    raw = await fs.readFile(file, "utf8");
  } catch (error) {
    throwIfProblems([`cannot read the agent file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`]);
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (error) {
    throwIfProblems([`${file} is not valid JSON: ${(error as Error).message}`]);
  }
  const parsed = agentPackageSchema.safeParse(json);
  if (!parsed.success) {
    throwIfProblems(
      parsed.error.issues.map((issue) => `${file}: ${issue.path.length ? issue.path.join(".") : "(root)"}: ${issue.message}`),
    );
  }
  return parsed.data as AgentPackage;
}

async function readFiles(manifest: AgentPackage, directory: string, problems: string[], warnings: string[]): Promise<Map<FileKey, string>> {
  const texts = new Map<FileKey, string>();
  for (const key of Object.keys(manifest.files) as FileKey[]) {
    const absolute = path.resolve(directory, manifest.files[key]);
    try {
      texts.set(key, await fs.readFile(absolute, "utf8"));
      if (SECRET_FILES.includes(key)) {
        const mode = (await fs.stat(absolute)).mode & 0o777;
        if (process.platform !== "win32" && (mode & 0o077) !== 0) {
          warnings.push(`files.${key} (${absolute}) is readable by other users (mode ${mode.toString(8)}); chmod 600 it`);
        }
      }
    } catch (error) {
      problems.push(`files.${key}: cannot read ${absolute}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }
  return texts;
}

function checkCaBundle(pem: string, where: string, problems: string[]): string[] {
  let certs: string[];
  try {
    certs = splitPemBundle(pem);
  } catch (error) {
    problems.push(`${where}: ${(error as Error).message}`);
    return [];
  }
  if (certs.length === 0) problems.push(`${where}: no PEM certificate found`);
  for (const [index, cert] of certs.entries()) {
    try {
      if (!parseCertificate(cert).isCa) problems.push(`${where}: certificate #${index + 1} is not a CA certificate`);
    } catch (error) {
      problems.push(`${where}: certificate #${index + 1}: ${(error as Error).message}`);
    }
  }
  return certs;
}

/** The first certificate of a file (a leaf file may carry its chain after it). */
function loadSingleCertificate(text: string | undefined, where: string, problems: string[]): PackageCertificate | null {
  if (text === undefined) return null;
  try {
    const [first] = splitPemBundle(text);
    if (first === undefined) {
      problems.push(`${where}: no PEM certificate found`);
      return null;
    }
    return { pem: first, info: parseCertificate(first) };
  } catch (error) {
    problems.push(`${where}: ${(error as Error).message}`);
    return null;
  }
}

function checkClientCertificate(info: CertificateInfo, nodeId: string, clock: Clock, where: string, problems: string[]): void {
  const expected = nodeUri(nodeId);
  if (info.sans.uri.length !== 1 || info.sans.uri[0] !== expected) {
    problems.push(
      `${where}: URI SAN must be exactly ${expected} (node_id in node_agent.json), found ${info.sans.uri.length ? info.sans.uri.join(", ") : "none"}`,
    );
  }
  if (!info.extendedKeyUsages.includes("clientAuth")) problems.push(`${where}: certificate lacks the clientAuth extended key usage`);
  checkValidity(info, clock, where, problems);
}

async function checkServerCertificate(pem: string, issuerPem: string, clock: Clock, where: string, problems: string[]): Promise<void> {
  const result = await verifyCertificateChain({ leaf: pem, trustedCas: [issuerPem], clock, expectedProfile: "node_server" });
  if (!result.ok) problems.push(`${where}: ${result.reason}: ${result.message} (checked against files.server_issuer)`);
}

function checkValidity(info: CertificateInfo, clock: Clock, where: string, problems: string[]): void {
  const now = clock.now();
  if (info.notAfter <= now) problems.push(`${where}: certificate expired at ${new Date(info.notAfter).toISOString()}`);
  if (info.notBefore > now) problems.push(`${where}: certificate is not valid before ${new Date(info.notBefore).toISOString()}`);
}

function checkKeyMatches(keyPem: string, cert: CertificateInfo, where: string, certKey: FileKey, problems: string[]): void {
  let spki: Buffer;
  try {
    spki = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
  } catch {
    // The parser's message could quote the file; say only what is wrong.
    problems.push(`${where}: not a readable PEM private key`);
    return;
  }
  if (createHash("sha256").update(spki).digest("hex") !== cert.publicKeySpkiSha256) {
    problems.push(`${where}: private key does not match files.${certKey}`);
  }
}

function readHexKey(text: string, where: string, problems: string[]): Buffer {
  const value = text.trim();
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(value)) {
    problems.push(`${where}: must be the key in hex`);
    return Buffer.alloc(0);
  }
  const key = Buffer.from(value, "hex");
  if (key.length < MIN_PASSWORD_HASH_KEY_BYTES)
    problems.push(`${where}: key is ${key.length} bytes, at least ${MIN_PASSWORD_HASH_KEY_BYTES} expected`);
  return key;
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, ""), "base64");
}
