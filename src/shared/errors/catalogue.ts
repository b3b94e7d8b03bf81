/**
 * Every error code AuthNexus returns, grouped by area, with how each one travels:
 *
 * - `http`: the status on the admin API (9090) and the node API (9091);
 * - `wire`: the 16-bit status code on the SDK's binary protocol (docs/protocol.md). Codes are
 *   unique and never reused: an SDK built against an older catalogue still names what it knows.
 *   Ranges: 1xxx the request itself, 2xxx setup and admin accounts, 3xxx applications and
 *   configuration, 4xxx PKI and nodes, 5xxx the node API, 6xxx end-user authentication,
 *   7xxx cloud functions, 9xxx the server's own state;
 * - `expose: false`: answered with the fixed INTERNAL body (the real reason is only logged);
 * - `retryable`: the same request may succeed later without any change (the server was busy or
 *   a dependency was down); HTTP answers add Retry-After (`retryAfterS`).
 */
interface CatalogueEntry {
  readonly http: number;
  readonly wire: number;
  readonly message: string;
  readonly expose: boolean;
  readonly retryable: boolean;
  /** Seconds a client should wait before retrying (Retry-After), for retryable codes. */
  readonly retryAfterS?: number;
}

interface EntryOptions {
  expose?: boolean;
  retryAfterS?: number;
}

function entry(http: number, wire: number, message: string, options: EntryOptions = {}): CatalogueEntry {
  const retryable = options.retryAfterS !== undefined;
  return { http, wire, message, expose: options.expose ?? true, retryable, ...(retryable ? { retryAfterS: options.retryAfterS } : {}) };
}

export const ERROR_CATALOGUE = {
  // Request shape
  MALFORMED_JSON: entry(400, 1001, "Request body is not valid JSON."),
  VALIDATION_FAILED: entry(400, 1002, "Request failed validation."),
  UNSUPPORTED_MEDIA_TYPE: entry(415, 1003, "Request body must be application/json."),
  BODY_TOO_LARGE: entry(413, 1004, "Request body is too large."),
  ROUTE_NOT_FOUND: entry(404, 1005, "No such endpoint."),
  METHOD_NOT_ALLOWED: entry(405, 1006, "Method not allowed on this endpoint."),
  NOT_FOUND: entry(404, 1007, "Resource not found."),
  CONFLICT: entry(409, 1008, "Resource already exists."),
  JSON_TOO_DEEP: entry(400, 1009, "Request body is nested too deeply."),
  PROTOCOL_ERROR: entry(400, 1010, "The frame could not be decoded."),
  FRAME_TOO_LARGE: entry(413, 1011, "The frame is larger than this connection allows."),
  PROTOCOL_VERSION_UNSUPPORTED: entry(400, 1012, "This protocol version is not supported."),
  MESSAGE_UNSUPPORTED: entry(400, 1013, "This node does not know that message type."),
  ANSWER_TOO_LARGE: entry(413, 1014, "The answer would not fit in one frame; ask for less at a time."),

  // Setup
  SETUP_REQUIRED: entry(503, 2001, "First-run setup has not been completed."),
  SETUP_ALREADY_COMPLETED: entry(409, 2002, "Setup has already been completed."),
  SETUP_TOKEN_INVALID: entry(403, 2003, "Console token is invalid."),
  SETUP_IN_PROGRESS: entry(409, 2004, "Setup is already in progress."),

  // Agents (admin accounts) and their sessions
  UNAUTHENTICATED: entry(401, 2101, "Authentication required."),
  INVALID_CREDENTIALS: entry(401, 2102, "Invalid username or password."),
  INVALID_REFRESH_TOKEN: entry(401, 2103, "Refresh token is invalid or expired."),
  LOGIN_THROTTLED: entry(429, 2104, "Too many failed login attempts; try again later."),
  FORBIDDEN: entry(403, 2105, "Your role does not allow this operation."),
  WEAK_PASSWORD: entry(400, 2106, "Password does not meet the policy."),
  LAST_ROOT_AGENT: entry(409, 2107, "The last active root agent cannot be disabled or demoted."),

  // Applications
  APPLICATION_NOT_IN_RECYCLE_BIN: entry(409, 3001, "Only a deleted application can be restored or purged."),
  APPLICATION_DELETED: entry(409, 3002, "The application is in the recycle bin."),

  // Configuration and databases
  CONFIG_INVALID: entry(400, 3101, "Configuration is invalid."),
  DB_MIGRATION_MISMATCH: entry(500, 9101, "Database belongs to another role."),
  MASTER_KEY_INVALID: entry(500, 9102, "Master key cannot decrypt the stored keys."),

  // PKI
  PKI_NOT_INITIALISED: entry(503, 4001, "PKI has not been initialised."),
  PKI_DECRYPT_FAILED: entry(500, 4002, "Stored key could not be decrypted.", { expose: false }),
  CERTIFICATE_INVALID: entry(400, 4003, "Certificate is invalid."),
  OCSP_RESPONSE_INVALID: entry(502, 4004, "The OCSP response could not be verified."),

  // CA rotations (admin side): a phased operation per CA profile (docs/operations.md)
  CA_ROTATION_IN_PROGRESS: entry(409, 4202, "A rotation of this CA is already open."),
  CA_ROTATION_WRONG_PHASE: entry(409, 4203, "The rotation is not in a phase that allows this step."),
  CA_ROTATION_NODES_PENDING: entry(409, 4204, "Not every node has applied the published trust bundles yet."),

  // Nodes (admin side)
  NODE_NOT_PROVISIONED: entry(409, 4101, "The node's onboarding job has not finished yet."),
  PKI_JOB_NOT_RETRYABLE: entry(409, 4102, "Only a failed or cancelled job can be retried."),
  PKI_JOB_NOT_CANCELLABLE: entry(409, 4103, "Only a pending job can be cancelled."),
  NODE_ROTATION_IN_PROGRESS: entry(409, 4110, "A certificate rotation of this node has not been applied yet."),

  // Node API (mTLS, 9091): the caller's certificate decides what it may touch
  NODE_IDENTITY_MISMATCH: entry(403, 5001, "The client certificate belongs to another node."),
  NODE_CERT_NOT_RECOGNISED: entry(403, 5002, "The client certificate is not one issued to this node."),
  NODE_CERT_REVOKED: entry(403, 5003, "The client certificate has been revoked."),
  NODE_UNKNOWN: entry(403, 5004, "No such node."),
  DELTA_CURSOR_EXPIRED: entry(410, 5005, "The cursor is older than the retained change log; replay from 0."),
  CREDENTIALS_ACK_REFUSED: entry(409, 5006, "The acknowledgement does not match the rotation's new certificates."),

  // Channel 3 (security change logs, admin side)
  BLACKLIST_ENTRY_REMOVED: entry(409, 5101, "The blacklist entry has already been removed."),

  // SDK connections to a node (the binary protocol)
  HANDSHAKE_REQUIRED: entry(400, 6001, "Send hello before anything else."),
  HANDSHAKE_TIMEOUT: entry(408, 6002, "No hello arrived in time."),
  APP_CREDENTIALS_INVALID: entry(401, 6003, "The application's credentials are not valid."),
  APP_DISABLED: entry(403, 6004, "The application is disabled."),
  CLIENT_CERT_REFUSED: entry(403, 6005, "The client certificate is not accepted for this application."),
  CONNECTION_LIMIT: entry(503, 6006, "Too many connections; try again later.", { retryAfterS: 5 }),
  IDLE_TIMEOUT: entry(408, 6007, "No heartbeat arrived in time."),
  ACCESS_DENIED: entry(403, 6008, "Access denied."),
  SECURITY_STATE_UNAVAILABLE: entry(503, 6009, "The node cannot check its security state right now; try again shortly.", {
    retryAfterS: 5,
  }),

  // End-user authentication on a node
  LOGIN_FAILED: entry(401, 6101, "Login failed."),
  REGISTRATION_DISABLED: entry(403, 6102, "Registration is disabled for this application."),
  USERNAME_TAKEN: entry(409, 6103, "That username is taken."),
  INVITE_CODE_INVALID: entry(400, 6104, "The invite code is not valid."),
  LOGIN_METHOD_DISABLED: entry(403, 6105, "This way of logging in is disabled for this application."),
  NOT_LOGGED_IN: entry(401, 6106, "Log in first."),
  SESSION_ENDED: entry(401, 6107, "The session has ended; log in again."),
  DEVICE_LIMIT_REACHED: entry(403, 6108, "This account is already used on as many devices as allowed."),
  // Per-user variables (getvar/setvar from the SDK, and the admin API): the message names the key and the limit.
  USER_VARIABLE_INVALID: entry(400, 6109, "The variable's key or value is not valid."),
  USER_VARIABLE_LIMIT: entry(409, 6110, "The user cannot keep more variables."),
  USER_VARIABLE_CONFLICT: entry(409, 6111, "The user's variables changed while the call ran; try again.", { retryAfterS: 1 }),

  // The SDK's own refusals and failures (never sent by a node; unique codes all the same)
  NODE_UNREACHABLE: entry(503, 6201, "No node could be reached; try again shortly.", { retryAfterS: 5 }),
  NODE_CERT_REFUSED: entry(502, 6202, "The node's certificate is not trusted."),
  NODE_STAPLE_REFUSED: entry(502, 6203, "The node's certificate status could not be verified."),
  REQUEST_TIMEOUT: entry(504, 6204, "The node did not answer in time.", { retryAfterS: 1 }),
  CONNECTION_CLOSED: entry(503, 6205, "The connection to the node closed before the answer.", { retryAfterS: 1 }),
  SDK_CONFIG_INVALID: entry(400, 6206, "The SDK configuration is not valid."),
  CLIENT_CLOSED: entry(400, 6207, "The client has been closed."),

  // Cloud functions (Lua on the node's worker pool). A script's own failures (an error it raised, its
  // memory cap, a return value outside the value model) are the vendor's to fix, so they are 422s
  // with the reason exposed; FUNCTION_BUSY is the only one worth retrying unchanged.
  FUNCTION_NOT_FOUND: entry(404, 7001, "No such cloud function."),
  FUNCTION_TIMEOUT: entry(504, 7002, "The cloud function ran past its time limit."),
  FUNCTION_BUSY: entry(503, 7003, "Too many cloud function calls are waiting; try again shortly.", { retryAfterS: 1 }),
  FUNCTION_ERROR: entry(422, 7004, "The cloud function raised an error."),
  FUNCTION_MEMORY_EXCEEDED: entry(422, 7005, "The cloud function used more memory than it may."),
  FUNCTION_RESULT_INVALID: entry(422, 7006, "The cloud function returned a value that cannot be sent."),
  FUNCTION_SYNTAX_ERROR: entry(400, 7007, "The cloud function's script is not valid Lua."),

  // The server's own state
  DB_UNAVAILABLE: entry(503, 9001, "The database is unavailable; try again shortly.", { retryAfterS: 5 }),
  INTERNAL: entry(500, 9000, "Internal error.", { expose: false }),
} as const satisfies Record<string, CatalogueEntry>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_CATALOGUE, value);
}

const CODE_BY_WIRE: ReadonlyMap<number, ErrorCode> = new Map(
  (Object.entries(ERROR_CATALOGUE) as Array<[ErrorCode, CatalogueEntry]>).map(([code, e]) => [e.wire, code]),
);

/** The code a binary-protocol status names, or undefined for a status this build does not know. */
export function errorCodeForWire(wire: number): ErrorCode | undefined {
  return CODE_BY_WIRE.get(wire);
}
