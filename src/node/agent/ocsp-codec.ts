/**
 * The OCSP client codec for the stapling manager (RFC 6960), pure and I/O-free: build the
 * request for one certificate (SHA-256 CertID and a nonce), then parse and VERIFY the answer:
 * status successful, a basic response signed by the issuer (or a responder it delegated to),
 * a SingleResponse whose CertID is ours, our nonce echoed when a nonce comes back, and a
 * thisUpdate/nextUpdate window around `now`. Anything else is an OcspVerifyError, so a forged
 * or stale response is never stapled.
 */
import "reflect-metadata";
import { createHash, randomBytes, webcrypto } from "node:crypto";
import { CertID, id_pkix_ocsp_basic, id_pkix_ocsp_nonce, OCSPRequest, Request, TBSRequest } from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier, Certificate as AsnCertificate, Extension } from "@peculiar/asn1-x509";
// Types only: asn1js comes with pkijs and is not a direct dependency.
import type * as asn1js from "asn1js";
import * as pkijs from "pkijs";

type EngineCrypto = ConstructorParameters<typeof pkijs.CryptoEngine>[0]["crypto"];
pkijs.setEngine("node", new pkijs.CryptoEngine({ name: "node", crypto: webcrypto as unknown as EngineCrypto }));

const OID_SHA256 = "2.16.840.1.101.3.4.2.1";
const NONCE_BYTES = 16;

export type OcspCertStatus = "good" | "revoked" | "unknown";

export class OcspVerifyError extends Error {
  override readonly name = "OcspVerifyError";
}

/** The CertID fields of one certificate, as the request carries them and the response must echo. */
export interface OcspCertId {
  issuerNameHash: Buffer;
  issuerKeyHash: Buffer;
  /** Canonical serial (big-endian magnitude, no leading zero octets). */
  serial: Buffer;
}

export interface OcspRequestBuild {
  der: Buffer;
  certId: OcspCertId;
  /** The nonce extension value sent (DER OCTET STRING of the random bytes). */
  nonce: Buffer;
}

export interface VerifiedOcspResponse {
  status: OcspCertStatus;
  /** Epoch ms. */
  producedAt: number;
  thisUpdate: number;
  nextUpdate: number;
  revokedAt: number | null;
}

export function certIdFor(certDer: Buffer, issuerDer: Buffer): OcspCertId {
  const cert = AsnConvert.parse(certDer, AsnCertificate);
  const issuer = AsnConvert.parse(issuerDer, AsnCertificate);
  const sha256 = (data: ArrayBuffer | Uint8Array) => createHash("sha256").update(new Uint8Array(data)).digest();
  return {
    issuerNameHash: sha256(AsnConvert.serialize(issuer.tbsCertificate.subject)),
    issuerKeyHash: sha256(issuer.tbsCertificate.subjectPublicKeyInfo.subjectPublicKey),
    serial: canonicalSerial(new Uint8Array(cert.tbsCertificate.serialNumber)),
  };
}

export function buildOcspRequest(certDer: Buffer, issuerDer: Buffer, random: (size: number) => Buffer = randomBytes): OcspRequestBuild {
  const certId = certIdFor(certDer, issuerDer);
  // RFC 8954: the nonce extension's value is an OCTET STRING holding 1..32 random octets.
  const nonce = Buffer.concat([Buffer.from([0x04, NONCE_BYTES]), random(NONCE_BYTES)]);
  const reqCert = new CertID({
    hashAlgorithm: new AlgorithmIdentifier({ algorithm: OID_SHA256, parameters: null }),
    issuerNameHash: new OctetString(certId.issuerNameHash),
    issuerKeyHash: new OctetString(certId.issuerKeyHash),
    serialNumber: positiveInteger(certId.serial),
  });
  const tbsRequest = new TBSRequest({
    requestList: [new Request({ reqCert })],
    requestExtensions: [new Extension({ extnID: id_pkix_ocsp_nonce, extnValue: new OctetString(nonce) })],
  });
  return { der: Buffer.from(AsnConvert.serialize(new OCSPRequest({ tbsRequest }))), certId, nonce };
}

export interface VerifyOcspOptions {
  issuerDer: Buffer;
  certId: OcspCertId;
  nonce: Buffer | null;
  now: number;
  /** How far thisUpdate may lie in the future (the responder's clock may run ahead). */
  clockSkewMs: number;
}

export async function verifyOcspResponse(der: Buffer, options: VerifyOcspOptions): Promise<VerifiedOcspResponse> {
  const basic = decodeBasicResponse(der);
  await verifySignature(basic, options.issuerDer);
  const single = findSingleResponse(basic, options.certId);
  checkNonce(basic, options.nonce);
  const thisUpdate = single.thisUpdate.getTime();
  const nextUpdate = single.nextUpdate?.getTime();
  if (nextUpdate === undefined) throw new OcspVerifyError("response has no nextUpdate");
  if (thisUpdate > options.now + options.clockSkewMs)
    throw new OcspVerifyError(`thisUpdate ${new Date(thisUpdate).toISOString()} is in the future`);
  if (nextUpdate <= options.now) throw new OcspVerifyError(`response expired at ${new Date(nextUpdate).toISOString()}`);
  if (nextUpdate <= thisUpdate) throw new OcspVerifyError("nextUpdate is not after thisUpdate");
  const { status, revokedAt } = readStatus(single);
  return { status, producedAt: basic.tbsResponseData.producedAt.getTime(), thisUpdate, nextUpdate, revokedAt };
}

function decodeBasicResponse(der: Buffer): pkijs.BasicOCSPResponse {
  let response: pkijs.OCSPResponse;
  try {
    response = pkijs.OCSPResponse.fromBER(new Uint8Array(der));
  } catch (cause) {
    throw new OcspVerifyError(`not a DER OCSPResponse: ${(cause as Error).message}`);
  }
  const status = response.responseStatus.valueBlock.valueDec;
  if (status !== 0) throw new OcspVerifyError(`responder answered status ${status} (${RESPONSE_STATUS[status] ?? "unknown"})`);
  if (!response.responseBytes || response.responseBytes.responseType !== id_pkix_ocsp_basic)
    throw new OcspVerifyError("response is not a basic OCSP response");
  try {
    return pkijs.BasicOCSPResponse.fromBER(response.responseBytes.response.valueBlock.valueHexView);
  } catch (cause) {
    throw new OcspVerifyError(`malformed BasicOCSPResponse: ${(cause as Error).message}`);
  }
}

const RESPONSE_STATUS: Record<number, string> = {
  1: "malformedRequest",
  2: "internalError",
  3: "tryLater",
  5: "sigRequired",
  6: "unauthorized",
};

/**
 * The signer must be the issuer itself (the CP signs with the CA key) or a responder the issuer
 * delegated to. pkijs only looks for the signer among the response's certificates, so the
 * issuer is added to them (TECH-NOTES); pinning it as a trusted responder means "this key, from
 * the deploy package, may sign OCSP for this CA", with no wall-clock chain check.
 */
async function verifySignature(basic: pkijs.BasicOCSPResponse, issuerDer: Buffer): Promise<void> {
  const issuer = pkijs.Certificate.fromBER(new Uint8Array(issuerDer));
  basic.certs = [...(basic.certs ?? []), issuer];
  let ok: boolean;
  try {
    ok = await basic.verify({ trustedCerts: [issuer], issuerCerts: [issuer], trustedResponders: [issuer] });
  } catch (cause) {
    throw new OcspVerifyError(`signature not verified: ${(cause as Error).message}`);
  }
  if (!ok) throw new OcspVerifyError("signature does not verify against the issuer");
}

function findSingleResponse(basic: pkijs.BasicOCSPResponse, certId: OcspCertId): pkijs.SingleResponse {
  for (const single of basic.tbsResponseData.responses) {
    const id = single.certID;
    if (id.hashAlgorithm.algorithmId !== OID_SHA256) continue;
    if (!Buffer.from(id.issuerNameHash.valueBlock.valueHexView).equals(certId.issuerNameHash)) continue;
    if (!Buffer.from(id.issuerKeyHash.valueBlock.valueHexView).equals(certId.issuerKeyHash)) continue;
    if (!canonicalSerial(id.serialNumber.valueBlock.valueHexView).equals(certId.serial)) continue;
    return single;
  }
  throw new OcspVerifyError("no SingleResponse for this certificate (CertID mismatch)");
}

/** A responder may omit the nonce (RFC 8954 §3); one that returns a different nonce is a replay. */
function checkNonce(basic: pkijs.BasicOCSPResponse, nonce: Buffer | null): void {
  const extension = basic.tbsResponseData.responseExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
  if (!extension || nonce === null) return;
  if (!Buffer.from(extension.extnValue.valueBlock.valueHexView).equals(nonce))
    throw new OcspVerifyError("nonce does not match the request");
}

/** certStatus CHOICE: [0] good, [1] revoked (revocationTime first), [2] unknown. */
function readStatus(single: pkijs.SingleResponse): { status: OcspCertStatus; revokedAt: number | null } {
  const block = single.certStatus as asn1js.BaseBlock;
  const tag = block.idBlock.tagNumber;
  if (block.idBlock.tagClass !== 3 || tag > 2) throw new OcspVerifyError("malformed certStatus");
  if (tag === 0) return { status: "good", revokedAt: null };
  if (tag === 2) return { status: "unknown", revokedAt: null };
  const first = (block as asn1js.Constructed).valueBlock?.value?.[0] as Partial<asn1js.GeneralizedTime> | undefined;
  const revokedAt = typeof first?.toDate === "function" ? first.toDate().getTime() : null;
  return { status: "revoked", revokedAt };
}

function canonicalSerial(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  return Buffer.from(bytes.subarray(start));
}

/** DER INTEGER content for a positive magnitude: a leading 0x00 when the top bit is set. */
function positiveInteger(magnitude: Buffer): ArrayBuffer {
  const bytes = (magnitude[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), magnitude]) : magnitude;
  return new Uint8Array(bytes).buffer;
}
