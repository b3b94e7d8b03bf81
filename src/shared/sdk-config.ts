/**
 * The SDK configuration file a vendor ships with its program (`authnexus pki issue-client`
 * writes it beside the client certificate): which nodes to reach, the application, and the
 * trust material, named by paths relative to the file. The application secret is never in it:
 * the vendor supplies that separately.
 */
import { z } from "zod";

export const SDK_CONFIG_FORMAT = 1;
export const SDK_CONFIG_FILE_NAME = "authnexus-sdk.json";

/** The file names `pki issue-client` writes beside the config. */
export const SDK_CONFIG_FILES = {
  client_cert: "client.pem",
  client_key: "client.key",
  server_ca: "server_ca.pem",
  ocsp_signer_ca: "ocsp_signer_ca.pem",
} as const;

const relativePath = z
  .string()
  .min(1)
  .max(255)
  .refine((p) => !p.startsWith("/") && !p.split(/[\\/]/).includes(".."), "must be a path beside the config (relative, no ..)");

export const sdkConfigSchema = z.strictObject({
  format: z.literal(SDK_CONFIG_FORMAT),
  app_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  /** The nodes' business addresses; the SDK tries them in order. */
  nodes: z
    .array(z.strictObject({ host: z.string().min(1).max(253), port: z.number().int().min(1).max(65535) }))
    .min(1)
    .max(64),
  files: z.strictObject({
    client_cert: relativePath,
    client_key: relativePath,
    /** CA certificates the node's server certificate must chain to (tcp_server_ca; both during a rotation). */
    server_ca: relativePath,
    /** The CA that signs the stapled OCSP responses (the same tcp_server_ca). */
    ocsp_signer_ca: relativePath,
  }),
  /** Refuse a node that staples no valid OCSP response (default and recommended: true). */
  must_staple: z.boolean().default(true),
  /** Optional pins: base64 SHA-256 of the server certificate's SubjectPublicKeyInfo. */
  spki_pins: z
    .array(z.string().regex(/^[A-Za-z0-9+/]{43}=$/, "must be a base64 SHA-256"))
    .max(16)
    .default([]),
});
export type SdkConfigFile = z.output<typeof sdkConfigSchema>;
