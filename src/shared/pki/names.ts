/** Validation and canonical forms for the names that go into SANs. */
import { isIP } from "node:net";

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_DNS_NAME_LENGTH = 253;
const MAX_URI_LENGTH = 2048;

/**
 * Lower-cased DNS name if valid, else null. Allows a single leading "*" label (wildcard) and
 * rejects trailing dots, empty labels, underscores and non-ASCII: TLS clients compare SANs as
 * LDH names, so anything else would be a certificate no client can match.
 */
export function canonicalDnsName(name: string): string | null {
  const lower = name.toLowerCase();
  if (lower.length === 0 || lower.length > MAX_DNS_NAME_LENGTH) return null;
  const labels = lower.split(".");
  const rest = labels[0] === "*" && labels.length > 2 ? labels.slice(1) : labels;
  return rest.every((label) => DNS_LABEL.test(label)) ? lower : null;
}

/**
 * Canonical text of an IPv4 or IPv6 address, else null. IPv6 is compressed the way WHATWG
 * URL does it (lower case, longest zero run as "::", mapped IPv4 as hex groups), so the same
 * address always reads the same way in issued and parsed certificates.
 */
export function canonicalIp(ip: string): string | null {
  const family = isIP(ip);
  // node:net already refuses leading zeros and out-of-range octets, so IPv4 is canonical.
  if (family === 4) return ip;
  if (family !== 6) return null;
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
}

/** An absolute URI with a scheme, the only kind a URI SAN may hold (RFC 5280 §4.2.1.6). */
export function isAbsoluteUri(uri: string): boolean {
  if (uri.length === 0 || uri.length > MAX_URI_LENGTH || hasNonPrintableAscii(uri)) return false;
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(uri)) return false;
  try {
    new URL(uri);
    return true;
  } catch {
    return false;
  }
}

// A URI SAN is an IA5String (ASCII), and URL() would silently strip or percent-encode spaces
// and controls: the SAN must be exactly what was asked for, so refuse rather than rewrite.
function hasNonPrintableAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code <= 0x20 || code >= 0x7f) return true;
  }
  return false;
}
