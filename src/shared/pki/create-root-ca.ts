/** Self-signed root CAs: one per CA profile, created at first-run setup. */
import "./crypto-provider.js";
import { CA_VALIDITY_DAYS } from "../config/defaults.js";
import { AuthNexusError } from "../errors/index.js";
import type { Clock } from "../time/index.js";
import { x509 } from "./crypto-provider.js";
import {
  assertCommonName,
  assertValidityDays,
  type IssuedCertificate,
  randomSerialHex,
  toIssuedCertificate,
  validityWindow,
} from "./issued-certificate.js";
import { generateKeyPair, privateKeyToPem, SIGNING_ALGORITHM } from "./keys.js";
import { type CaProfile, isCaProfile } from "./profiles.js";

export interface CreateRootCaOptions {
  profile: CaProfile;
  commonName: string;
  /** Subject O; defaults to DEFAULT_CA_ORGANISATION. */
  organisation?: string;
  /** Defaults to CA_VALIDITY_DAYS. */
  validityDays?: number;
  clock: Clock;
}

export const DEFAULT_CA_ORGANISATION = "AuthNexus";

// Only digitalSignature beyond the CA bits: the CA signs OCSP responses itself (SDKs verify
// staples against tcp_server_ca directly), which needs it; nothing else is allowed.
const CA_KEY_USAGES = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature;

export async function createRootCa(options: CreateRootCaOptions): Promise<IssuedCertificate> {
  const validityDays = options.validityDays ?? CA_VALIDITY_DAYS;
  if (!isCaProfile(options.profile)) {
    throw new AuthNexusError("CERTIFICATE_INVALID", { message: "unknown CA profile" });
  }
  assertCommonName(options.commonName);
  assertValidityDays(validityDays);
  const keys = await generateKeyPair();
  const window = validityWindow(options.clock.now(), validityDays);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: caSubject(options),
    notBefore: new Date(window.notBefore),
    notAfter: new Date(window.notAfter),
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      // pathLen 0: roots sign leaves directly; an intermediate would bypass profile checks.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(CA_KEY_USAGES, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return toIssuedCertificate(cert, privateKeyToPem(keys.privateKey));
}

/**
 * The OU names the profile, so the four roots are told apart by subject even with equal CNs,
 * and issueLeafCertificate can refuse to sign a leaf under the wrong CA.
 */
function caSubject(options: CreateRootCaOptions): x509.JsonName {
  return [{ O: [options.organisation ?? DEFAULT_CA_ORGANISATION] }, { OU: [options.profile] }, { CN: [options.commonName] }];
}
