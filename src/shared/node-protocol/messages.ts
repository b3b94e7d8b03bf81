/**
 * Request and response bodies of Channels 1 and 3 (JSON over mTLS on 9091). The CP validates
 * every request with these schemas and the node validates every response, so a change to the
 * contract is a change here.
 */
import { z } from "zod";
import { CONFIG_TYPES } from "./config-types.js";

/**
 * Config items a node may report or acknowledge in one call: four per application plus the
 * globals, for deployments of up to ~1,200 applications (a reference is ~80 bytes of JSON).
 */
export const MAX_BATCH_ITEMS = 5000;
export const MAX_DELTA_PAGE = 1000;
export const DEFAULT_DELTA_PAGE = 500;
export const MAX_COMMAND_PAGE = 200;
/** Largest request body the node API accepts (bytes). */
export const NODE_API_MAX_BODY_BYTES = 1024 * 1024;
/** Largest command result output a node may report (bytes, serialized). */
export const MAX_COMMAND_OUTPUT_BYTES = 16 * 1024;

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const version = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const shortText = (max: number) => z.string().max(max);
const scope = z.string().regex(/^(global|app:[A-Za-z0-9_-]{1,64})$/);
const configType = z.enum(CONFIG_TYPES);

/** One applied config item as the node knows it. */
export const configVersionRef = z.strictObject({ type: configType, scope, version });
export type ConfigVersionRef = z.infer<typeof configVersionRef>;

// ---- checkin -----------------------------------------------------------------------------

export const checkinRequest = z.strictObject({
  software_version: shortText(64),
  node_metadata: z.strictObject({
    hostname: shortText(255),
    os: shortText(128),
    uptime_s: count,
    started_at: count,
    pid: count.optional(),
  }),
  metrics: z.strictObject({
    connections: count,
    online_users: count,
    requests_per_s: z.number().min(0).max(1e9),
    errors_per_s: z.number().min(0).max(1e9),
    rss_bytes: count,
    cpu_percent: z.number().min(0).max(100_000),
  }),
  /** Application version snapshot: every config item the node has applied. */
  app_versions: z.array(configVersionRef).max(MAX_BATCH_ITEMS),
  cursors: z.strictObject({ commands: count, "auth-epochs": count, blacklist: count }),
  sse_connected: z.boolean(),
  ocsp: z
    .strictObject({
      status: z.enum(["good", "revoked", "unknown", "none"]),
      fetched_at: count.nullable(),
      next_update: count.nullable(),
    })
    .optional(),
  /** Online users per application (for presence). */
  presence: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/), count).optional(),
});
export type CheckinRequest = z.infer<typeof checkinRequest>;

export const checkinResponse = z.object({
  server_time: count,
  node_status: z.enum(["active", "disabled"]),
  /** The newest id of each log the node follows, so it can notice a missed hint. */
  heads: z.object({ commands: count, "auth-epochs": count, blacklist: count }),
  /** True when some config item has a version the node has not applied. */
  config_pending: z.boolean(),
});
export type CheckinResponse = z.infer<typeof checkinResponse>;

// ---- commands ----------------------------------------------------------------------------

export const COMMAND_KINDS = ["reload_configs", "force_logout", "announcement", "kill_process"] as const;
export type CommandKind = (typeof COMMAND_KINDS)[number];

const appIdField = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
const idField = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
/** Which connected clients a push reaches: every field given must match; none (kill_process) means all. */
const pushTarget = {
  app_id: appIdField.optional(),
  user_id: idField.optional(),
  session_id: idField.optional(),
  card_key_id: idField.optional(),
  device_id: z.string().min(1).max(128).optional(),
};
export const COMMAND_PAYLOADS = {
  reload_configs: z.strictObject({}),
  // A logout must name whom it logs out: a user, a session, a card key or a device.
  force_logout: z
    .strictObject({ ...pushTarget, reason: shortText(500).optional() })
    .refine(
      (p) => p.user_id !== undefined || p.session_id !== undefined || p.card_key_id !== undefined || p.device_id !== undefined,
      "name a user_id, session_id, card_key_id or device_id",
    ),
  announcement: z.strictObject({
    ...pushTarget,
    message: z.string().min(1).max(4000),
    level: z.enum(["info", "warning", "critical"]).default("info"),
  }),
  kill_process: z.strictObject({ ...pushTarget, reason: shortText(500).optional() }),
} as const satisfies Record<CommandKind, z.ZodType>;

export const pulledCommand = z.object({
  id: z.string(),
  seq: count,
  kind: z.enum(COMMAND_KINDS),
  payload: z.record(z.string(), z.unknown()),
  created_at: count,
  expires_at: count.nullable(),
});
export type PulledCommand = z.infer<typeof pulledCommand>;

export const commandsPullResponse = z.object({
  commands: z.array(pulledCommand),
  /** The sequence to pass as `since` next time. */
  next_since: count,
  has_more: z.boolean(),
});
export type CommandsPullResponse = z.infer<typeof commandsPullResponse>;

export const COMMAND_RESULT_STATUSES = ["succeeded", "failed", "rejected"] as const;
export const commandResultRequest = z.strictObject({
  status: z.enum(COMMAND_RESULT_STATUSES),
  output: z.unknown().optional(),
});
export type CommandResultRequest = z.infer<typeof commandResultRequest>;

// ---- configs -----------------------------------------------------------------------------

export const configsPullRequest = z.strictObject({
  /** What the node has applied; the CP answers with anything newer. */
  applied: z.array(configVersionRef).max(MAX_BATCH_ITEMS),
});
export type ConfigsPullRequest = z.infer<typeof configsPullRequest>;

export const configItem = z.object({ type: configType, scope, version, content: z.unknown() });
export type ConfigItem = z.infer<typeof configItem>;

export const cloudFunctionManifest = z.object({
  app_id: z.string(),
  name: z.string(),
  version: count,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  timeout_ms: count,
});
export type CloudFunctionManifest = z.infer<typeof cloudFunctionManifest>;

/**
 * One live application as nodes see it: whether it may be used, and the SHA-256 of its secret —
 * the verifier a node checks an SDK's hello against. The secret itself never leaves the CP
 * (it is shown once, at creation).
 */
export const applicationManifest = z.object({
  app_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  status: z.enum(["active", "disabled"]),
  secret_sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type ApplicationManifest = z.infer<typeof applicationManifest>;

const pem = z
  .string()
  .min(1)
  .max(64 * 1024);

/**
 * New certificates for the node, from a rotation (docs/pki.md, "Rotating a node's
 * certificates"): its business server certificate with the tcp_server_ca that issued it, and
 * its CP client certificate, each with its new private key, and the CP trust bundle. The node
 * checks, probes the CP with them, staples, persists, swaps, then acks with the new client
 * certificate.
 */
export const nodeCredentialsDelivery = z.object({
  rotation_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  server_cert_pem: pem,
  server_key_pem: pem,
  server_issuer_pem: pem,
  client_cert_pem: pem,
  client_key_pem: pem,
  /** Every cp_server_ca the node must trust for the CP from now on (both during a cp_server_ca rotation). */
  cp_ca_pem: pem.optional(),
});
export type NodeCredentialsDelivery = z.infer<typeof nodeCredentialsDelivery>;

/** What the node says it now serves and presents; the CP checks both against the rotation. */
export const credentialsAckRequest = z.strictObject({
  server_cert_sha256: z.string().regex(/^[0-9a-f]{64}$/),
  client_cert_sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type CredentialsAckRequest = z.infer<typeof credentialsAckRequest>;

export const credentialsAckResponse = z.object({
  rotation_id: z.string(),
  acked_at: z.number(),
  /** When the previous CP client certificate stops being accepted. */
  previous_client_cert_retire_at: z.number(),
});
export type CredentialsAckResponse = z.infer<typeof credentialsAckResponse>;

export const configsPullResponse = z.object({
  configs: z.array(configItem),
  /** Present while a rotation's new credentials wait for this node. */
  credentials: nodeCredentialsDelivery.optional(),
  /** Every cloud function of every live application (the full manifest: it is small). */
  cloud_functions: z.array(cloudFunctionManifest),
  /** Every live application (not in the recycle bin); an application missing here is refused. */
  applications: z.array(applicationManifest),
});
export type ConfigsPullResponse = z.infer<typeof configsPullResponse>;

export const configsAcksRequest = z.strictObject({ acks: z.array(configVersionRef).min(1).max(MAX_BATCH_ITEMS) });
export type ConfigsAcksRequest = z.infer<typeof configsAcksRequest>;

const errorMessage = z.string().min(1).max(2000);

/** A config item version the node rejected. */
export const configItemError = z.strictObject({
  type: configType,
  scope,
  /** The version the node rejected. */
  version,
  /** The version still in force on the node (null when none was ever applied). */
  applied_version: version.nullable(),
  message: errorMessage,
});
export type ConfigItemError = z.infer<typeof configItemError>;

/** The `type` of an error report about a cloud function rather than a config item. */
export const CLOUD_FUNCTION_ERROR_TYPE = "cloud_function";

/**
 * A cloud function body the node refused (it does not compile): the function is named by its
 * application's scope and its name, and the versions are the function's own.
 */
export const cloudFunctionError = z.strictObject({
  type: z.literal(CLOUD_FUNCTION_ERROR_TYPE),
  scope: z.string().regex(/^app:[A-Za-z0-9_-]{1,64}$/),
  name: z.string().min(1).max(64),
  /** The function version the node refused. */
  version,
  /** The function version still served by the node (null when it serves none). */
  applied_version: version.nullable(),
  message: errorMessage,
});
export type CloudFunctionError = z.infer<typeof cloudFunctionError>;

export const configError = z.discriminatedUnion("type", [configItemError, cloudFunctionError]);
export type ConfigError = z.infer<typeof configError>;
export const configsErrorsRequest = z.strictObject({ errors: z.array(configError).min(1).max(MAX_BATCH_ITEMS) });
export type ConfigsErrorsRequest = z.infer<typeof configsErrorsRequest>;

export const batchAcceptedResponse = z.object({ accepted: count });

// ---- deltas (Channel 3) ------------------------------------------------------------------

export const authEpochChange = z.object({
  id: count,
  user_id: z.string(),
  app_id: z.string().nullable(),
  epoch: count,
  created_at: count,
});
export type AuthEpochChange = z.infer<typeof authEpochChange>;

export const BLACKLIST_KINDS = ["ip", "device", "user"] as const;
export type BlacklistKind = (typeof BLACKLIST_KINDS)[number];

export const blacklistChange = z.object({
  id: count,
  entry_id: z.string(),
  op: z.enum(["add", "remove"]),
  kind: z.enum(BLACKLIST_KINDS),
  value: z.string(),
  reason: z.string().nullable(),
  expires_at: count.nullable(),
  created_at: count,
});
export type BlacklistChange = z.infer<typeof blacklistChange>;

const deltaPage = <T extends z.ZodType>(change: T) =>
  z.object({
    changes: z.array(change),
    /**
     * Cursor to pass as `since` next: the last change's id while has_more, else the head (ids in
     * between were compacted away as superseded, so the cursor never stalls below the head).
     */
    next_since: count,
    has_more: z.boolean(),
    /** Newest id in the log right now. */
    head: count,
  });
export const authEpochDeltaResponse = deltaPage(authEpochChange);
export const blacklistDeltaResponse = deltaPage(blacklistChange);
export type AuthEpochDeltaResponse = z.infer<typeof authEpochDeltaResponse>;
export type BlacklistDeltaResponse = z.infer<typeof blacklistDeltaResponse>;

/**
 * Body of the 410 answer when `since` is older than what the CP still keeps: the node is told,
 * never silently moved forward. It carries the oldest id still available.
 */
export const cursorExpiredBody = z.object({
  error: z.literal("DELTA_CURSOR_EXPIRED"),
  message: z.string(),
  details: z.object({ since: count, oldest_available: count, head: count }),
});
