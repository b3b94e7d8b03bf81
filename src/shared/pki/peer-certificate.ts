/**
 * What the roles read from a TLS peer's certificate as OpenSSL already parsed it (Node's
 * `getPeerCertificate()`): its SAN string and serial cost nothing, where a full ASN.1 parse was
 * milliseconds per connection. Used by the CP's node API and the node's business edge alike.
 */
import type { PeerCertificate } from "node:tls";

/** The clientAuth extended key usage, as OpenSSL reports it in `ext_key_usage`. */
export const CLIENT_AUTH_OID = "1.3.6.1.5.5.7.3.2";

/**
 * URI entries of Node's `subjectaltname` string ("DNS:a, URI:b"). Node prints an entry holding
 * a comma or quote as a quoted JSON string; such a value can never match an identity URI (ids
 * are [A-Za-z0-9_-]), so a crafted SAN fails closed rather than splitting into a forged entry.
 */
export function uriSans(subjectAltName: string): string[] {
  return subjectAltName
    .split(", ")
    .filter((entry) => entry.startsWith("URI:"))
    .map((entry) => entry.slice(4));
}

/** The inventory's form of a serial: lowercase hex, no leading zero octets (OpenSSL prints whole octets). */
export function canonicalPeerSerial(serialNumber: string): string {
  return serialNumber.toLowerCase().replace(/^(00)+(?=.)/, "");
}

/** True when the certificate lists clientAuth among its extended key usages. */
export function hasClientAuth(certificate: Pick<PeerCertificate, "ext_key_usage">): boolean {
  return certificate.ext_key_usage?.includes(CLIENT_AUTH_OID) ?? false;
}
