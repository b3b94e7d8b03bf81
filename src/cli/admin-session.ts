/**
 * How CLI commands authenticate to the admin API: a bearer token from --token or
 * AUTHNEXUS_ADMIN_TOKEN, or a login with --username and a password from stdin or a prompt (that
 * session is logged out again when the command finishes).
 */
import type { Command } from "commander";
import { DEFAULT_ADMIN_LISTEN } from "../shared/config/defaults.js";
import { adminRequest } from "./admin-client.js";
import { promptHidden, readAllStdin } from "./prompt.js";

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
  call<T>(method: string, path: string, body?: unknown): Promise<T>;
}

export async function withAdminSession<T>(flags: AdminSessionFlags, work: (session: AdminSession) => Promise<T>): Promise<T> {
  const baseUrl = flags.adminUrl ?? process.env.AUTHNEXUS_ADMIN_URL ?? `http://${DEFAULT_ADMIN_LISTEN}`;
  const given = flags.token ?? process.env.AUTHNEXUS_ADMIN_TOKEN;
  let token: string;
  let loggedIn = false;
  if (flags.username) {
    const password = flags.passwordStdin ? await readAllStdin() : await promptHidden(`Password for ${flags.username}: `);
    token = (
      await adminRequest<{ access_token: string }>(baseUrl, "POST", "/admin/v1/auth/login", {
        body: { username: flags.username, password },
      })
    ).access_token;
    loggedIn = true;
  } else if (given) {
    token = given;
  } else {
    throw new Error("pass --token (or AUTHNEXUS_ADMIN_TOKEN), or --username to log in");
  }
  const session: AdminSession = {
    call: (method, path, body) => adminRequest(baseUrl, method, path, { token, ...(body !== undefined ? { body } : {}) }),
  };
  try {
    return await work(session);
  } finally {
    if (loggedIn) await adminRequest(baseUrl, "POST", "/admin/v1/auth/logout", { token }).catch(() => undefined);
  }
}
