/**
 * A minimal DER reader and writer for OCSP: the CP's responder decodes requests and encodes
 * responses with it, and the node's stapler and the SDK build requests and verify responses
 * with it (a schema-driven ASN.1 library spent two thirds of the responder's CPU on these
 * small, fixed structures). It works on exact bytes where OCSP must: the issuer's subject Name,
 * its public key BIT STRING, the CertIDs echoed verbatim, the signed tbsResponseData.
 * Only low tag numbers (< 31) and definite lengths are supported: that covers everything in
 * X.509 certificates and OCSP messages.
 */

export interface Tlv {
  /** The identifier octet (class, constructed bit and tag number). */
  readonly tag: number;
  /** Offset of the identifier octet. */
  readonly start: number;
  /** Offset of the first content octet. */
  readonly contentStart: number;
  /** Offset just past the last content octet. */
  readonly end: number;
}

/**
 * Internal to the OCSP code: a structure that is not the DER it should be. It never leaves
 * src/shared/pki/ocsp and src/cp/ocsp: every caller turns it into its own answer (an OCSP
 * malformedRequest, an OCSP_RESPONSE_INVALID error, a TypeError for a bad certificate).
 */
export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DerError";
  }
}

/** Reads one TLV starting at `offset`; it must end at or before `limit`. */
export function readTlv(buf: Uint8Array, offset: number, limit: number = buf.length): Tlv {
  if (offset + 2 > limit) throw new DerError("truncated TLV header");
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new DerError("high tag numbers are not supported");
  let pos = offset + 1;
  const first = buf[pos++] as number;
  let length: number;
  if (first < 0x80) {
    length = first;
  } else {
    const count = first & 0x7f;
    if (count === 0) throw new DerError("indefinite length is not allowed in DER");
    if (count > 4) throw new DerError("length too large");
    if (pos + count > limit) throw new DerError("truncated length");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (buf[pos++] as number);
  }
  const end = pos + length;
  if (end > limit) throw new DerError("TLV runs past its container");
  return { tag, start: offset, contentStart: pos, end };
}

/** The children of a constructed TLV, in order; the children must fill it exactly. */
export function readChildren(buf: Uint8Array, parent: Tlv): Tlv[] {
  const children: Tlv[] = [];
  let pos = parent.contentStart;
  while (pos < parent.end) {
    const child = readTlv(buf, pos, parent.end);
    children.push(child);
    pos = child.end;
  }
  return children;
}

/** The full encoding (tag, length and content) of a TLV, as a view into `buf`. */
export function tlvBytes(buf: Uint8Array, tlv: Tlv): Buffer {
  return Buffer.from(buf.buffer, buf.byteOffset + tlv.start, tlv.end - tlv.start);
}

/** The content octets of a TLV, as a view into `buf`. */
export function tlvContent(buf: Uint8Array, tlv: Tlv): Buffer {
  return Buffer.from(buf.buffer, buf.byteOffset + tlv.contentStart, tlv.end - tlv.contentStart);
}

function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  let rest = length;
  while (rest > 0) {
    bytes.unshift(rest & 0xff);
    rest = Math.floor(rest / 256);
  }
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Encodes one TLV whose content is the concatenation of `parts`. */
export function encodeTlv(tag: number, ...parts: Uint8Array[]): Buffer {
  let length = 0;
  for (const part of parts) length += part.length;
  return Buffer.concat([Buffer.from([tag]), encodeLength(length), ...parts]);
}

/** The children of `parent`, which must be a constructed TLV with tag `expectedTag`. */
export function readChildrenOf(buf: Uint8Array, parent: Tlv, expectedTag: number, what: string): Tlv[] {
  if (parent.tag !== expectedTag) throw new DerError(`${what}: unexpected tag 0x${parent.tag.toString(16)}`);
  return readChildren(buf, parent);
}

/** Dotted-decimal form of an OBJECT IDENTIFIER's content octets; throws on a malformed encoding. */
export function decodeOid(content: Uint8Array): string {
  if (content.length === 0) throw new DerError("empty OBJECT IDENTIFIER");
  const arcs: number[] = [];
  let value = 0;
  let fresh = true;
  for (const byte of content) {
    if (fresh && byte === 0x80) throw new DerError("OBJECT IDENTIFIER arc with a leading 0x80");
    if (value > 0x1fffffffffff) throw new DerError("OBJECT IDENTIFIER arc too large");
    value = value * 128 + (byte & 0x7f);
    fresh = (byte & 0x80) === 0;
    if (fresh) {
      arcs.push(value);
      value = 0;
    }
  }
  if (!fresh) throw new DerError("truncated OBJECT IDENTIFIER");
  const first = arcs[0] as number;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join(".");
}

/** GeneralizedTime "YYYYMMDDHHMMSSZ" (whole seconds, UTC) as RFC 5280 requires. */
export function encodeGeneralizedTime(ms: number): Buffer {
  const iso = new Date(Math.floor(ms / 1000) * 1000).toISOString(); // 2026-11-22T16:01:02.000Z
  const text = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  return encodeTlv(TAG.GENERALIZED_TIME, Buffer.from(text, "latin1"));
}

const GENERALIZED_TIME = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?Z$/;

/** GeneralizedTime content ("YYYYMMDDHHMMSS[.f]Z", UTC as RFC 5280 requires) as epoch ms. */
export function decodeGeneralizedTime(content: Uint8Array): number {
  const match = GENERALIZED_TIME.exec(Buffer.from(content).toString("latin1"));
  if (!match) throw new DerError("GeneralizedTime is not YYYYMMDDHHMMSS[.f]Z");
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const millis = Math.floor(Number(`0.${match[7] ?? "0"}`) * 1000);
  const ms = Date.UTC(year, month - 1, day, hour, minute, second, millis);
  // Date.UTC rolls 31 February over into March: a field out of range is refused, not normalised.
  const check = new Date(ms);
  if (
    check.getUTCMonth() !== month - 1 ||
    check.getUTCDate() !== day ||
    check.getUTCHours() !== hour ||
    check.getUTCMinutes() !== minute ||
    check.getUTCSeconds() !== second
  ) {
    throw new DerError("GeneralizedTime field out of range");
  }
  return ms;
}

/** A DER INTEGER holding the non-negative `magnitude` (a 0x00 octet first when its top bit is set). */
export function encodeUnsignedInteger(magnitude: Uint8Array): Buffer {
  const bytes = magnitude.length === 0 ? Buffer.from([0]) : Buffer.from(magnitude);
  return encodeTlv(TAG.INTEGER, ((bytes[0] as number) & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes);
}

/** The one TLV that must fill `buf` exactly. */
export function readWhole(buf: Uint8Array, expectedTag: number, what: string): Tlv {
  const tlv = readTlv(buf, 0);
  if (tlv.tag !== expectedTag) throw new DerError(`${what}: unexpected tag 0x${tlv.tag.toString(16)}`);
  if (tlv.end !== buf.length) throw new DerError(`${what}: trailing data`);
  return tlv;
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  CONTEXT_0: 0xa0,
  CONTEXT_1: 0xa1,
  CONTEXT_2: 0xa2,
  CONTEXT_3: 0xa3,
  /** [0] and [2] IMPLICIT NULL (CertStatus good / unknown). */
  IMPLICIT_PRIMITIVE_0: 0x80,
  IMPLICIT_PRIMITIVE_2: 0x82,
} as const;
