/**
 * How CLI commands authenticate to the admin API, first match wins:
 * 1. --username: a login with a password from stdin or a prompt (logged out again when the
 *    command finishes);
 * 2. a bearer token from --token or AUTHNEXUS_ADMIN_TOKEN;
 * 3. the session `authnexus ops login` stored (session-store.ts), refreshed when its access
 *    token has expired or is about to, and once more when the API says it is no longer valid.
 * The admin URL is --admin-url, else AUTHNEXUS_ADMIN_URL, else the stored session's, else the
 * default; a stored session is never sent to another URL than the one it was made for.
 */
import type { Command } from "commander";
import { DEFAULT_ADMIN_LISTEN } from "../shared/config/defaults.js";
import { systemClock } from "../shared/time/index.js";
import { AdminApiError, adminDownload, adminRequest } from "./admin-client.js";
import { promptHidden, readAllStdin } from "./prompt.js";
import {
  deleteStoredSession,
  readStoredSession,
  type StoredSession,
  sessionFilePath,
  withSessionLock,
  writeStoredSession,
} from "./session-store.js";

export interface AdminSessionFlags {
  adminUrl?: string;
  token?: string;
  username?: string;
  passwordStdin?: boolean;
}

export function addAdminSessionFlags(command: Command): Command {
  return command
    .option("--admin-url <url>", "admin API base URL [env AUTHNEXUS_ADMIN_URL]")
    .option("--token <token>", "agent access token [env AUTHNEXUS_ADMIN_TOKEN]")
    .option("--username <name>", "log in as this agent instead of using a token")
    .option("--password-stdin", "with --username: read the password from stdin");
}

export interface AdminSession {
  readonly baseUrl: string;
  call<T>(method: string, path: string, body?: unknown): Promise<T>;
  /** A GET answered with a file: its bytes and headers. */
  download(path: string): Promise<{ body: Buffer; headers: Headers }>;
}

/** A stored access token this close to its expiry is refreshed before use (ms). */
const REFRESH_AHEAD_MS = 30_000;

/** The admin URL a command talks to when --admin-url and AUTHNEXUS_ADMIN_URL are absent. */
export function defaultAdminUrl(): string {
  return `http://${DEFAULT_ADMIN_LISTEN}`;
}

/** URLs compared as the API sees them: "http://127.0.0.1:9090" and "http://127.0.0.1:9090/" are one. */
export function sameAdminUrl(a: string, b: string): boolean {
  try {
    return new URL(a).href === new URL(b).href;
  } catch {
    return a === b;
  }
}

/** The session answer of POST /auth/login and /auth/refresh as the file keeps it. */
export function storedFromTokens(
  adminUrl: string,
  username: string,
  tokens: { access_token: string; refresh_token: string; expires_in: number; refresh_expires_in: number },
  createdAt: number,
): StoredSession {
  const now = systemClock.now();
  return {
    admin_url: adminUrl,
    username,
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    access_expires_at: now + tokens.expires_in * 1000,
    refresh_expires_at: now + tokens.refresh_expires_in * 1000,
    created_at: createdAt,
  };
}

interface TokenSource {
  token(): Promise<string>;
  /** After a 401: a fresh token to retry with once, or null when there is none to get. */
  renew(rejected: string): Promise<string | null>;
}

export async function withAdminSession<T>(flags: AdminSessionFlags, work: (session: AdminSession) => Promise<T>): Promise<T> {
  const explicitUrl = flags.adminUrl ?? (process.env.AUTHNEXUS_ADMIN_URL || undefined);
  const given = flags.token ?? process.env.AUTHNEXUS_ADMIN_TOKEN;
  let baseUrl = explicitUrl ?? defaultAdminUrl();
  let source: TokenSource;
  let loggedIn: string | null = null;
  if (flags.username) {
    const password = flags.passwordStdin ? await readAllStdin() : await promptHidden(`Password for ${flags.username}: `);
    const token = (
      await adminRequest<{ access_token: string }>(baseUrl, "POST", "/admin/v1/auth/login", {
        body: { username: flags.username, password },
      })
    ).access_token;
    loggedIn = token;
    source = fixedToken(token);
  } else if (given) {
    source = fixedToken(given);
  } else {
    const file = sessionFilePath();
    const stored = readStoredSession(file);
    if (!stored) throw new Error("pass --token (or AUTHNEXUS_ADMIN_TOKEN), or --username to log in, or run `authnexus ops login` first");
    if (explicitUrl && !sameAdminUrl(explicitUrl, stored.admin_url))
      throw new Error(
        `the stored session (${file}) is for ${stored.admin_url}, not ${explicitUrl}: pass --token or --username, or run \`authnexus ops login --admin-url ${explicitUrl}\``,
      );
    baseUrl = stored.admin_url;
    source = storedToken(file, stored);
  }
  const call = async <R>(method: string, path: string, body?: unknown): Promise<R> => {
    const token = await source.token();
    const send = (t: string) => adminRequest<R>(baseUrl, method, path, { token: t, ...(body !== undefined ? { body } : {}) });
    try {
      return await send(token);
    } catch (error) {
      const retry = await retryToken(error, token, source);
      if (retry === null) throw error;
      return send(retry);
    }
  };
  const download = async (path: string) => {
    const token = await source.token();
    try {
      return await adminDownload(baseUrl, path, token);
    } catch (error) {
      const retry = await retryToken(error, token, source);
      if (retry === null) throw error;
      return adminDownload(baseUrl, path, retry);
    }
  };
  const session: AdminSession = { baseUrl, call, download };
  try {
    return await work(session);
  } finally {
    if (loggedIn) await adminRequest(baseUrl, "POST", "/admin/v1/auth/logout", { token: loggedIn }).catch(() => undefined);
  }
}

async function retryToken(error: unknown, rejected: string, source: TokenSource): Promise<string | null> {
  if (!(error instanceof AdminApiError) || error.status !== 401) return null;
  return source.renew(rejected);
}

function fixedToken(token: string): TokenSource {
  return { token: async () => token, renew: async () => null };
}

/** The stored session's access token, refreshed (under the file's lock) when it is due. */
function storedToken(file: string, initial: StoredSession): TokenSource {
  let current = initial;
  const refresh = async (rejected: string | null): Promise<string> =>
    withSessionLock(file, async () => {
      // Another command may have refreshed while this one waited for the lock: use its tokens.
      const latest = readStoredSession(file);
      if (!latest) throw new Error(`the stored session (${file}) was removed (ops logout?): run \`authnexus ops login\``);
      current = latest;
      const usable = latest.access_token !== rejected && latest.access_expires_at - systemClock.now() > REFRESH_AHEAD_MS;
      if (usable) return latest.access_token;
      if (latest.refresh_expires_at <= systemClock.now()) {
        deleteStoredSession(file);
        throw new Error(`the stored session for ${latest.admin_url} has expired: run \`authnexus ops login\``);
      }
      let tokens: { access_token: string; refresh_token: string; expires_in: number; refresh_expires_in: number };
      try {
        tokens = await adminRequest(latest.admin_url, "POST", "/admin/v1/auth/refresh", { body: { refresh_token: latest.refresh_token } });
      } catch (error) {
        if (error instanceof AdminApiError && error.status === 401) {
          deleteStoredSession(file);
          throw new Error(`the stored session for ${latest.admin_url} has ended (${error.code}): run \`authnexus ops login\``);
        }
        throw error;
      }
      current = storedFromTokens(latest.admin_url, latest.username, tokens, latest.created_at);
      writeStoredSession(file, current);
      return current.access_token;
    });
  return {
    token: async () => (current.access_expires_at - systemClock.now() > REFRESH_AHEAD_MS ? current.access_token : refresh(null)),
    renew: async (rejected) => refresh(rejected),
  };
}
