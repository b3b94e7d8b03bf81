/**
 * `ops login` and `ops logout`: a stored admin session (session-store.ts) that every admin
 * command (pki …, ops …) uses when it is given no --token, AUTHNEXUS_ADMIN_TOKEN or --username.
 */
import readline from "node:readline";
import type { Command } from "commander";
import { systemClock } from "../shared/time/index.js";
import { AdminApiError, adminRequest } from "./admin-client.js";
import { defaultAdminUrl, storedFromTokens } from "./admin-session.js";
import type { JsonFlag } from "./ops-common.js";
import { printJson, time } from "./output.js";
import { promptHidden, readAllStdin } from "./prompt.js";
import { deleteStoredSession, readStoredSession, sessionFilePath, withSessionLock, writeStoredSession } from "./session-store.js";

interface LoginFlags extends JsonFlag {
  adminUrl?: string;
  username?: string;
  passwordStdin?: boolean;
}

interface TokenPair {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  refresh_expires_in: number;
}

export function registerOpsSession(ops: Command): void {
  ops
    .command("login")
    .description("log in as an agent and keep the session for later commands (refreshed as needed; `ops logout` ends it)")
    .option("--admin-url <url>", "admin API base URL [env AUTHNEXUS_ADMIN_URL]")
    .option("--username <name>", "agent username (prompted for on a terminal when absent)")
    .option("--password-stdin", "read the password from stdin instead of prompting")
    .option("--json", "print where the session is kept and until when, as JSON (never the tokens)")
    .action(async (flags: LoginFlags) => {
      const adminUrl = flags.adminUrl ?? (process.env.AUTHNEXUS_ADMIN_URL || defaultAdminUrl());
      const username = flags.username ?? (await promptLine("Username: "));
      if (!username) throw new Error("pass --username");
      const password = flags.passwordStdin ? await readAllStdin() : await promptHidden(`Password for ${username}: `);
      const file = sessionFilePath();
      const tokens = await adminRequest<TokenPair>(adminUrl, "POST", "/admin/v1/auth/login", { body: { username, password } });
      const stored = storedFromTokens(adminUrl, username, tokens, systemClock.now());
      const replaced = await withSessionLock(file, async () => {
        const previous = safeRead(file);
        writeStoredSession(file, stored);
        return previous;
      });
      // The session this one replaces is ended on its server (best effort: it may be gone already).
      if (replaced && replaced.access_token !== stored.access_token)
        await adminRequest(replaced.admin_url, "POST", "/admin/v1/auth/logout", { token: replaced.access_token }).catch(() => undefined);
      const summary = {
        admin_url: adminUrl,
        username,
        session_file: file,
        access_expires_at: stored.access_expires_at,
        refresh_expires_at: stored.refresh_expires_at,
      };
      if (flags.json) return printJson(summary);
      process.stdout.write(
        `logged in to ${adminUrl} as ${username}; the session is kept in ${file} (mode 0600) and renewed as commands use it, ` +
          `until ${time(stored.refresh_expires_at)} if unused (ops logout ends it)\n`,
      );
    });

  ops
    .command("logout")
    .description("end the stored session on the Control Plane and delete its file")
    .option("--json", "print the outcome as JSON")
    .action(async (flags: JsonFlag) => {
      const file = sessionFilePath();
      const outcome = await withSessionLock(file, async () => {
        const stored = safeRead(file);
        if (!stored) {
          deleteStoredSession(file);
          return { session_file: file, admin_url: null, revoked: false, note: "no stored session" };
        }
        let revoked = false;
        let note = "the session was ended on the Control Plane";
        try {
          let token = stored.access_token;
          if (stored.access_expires_at <= systemClock.now())
            token = (
              await adminRequest<TokenPair>(stored.admin_url, "POST", "/admin/v1/auth/refresh", {
                body: { refresh_token: stored.refresh_token },
              })
            ).access_token;
          await adminRequest(stored.admin_url, "POST", "/admin/v1/auth/logout", { token });
          revoked = true;
        } catch (error) {
          note =
            error instanceof AdminApiError && error.status === 401
              ? "the session had already ended on the Control Plane"
              : `the Control Plane could not be told (${error instanceof Error ? error.message : String(error)}); the session ends by itself when its tokens expire`;
        }
        deleteStoredSession(file);
        return { session_file: file, admin_url: stored.admin_url, revoked, note };
      });
      if (flags.json) return printJson(outcome);
      if (outcome.admin_url === null) process.stdout.write(`not logged in (no ${file})\n`);
      else process.stdout.write(`logged out of ${outcome.admin_url}: ${outcome.note}; deleted ${file}\n`);
    });
}

/** A file that cannot be read as a session is replaced (login) or removed (logout), not an obstacle. */
function safeRead(file: string) {
  try {
    return readStoredSession(file);
  } catch {
    return null;
  }
}

async function promptLine(question: string): Promise<string> {
  if (!process.stdin.isTTY) throw new Error("no terminal to prompt on: pass --username");
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  try {
    return (await new Promise<string>((resolve) => rl.question(question, resolve))).trim();
  } finally {
    rl.close();
  }
}
