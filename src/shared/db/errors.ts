/** Recognises a unique-constraint violation from either driver. */
export function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string } | null;
  return e?.code === "SQLITE_CONSTRAINT_UNIQUE" || e?.code === "SQLITE_CONSTRAINT_PRIMARYKEY" || e?.code === "23505";
}

/** Socket errors from the PostgreSQL client: the server is down, restarting or unreachable. */
const SOCKET_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN"]);
/**
 * PostgreSQL SQLSTATEs meaning "not now": connection exceptions (class 08), the server shutting
 * down or starting (57P01-57P03), too many connections (53300).
 */
const PG_UNAVAILABLE_STATE = /^(08|57P0[123]$|53300$)/;
/** SQLite result codes that a later retry may get past: locked beyond the busy timeout, I/O trouble, a full disk. */
const SQLITE_UNAVAILABLE_CODE = /^SQLITE_(BUSY|LOCKED|IOERR|CANTOPEN|FULL|PROTOCOL)/;
/** node-postgres reports a lost or timed-out connection only in its message. */
const PG_CONNECTION_MESSAGE = /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i;

/**
 * True when an error means the database cannot be reached or used right now — as opposed to a
 * query it refused. Such a request is answered 503 with Retry-After (OCSP: tryLater), never 500.
 * Follows `cause` chains (Kysely and our own errors wrap the driver's).
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    const { code, message } = current as { code?: unknown; message?: unknown };
    if (code === "DB_UNAVAILABLE") return true;
    if (typeof code === "string" && (SOCKET_CODES.has(code) || PG_UNAVAILABLE_STATE.test(code) || SQLITE_UNAVAILABLE_CODE.test(code)))
      return true;
    if (typeof message === "string" && PG_CONNECTION_MESSAGE.test(message)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
