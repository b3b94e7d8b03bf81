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
/** Deepest nesting of objects and arrays accepted in any JSON body, on every listener (levels). */
export const MAX_JSON_DEPTH = 64;
/** Largest page a list endpoint returns. */
export const MAX_PAGE_SIZE = 200;
export const DEFAULT_PAGE_SIZE = 50;

/** Root CA lifetime (days): ten years, because a root is replaced by rotation, not by expiry. */
export const CA_VALIDITY_DAYS = 3650;
/** Leaf certificate lifetime (days): 397, the CA/Browser Forum ceiling for TLS leaves, which TLS stacks increasingly enforce. */
export const LEAF_VALIDITY_DAYS = 397;
/**
 * After a node acks a rotation, how long its previous CP client certificate is still accepted
 * (calls already in flight on the old pool finish), before it is refused and then revoked.
 */
export const CERT_ROTATION_GRACE_MS = 10 * 60_000;
/** Node certificates are renewed at this fraction of their lifetime (kubelet: 70–90%)… */
export const CERT_RENEW_AT_FRACTION = 0.7;
/** …plus or minus this fraction of the lifetime, fixed per certificate, so a fleet spreads out. */
export const CERT_RENEW_JITTER_FRACTION = 0.1;
/** How often the CP looks for certificates due for renewal. */
export const CERT_RENEW_CHECK_INTERVAL_MS = 60 * 60_000;
/** After setup is complete (at start, or when setup completes), the first renewal check waits this long (ms), then every interval. */
export const CERT_RENEW_FIRST_CHECK_DELAY_MS = 30_000;
/**
 * How far two clocks may disagree (ms): certificates are backdated by this much (notBefore) so
 * a peer whose clock runs slow still accepts them, and an OCSP thisUpdate may lie this far in
 * the future (the CP's clock may run ahead of a node's).
 */
export const CLOCK_SKEW_MS = 5 * 60 * 1000;
/** The CP renews its own server certificate (9091) at start when less than this remains (ms). */
export const CP_CERT_RENEW_BEFORE_MS = 30 * 24 * 60 * 60 * 1000;
/**
 * How often a running CP checks its node API identity: renews its certificate when due, and
 * picks up what another CP process changed (a renewed certificate, a CA rotation's trust).
 */
export const CP_TLS_IDENTITY_CHECK_MS = 60_000;

/** How long in-flight requests may run after SIGINT/SIGTERM before sockets are cut (ms). */
export const SHUTDOWN_GRACE_MS = 10_000;

/** serve-node: largest response body the CP agent reads from the CP (bytes); larger is an error, not a truncation. */
export const NODE_MAX_CP_RESPONSE_BYTES = 8 * 1024 * 1024;
/** serve-node: the OCSP refresh is never planned sooner than this (ms), however close nextUpdate is. */
export const NODE_OCSP_MIN_REFRESH_MS = 1000;

/** serve-node: largest OCSP response accepted from the responder (bytes); ours are a few hundred. */
export const MAX_OCSP_RESPONSE_BYTES = 64 * 1024;
/** serve-node: a poll may come up to this fraction of its interval early, at random, so a fleet does not poll in waves. */
export const POLL_JITTER_RATIO = 0.1;

// ---- OCSP responder (Channel 4) ------------------------------------------------------------

/** nextUpdate - thisUpdate of every response (ms). */
export const DEFAULT_OCSP_VALIDITY_MS = 30 * 60 * 1000;
/** The most a response may be valid (ms): SDKs refuse windows over 1800 s. */
export const MAX_OCSP_VALIDITY_MS = 1800 * 1000;
/** Largest OCSP request accepted, POST body or decoded GET payload (bytes). */
export const DEFAULT_OCSP_MAX_REQUEST_BYTES = 16 * 1024;

// ---- node API (Channels 1-3) ---------------------------------------------------------------

/** Idle node connections are kept this long (ms): past the 5 s epoch poll, so pulls reuse their mTLS session. */
export const NODE_API_KEEP_ALIVE_MS = 65_000;
/** A node that checked in within this window is online (ms). */
export const NODE_ONLINE_WINDOW_MS = 2 * 60_000;
/** An active node whose OCSP staple was last applied longer ago than this needs attention (ms). */
export const OCSP_STALE_AFTER_MS = 60 * 60_000;
/** How long the checkin's cached log heads and config versions may be reused (ms): bounds staleness across CP processes. */
export const CHECKIN_CACHE_TTL_MS = 1000;
/**
 * A node whose stream is evicted this many times within SSE_CONTENTION_WINDOW_MS is being run
 * twice (two processes with one package): the CP logs one [SSE] warning naming both peers, then
 * stays quiet about that node for SSE_CONTENTION_WARN_INTERVAL_MS.
 */
export const SSE_CONTENTION_EVICTIONS = 3;
export const SSE_CONTENTION_WINDOW_MS = 5 * 60_000;
export const SSE_CONTENTION_WARN_INTERVAL_MS = 60 * 60_000;
/** Frames a backpressured SSE stream may hold before the oldest is dropped. */
export const SSE_MAX_QUEUED_FRAMES = 32;
/** A command nobody picked up within this long stops being delivered (seconds); an admin may choose up to the maximum. */
export const DEFAULT_COMMAND_TTL_SECONDS = 24 * 3600;
export const MAX_COMMAND_TTL_SECONDS = 30 * 86_400;
/** How often the CP retires expired blacklist entries and compacts the change logs (ms). */
export const RETENTION_PASS_INTERVAL_MS = 10 * 60_000;
/** Longest a blacklist entry may be set to last (ms): anything longer is a typo, not a policy. */
export const MAX_BLACKLIST_LIFETIME_MS = 100 * 365 * 86_400_000;

// ---- PKI jobs ------------------------------------------------------------------------------

/** Attempts a job gets before it stays failed (an admin may retry it then). */
export const DEFAULT_JOB_MAX_ATTEMPTS = 5;
/** How often an idle worker looks for due jobs (ms); a queued job wakes it at once. */
export const JOB_POLL_INTERVAL_MS = 5_000;
/** How long a claim holds without renewal (ms): after that a sweep may reclaim the job. */
export const JOB_LEASE_MS = 60_000;
/** How often a running job's lease is renewed (ms). */
export const JOB_LEASE_RENEW_MS = 15_000;
/** First retry delay after a failure (ms); it doubles per attempt up to JOB_RETRY_MAX_MS. */
export const JOB_RETRY_BASE_MS = 5_000;
export const JOB_RETRY_MAX_MS = 10 * 60_000;
/** How long a stopping CP waits for the job in flight (ms); after that its lease simply expires. */
export const JOB_STOP_WAIT_MS = 10_000;

// ---- cloud functions -----------------------------------------------------------------------

/** Largest script body (bytes, UTF-8). */
export const MAX_CLOUD_FUNCTION_SCRIPT_BYTES = 256 * 1024;
/** Run-time limit of one call (ms), and the range a function may ask for. */
export const DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS = 1000;
/** serve-node --function-workers: threads cloud functions run on, beside the event loop serving logins. */
export const DEFAULT_FUNCTION_WORKERS = 2;
/** serve-node --function-queue: calls that may wait for a worker; one more is answered FUNCTION_BUSY. */
export const DEFAULT_FUNCTION_QUEUE = 256;
export const MIN_CLOUD_FUNCTION_TIMEOUT_MS = 10;
export const MAX_CLOUD_FUNCTION_TIMEOUT_MS = 60_000;

// ---- the business plane (SDK connections to a node) --------------------------------------

/** serve-node: the business listener's host when --listen is not given (the port is the node's business_port). */
export const DEFAULT_BUSINESS_HOST = "0.0.0.0";
/** How often the edge checks every connection's handshake and idle deadlines (ms). */
export const BUSINESS_DEADLINE_SWEEP_MS = 250;
/** After an error that ends a connection, how long its last frame may take to leave before the socket is cut (ms). */
export const BUSINESS_CLOSE_GRACE_MS = 1_000;
/** A client that leaves this much of our output unread is too slow to keep (bytes); it is cut. */
export const BUSINESS_MAX_UNREAD_BYTES = 256 * 1024;
/** Requests one connection may have queued behind the one being served; more is a protocol error. */
export const BUSINESS_MAX_QUEUED_REQUESTS = 32;
/** A session's last_heartbeat_at is written at most this often (ms): heartbeats themselves are in memory. */
export const SESSION_TOUCH_INTERVAL_MS = 60_000;
/** End-user password length bounds (characters). */
export const USER_PASSWORD_MIN_LENGTH = 8;
export const USER_PASSWORD_MAX_LENGTH = 256;
/** Failed logins are counted over this window, per user and per IP (ms); the limit is server_runtime_settings.login_attempts_per_minute. */
export const LOGIN_THROTTLE_WINDOW_MS = 60_000;
/** Most (user or IP) keys the login throttle tracks at once; the oldest are forgotten first. */
export const LOGIN_THROTTLE_MAX_KEYS = 100_000;
/**
 * The blacklist and auth-epoch caches count as current while their last successful pull is
 * younger than this (ms). Past it, --blacklist-fail-closed refuses every request, and saved
 * tokens validate only while younger than STALE_EPOCH_TOKEN_MAX_AGE_MS.
 */
export const SECURITY_STATE_STALE_AFTER_MS = 2 * 60_000;
/** A saved token's shorter lifetime while the node cannot confirm auth epochs (ms). */
export const STALE_EPOCH_TOKEN_MAX_AGE_MS = 15 * 60_000;

// ---- the SDK --------------------------------------------------------------------------------

/** A stapled OCSP response whose thisUpdate is older than this is refused (ms). */
export const SDK_STAPLE_MAX_AGE_MS = 1800 * 1000;
/** How far the SDK's clock and the CP's may disagree when judging a staple's time window (ms). */
export const SDK_STAPLE_CLOCK_SKEW_MS = 2 * 60_000;
/** TCP connect plus TLS handshake plus hello, per node tried (ms). */
export const SDK_CONNECT_TIMEOUT_MS = 10_000;
/** How long a request waits for its answer (ms). */
export const SDK_REQUEST_TIMEOUT_MS = 10_000;
/** Reconnection backoff after a lost connection: first delay and ceiling (ms); full jitter. */
export const SDK_RECONNECT_BASE_MS = 250;
export const SDK_RECONNECT_MAX_MS = 15_000;
