/**
 * The four CA profiles and the four leaf profiles issued under them (docs/architecture.md, "PKI").
 * A profile fixes everything about a certificate that callers must not choose per call:
 * which CA signs it, its EKU, whether it demands a stapled OCSP response, and which
 * identity URI it must carry.
 */

export const CA_PROFILES = ["cp_server_ca", "cp_node_client_ca", "tcp_server_ca", "app_client_ca"] as const;
export type CaProfile = (typeof CA_PROFILES)[number];

export type LeafProfile = "cp_server" | "node_client" | "node_server" | "app_client";
export type ExtendedKeyUsageName = "serverAuth" | "clientAuth";
/** Which AuthNexus identity URI a profile must carry exactly once, or null for none. */
export type IdentityUriKind = "app" | "node";

export interface LeafProfileSpec {
  readonly ca: CaProfile;
  readonly extendedKeyUsage: ExtendedKeyUsageName;
  /** Adds the TLS Feature status_request extension (RFC 7633). */
  readonly mustStaple: boolean;
  /** Exactly one URI SAN of this kind, and no other URI SAN, when non-null. */
  readonly requiresUriSan: IdentityUriKind | null;
}

export const LEAF_PROFILES = {
  // The CP's own HTTPS certificate on 9091.
  cp_server: { ca: "cp_server_ca", extendedKeyUsage: "serverAuth", mustStaple: false, requiresUriSan: null },
  // A node's client certificate for mTLS to the CP; the URI names the node.
  node_client: { ca: "cp_node_client_ca", extendedKeyUsage: "clientAuth", mustStaple: false, requiresUriSan: "node" },
  // A node's business server certificate shown to SDK clients; SDKs refuse it without a staple.
  node_server: { ca: "tcp_server_ca", extendedKeyUsage: "serverAuth", mustStaple: true, requiresUriSan: null },
  // An application's client certificate; the URI names the app.
  app_client: { ca: "app_client_ca", extendedKeyUsage: "clientAuth", mustStaple: false, requiresUriSan: "app" },
} as const satisfies Record<LeafProfile, LeafProfileSpec>;

export const LEAF_PROFILE_NAMES = Object.keys(LEAF_PROFILES) as LeafProfile[];

export function isCaProfile(value: unknown): value is CaProfile {
  return typeof value === "string" && (CA_PROFILES as readonly string[]).includes(value);
}

export function isLeafProfile(value: unknown): value is LeafProfile {
  return typeof value === "string" && Object.hasOwn(LEAF_PROFILES, value);
}

/** Ids that may appear in an identity URI: short, URL-safe, no escaping needed. */
const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const APP_URI_PREFIX = "urn:authnexus:app:";
const NODE_URI_PREFIX = "urn:authnexus:node:";

export function isValidIdentityId(id: string): boolean {
  return ID_PATTERN.test(id);
}

export function appUri(appId: string): string {
  return buildUri(APP_URI_PREFIX, appId, "app");
}

export function nodeUri(nodeId: string): string {
  return buildUri(NODE_URI_PREFIX, nodeId, "node");
}

export function parseAppUri(uri: string): string | null {
  return parseUri(APP_URI_PREFIX, uri);
}

export function parseNodeUri(uri: string): string | null {
  return parseUri(NODE_URI_PREFIX, uri);
}

/** The id carried by an identity URI of the given kind, or null if the URI is not one. */
export function parseIdentityUri(kind: IdentityUriKind, uri: string): string | null {
  return kind === "app" ? parseAppUri(uri) : parseNodeUri(uri);
}

// Throwing a plain TypeError: a bad id here is a programming error in the caller, not a
// property of a certificate; issueLeafCertificate re-checks the URI it is given.
function buildUri(prefix: string, id: string, kind: IdentityUriKind): string {
  if (!ID_PATTERN.test(id)) throw new TypeError(`invalid ${kind} id for identity URI`);
  return prefix + id;
}

// Exact, case-sensitive match: the URI is compared as a string everywhere it is used
// (certificate vs. handshake app id), so accepting variants here would open a mismatch.
function parseUri(prefix: string, uri: string): string | null {
  if (!uri.startsWith(prefix)) return null;
  const id = uri.slice(prefix.length);
  return ID_PATTERN.test(id) ? id : null;
}
