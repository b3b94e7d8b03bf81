/**
 * The admin session `authnexus ops login` keeps for later commands: one JSON file in the user's
 * config dir ($AUTHNEXUS_SESSION_FILE, else $XDG_CONFIG_HOME/authnexus/session.json, else
 * ~/.config/authnexus/session.json; %APPDATA%\authnexus\session.json on Windows), mode 0600 in
 * a 0700 directory. It holds bearer tokens, so it is written whole (temporary file + rename)
 * and never world-readable, and refreshing it is serialised by a lock file: the CP's refresh
 * tokens are single-use, and a spent one presented again revokes the whole session, so two
 * commands refreshing at once would log the operator out.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { delay, systemClock, systemScheduler } from "../shared/time/index.js";

export interface StoredSession {
  admin_url: string;
  username: string;
  access_token: string;
  refresh_token: string;
  /** Epoch ms. */
  access_expires_at: number;
  /** Epoch ms. */
  refresh_expires_at: number;
  /** Epoch ms of the login. */
  created_at: number;
}

/** A lock older than this was left by a command that died mid-refresh (ms). */
const STALE_LOCK_MS = 30_000;
/** How long a command waits for another one's refresh (ms). */
const LOCK_WAIT_MS = 15_000;
/** How often a waiting command looks at the lock again (ms). */
const LOCK_POLL_MS = 50;

export function sessionFilePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.AUTHNEXUS_SESSION_FILE) return path.resolve(env.AUTHNEXUS_SESSION_FILE);
  const base =
    env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME)
      ? env.XDG_CONFIG_HOME
      : process.platform === "win32" && env.APPDATA
        ? env.APPDATA
        : path.join(os.homedir(), ".config");
  return path.join(base, "authnexus", "session.json");
}

/** The stored session, or null when there is none; a file that is not one is an error naming it. */
export function readStoredSession(file: string): StoredSession | null {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`cannot read the stored session ${file}: ${(error as Error).message}`);
  }
  let value: Partial<StoredSession>;
  try {
    value = JSON.parse(text) as Partial<StoredSession>;
  } catch {
    throw new Error(`${file} is not a stored session (not JSON): delete it and run \`authnexus ops login\``);
  }
  const strings = ["admin_url", "username", "access_token", "refresh_token"] as const;
  const numbers = ["access_expires_at", "refresh_expires_at", "created_at"] as const;
  if (strings.some((k) => typeof value[k] !== "string") || numbers.some((k) => typeof value[k] !== "number"))
    throw new Error(`${file} is not a stored session: delete it and run \`authnexus ops login\``);
  return value as StoredSession;
}

export function writeStoredSession(file: string, session: StoredSession): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, `${JSON.stringify(session, null, 2)}\n`, { mode: 0o600, flag: "w" });
  fs.chmodSync(temporary, 0o600);
  fs.renameSync(temporary, file);
}

/** Deletes the file; false when there was none. */
export function deleteStoredSession(file: string): boolean {
  try {
    fs.unlinkSync(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
}

/** Runs `work` holding `<file>.lock`; waits for another holder, takes over a stale lock. */
export async function withSessionLock<T>(file: string, work: () => Promise<T>): Promise<T> {
  const lock = `${file}.lock`;
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const giveUpAt = systemClock.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      fs.closeSync(fs.openSync(lock, "wx", 0o600));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const age = lockAge(lock);
    if (age !== null && age > STALE_LOCK_MS) {
      fs.rmSync(lock, { force: true });
      continue;
    }
    if (systemClock.now() >= giveUpAt)
      throw new Error(`another authnexus command holds ${lock}; if none is running, delete that file and try again`);
    await delay(systemScheduler, LOCK_POLL_MS).promise;
  }
  try {
    return await work();
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

function lockAge(lock: string): number | null {
  try {
    return systemClock.now() - fs.statSync(lock).mtimeMs;
  } catch {
    return null;
  }
}
