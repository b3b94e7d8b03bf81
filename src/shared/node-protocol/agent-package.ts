/**
 * The deploy package: a .tar.gz the CP builds for one node. `node_agent.json` sits at its root
 * and names every other file by a path relative to itself, so the operator can unpack it
 * anywhere and run `authnexus serve-node --agent <dir>/node_agent.json`.
 */
import { z } from "zod";

export const AGENT_PACKAGE_FORMAT = 1;
export const AGENT_FILE_NAME = "node_agent.json";

/** Where each file lives inside the package (relative to node_agent.json), by its manifest key. */
export const PACKAGE_FILES = {
  cp_ca: "tls/cp_server_ca.pem",
  client_cert: "tls/node_client.pem",
  client_key: "tls/node_client.key",
  server_cert: "tls/node_server.pem",
  server_key: "tls/node_server.key",
  server_issuer: "tls/tcp_server_ca.pem",
  app_client_ca: "tls/app_client_ca.pem",
  password_hash_key: "secrets/password_hash.key",
} as const;

const relativePath = z
  .string()
  .min(1)
  .max(255)
  .refine((p) => !p.startsWith("/") && !p.split(/[\\/]/).includes(".."), "must be a path inside the package (relative, no ..)");

export const agentPackageSchema = z.strictObject({
  format: z.literal(AGENT_PACKAGE_FORMAT),
  node_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  node_name: z.string().min(1).max(128),
  package_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  created_at: z.string(),
  /** Base URL of the node API (Channels 1–3), e.g. https://cp.example:9091 */
  cp_url: z.url({ protocol: /^https$/ }),
  /** The OCSP responder URL (Channel 4), e.g. http://cp.example:9092/ocsp/ */
  ocsp_url: z.url({ protocol: /^https?$/ }),
  /** Where SDK clients reach this node (host as in the server certificate's SANs). */
  business: z.strictObject({ host: z.string().min(1).max(253), port: z.number().int().min(1).max(65535) }),
  files: z.strictObject({
    cp_ca: relativePath,
    client_cert: relativePath,
    client_key: relativePath,
    server_cert: relativePath,
    server_key: relativePath,
    server_issuer: relativePath,
    app_client_ca: relativePath,
    password_hash_key: relativePath,
  }),
});
export type AgentPackage = z.infer<typeof agentPackageSchema>;
