/**
 * Every default in one place. The comment on each is its documentation: unit and effect.
 */

/** Directory for SQLite files, the console token and a generated master key. */
export const DEFAULT_DATA_DIR = "./authnexus-data";

/** Admin API (HTTP). Loopback only by default: expose it deliberately. */
export const DEFAULT_ADMIN_LISTEN = "127.0.0.1:9090";
/** Node API, Channels 1–3 (mTLS HTTP). */
export const DEFAULT_CP_LISTEN = "0.0.0.0:9091";
/** OCSP responder, Channel 4 (plain HTTP: responses are signed). */
export const DEFAULT_OCSP_LISTEN = "0.0.0.0:9092";
/** serve-node's local health endpoint (/healthz, /readyz, /status; plain HTTP). Loopback only by default. */
export const DEFAULT_HEALTH_LISTEN = "127.0.0.1:9093";
export const DEFAULT_CP_PORT = 9091;
export const DEFAULT_OCSP_PORT = 9092;

/** SQLite: how long a writer waits for a lock before SQLITE_BUSY (ms). */
export const DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 5000;
/** PostgreSQL: how long to wait for a new connection (seconds). */
export const DEFAULT_DB_CONNECT_TIMEOUT_S = 5;
/** PostgreSQL: statement_timeout for every session (ms). */
export const DEFAULT_DB_STATEMENT_TIMEOUT_MS = 15000;
/** PostgreSQL: lock_timeout for every session (ms). */
export const DEFAULT_DB_LOCK_TIMEOUT_MS = 5000;
/** PostgreSQL: connections in each pool. */
export const DEFAULT_DB_POOL_SIZE = 10;
export const DEFAULT_PG_PORT = 5432;

/** Agent access tokens live this long (ms); refresh to continue. */
export const AGENT_ACCESS_TOKEN_TTL_MS = 15 * 60 * 1000;
/** Agent refresh tokens live this long (ms); each refresh rotates it. */
export const AGENT_REFRESH_TOKEN_TTL_MS = 7 * 24 * 60 * 60 * 1000;
/** An agent session ends this long after login however often it is refreshed (ms). */
export const AGENT_SESSION_MAX_LIFETIME_MS = 30 * 24 * 60 * 60 * 1000;
/** Failed agent logins per username+IP inside the window before further attempts get 429. */
export const AGENT_LOGIN_MAX_FAILURES = 5;
/** Sliding window for counting failed agent logins (ms). */
export const AGENT_LOGIN_FAILURE_WINDOW_MS = 15 * 60 * 1000;
/** Agent password length bounds (characters). */
export const AGENT_PASSWORD_MIN_LENGTH = 12;
export const AGENT_PASSWORD_MAX_LENGTH = 256;

/** Largest admin API request body accepted (bytes). */
export const ADMIN_MAX_BODY_BYTES = 64 * 1024;
/** Largest page a list endpoint returns. */
export const MAX_PAGE_SIZE = 200;
export const DEFAULT_PAGE_SIZE = 50;

/** Root CA lifetime (days). */
export const CA_VALIDITY_DAYS = 3650;
/** Leaf certificate lifetime (days); 397 is the public-web ceiling and a sane default here. */
export const LEAF_VALIDITY_DAYS = 397;

/** How long in-flight requests may run after SIGINT/SIGTERM before sockets are cut (ms). */
export const SHUTDOWN_GRACE_MS = 10_000;

/** serve-node: largest response body the CP agent reads from the CP (bytes); larger is an error, not a truncation. */
export const NODE_MAX_CP_RESPONSE_BYTES = 8 * 1024 * 1024;
/** serve-node: the OCSP refresh is never planned sooner than this (ms), however close nextUpdate is. */
export const NODE_OCSP_MIN_REFRESH_MS = 1000;
/** serve-node: thisUpdate may lie this far in the future (ms): the CP's clock may run slightly ahead. */
export const NODE_OCSP_CLOCK_SKEW_MS = 5 * 60 * 1000;
