/**
 * Every error code AuthNexus returns, grouped by area. The status is the HTTP status on the
 * admin and node APIs; `expose: false` codes are answered with the fixed INTERNAL body.
 */
interface CatalogueEntry {
  readonly status: number;
  readonly message: string;
  readonly expose: boolean;
}

function entry(status: number, message: string, expose = true): CatalogueEntry {
  return { status, message, expose };
}

export const ERROR_CATALOGUE = {
  // Request shape
  MALFORMED_JSON: entry(400, "Request body is not valid JSON."),
  VALIDATION_FAILED: entry(400, "Request failed validation."),
  UNSUPPORTED_MEDIA_TYPE: entry(415, "Request body must be application/json."),
  BODY_TOO_LARGE: entry(413, "Request body is too large."),
  ROUTE_NOT_FOUND: entry(404, "No such endpoint."),
  METHOD_NOT_ALLOWED: entry(405, "Method not allowed on this endpoint."),
  NOT_FOUND: entry(404, "Resource not found."),
  CONFLICT: entry(409, "Resource already exists."),

  // Setup
  SETUP_REQUIRED: entry(503, "First-run setup has not been completed."),
  SETUP_ALREADY_COMPLETED: entry(409, "Setup has already been completed."),
  SETUP_TOKEN_INVALID: entry(403, "Console token is invalid."),
  SETUP_IN_PROGRESS: entry(409, "Setup is already in progress."),

  // Agents and their sessions
  UNAUTHENTICATED: entry(401, "Authentication required."),
  INVALID_CREDENTIALS: entry(401, "Invalid username or password."),
  INVALID_REFRESH_TOKEN: entry(401, "Refresh token is invalid or expired."),
  LOGIN_THROTTLED: entry(429, "Too many failed login attempts; try again later."),
  FORBIDDEN: entry(403, "Your role does not allow this operation."),
  WEAK_PASSWORD: entry(400, "Password does not meet the policy."),
  LAST_ROOT_AGENT: entry(409, "The last active root agent cannot be disabled or demoted."),

  // Applications
  APPLICATION_NOT_IN_RECYCLE_BIN: entry(409, "Only a deleted application can be restored or purged."),
  APPLICATION_DELETED: entry(409, "The application is in the recycle bin."),

  // Configuration and databases
  CONFIG_INVALID: entry(400, "Configuration is invalid."),
  DB_MIGRATION_MISMATCH: entry(500, "Database belongs to another role.", true),
  DB_UNAVAILABLE: entry(503, "Database is unavailable.", false),
  MASTER_KEY_INVALID: entry(500, "Master key cannot decrypt the stored keys.", true),

  // PKI
  PKI_NOT_INITIALISED: entry(503, "PKI has not been initialised."),
  PKI_DECRYPT_FAILED: entry(500, "Stored key could not be decrypted.", false),
  CERTIFICATE_INVALID: entry(400, "Certificate is invalid."),

  // Nodes (admin side)
  NODE_NOT_PROVISIONED: entry(409, "The node's onboarding job has not finished yet."),
  PKI_JOB_NOT_RETRYABLE: entry(409, "Only a failed or cancelled job can be retried."),
  PKI_JOB_NOT_CANCELLABLE: entry(409, "Only a pending job can be cancelled."),

  // Node API (mTLS, 9091): the caller's certificate decides what it may touch
  NODE_IDENTITY_MISMATCH: entry(403, "The client certificate belongs to another node."),
  NODE_CERT_NOT_RECOGNISED: entry(403, "The client certificate is not one issued to this node."),
  NODE_CERT_REVOKED: entry(403, "The client certificate has been revoked."),
  NODE_UNKNOWN: entry(403, "No such node."),
  DELTA_CURSOR_EXPIRED: entry(410, "The cursor is older than the retained change log; replay from 0."),

  // Channel 3 (security change logs, admin side)
  BLACKLIST_ENTRY_REMOVED: entry(409, "The blacklist entry has already been removed."),

  INTERNAL: entry(500, "Internal error.", false),
} as const satisfies Record<string, CatalogueEntry>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;
