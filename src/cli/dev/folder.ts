/**
 * The folder a development deployment lives in (default ./authnexus-dev, mode 0700): the CP's
 * data dir (control.db, runtime.db, master.key), the node's unpacked deploy package, the SDK
 * files, the logs, and dev-state.json (0600) — what a rerun needs to reuse everything: the admin
 * password, the node, the application and its secret, the demo user and its password.
 *
 * The state file is the first thing written into a new folder and is rewritten (atomically)
 * before each step that needs it, so a start interrupted anywhere leaves a folder the next start
 * recognises and completes. A non-empty folder without it was not made by `authnexus dev` and is
 * refused rather than taken over. dev.pid keeps two deployments from sharing one folder.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { systemClock } from "../../shared/time/index.js";
import { DevError } from "./errors.js";

export const STATE_FILE_NAME = "dev-state.json";
export const PID_FILE_NAME = "dev.pid";
const STATE_FORMAT = 1;
const DIR_MODE = 0o700;
const SECRET_FILE_MODE = 0o600;

const stateSchema = z.object({
  format: z.literal(STATE_FORMAT),
  created_at: z.string(),
  admin: z.object({ username: z.string().min(1), password: z.string().min(1) }),
  node: z.object({ id: z.string().min(1), name: z.string().min(1) }).optional(),
  application: z.object({ id: z.string().min(1), name: z.string().min(1), secret: z.string().min(1) }).optional(),
  client_certificate_id: z.string().min(1).optional(),
  demo_user: z.object({ username: z.string().min(1), password: z.string().min(1), id: z.string().min(1).optional() }).optional(),
});
export type DevState = z.infer<typeof stateSchema>;

export interface DevFolder {
  dir: string;
  statePath: string;
  state: DevState;
  /** True when this start created the folder's state (a first run). */
  fresh: boolean;
  /** Writes `state` atomically (0600). */
  save(): void;
  /** Removes dev.pid. */
  release(): void;
}

/** Opens (or creates) the folder, loads or creates its state and takes its lock; one clear DevError otherwise. */
export function claimFolder(dir: string, adminUsername: string): DevFolder {
  const statePath = path.join(dir, STATE_FILE_NAME);
  const existing = statOrNull(dir);
  if (existing && !existing.isDirectory()) throw new DevError(`${dir} exists and is not a directory: choose another --dir`);
  if (!existing) fs.mkdirSync(dir, { recursive: true, mode: DIR_MODE });

  let state: DevState | null = statOrNull(statePath) ? loadState(statePath) : null;
  if (!state && fs.readdirSync(dir).length > 0) {
    throw new DevError(
      `${dir} is not empty and holds no ${STATE_FILE_NAME}, so it was not made by \`authnexus dev\`: choose another --dir, or empty it`,
    );
  }
  fs.chmodSync(dir, DIR_MODE);
  const fresh = state === null;
  state ??= {
    format: STATE_FORMAT,
    created_at: new Date(systemClock.now()).toISOString(),
    admin: { username: adminUsername, password: generateAdminPassword(adminUsername) },
  };
  // A new folder gets its state before anything else (even the lock), so whatever happens next
  // it is recognised as ours; the lock holder then writes it again, in case two first starts raced.
  if (fresh) writeSecretJson(statePath, state);
  const release = takeLock(dir);
  const folder: DevFolder = {
    dir,
    statePath,
    state,
    fresh,
    save: () => writeSecretJson(statePath, folder.state),
    release,
  };
  try {
    if (fresh) folder.save();
  } catch (error) {
    release();
    throw error;
  }
  return folder;
}

function loadState(file: string): DevState {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (error) {
    throw new DevError(`${file} cannot be read (${(error as Error).message}): remove the folder to start over`);
  }
  const parsed = stateSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new DevError(
      `${file} is not a valid state file (${issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "invalid"}): remove the folder to start over`,
    );
  }
  return parsed.data;
}

/** dev.pid with this process's pid; a file left by a process that is gone is taken over. */
function takeLock(dir: string): () => void {
  const file = path.join(dir, PID_FILE_NAME);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: "wx", mode: SECRET_FILE_MODE });
      return () => {
        if (readPid(file) === process.pid) fs.rmSync(file, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const pid = readPid(file);
    if (pid !== null && pid !== process.pid && isAlive(pid)) {
      throw new DevError(`another \`authnexus dev\` (pid ${pid}) is using ${dir}: stop it first, or choose another --dir`);
    }
    fs.rmSync(file, { force: true });
  }
  throw new DevError(`cannot take ${file}: another start is racing this one`);
}

function readPid(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, it is just not ours to signal.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Written beside the target and renamed over it: a reader never sees half a file. */
export function writeSecretJson(file: string, value: unknown): void {
  writeAtomically(file, `${JSON.stringify(value, null, 2)}\n`, SECRET_FILE_MODE);
}

export function writeAtomically(file: string, content: string, mode: number): void {
  const temp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(temp, "w", mode);
  try {
    fs.fchmodSync(fd, mode);
    fs.writeFileSync(fd, content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temp, file);
}

/** 24 characters from the base64url alphabet: passes the agent password policy and needs no quoting in a shell. */
export function generateAdminPassword(username: string): string {
  for (;;) {
    const candidate = randomBytes(18).toString("base64url");
    if (new Set(candidate).size >= 5 && !candidate.toLowerCase().includes(username.toLowerCase())) return candidate;
  }
}

/** 16 characters from the base64url alphabet. */
export function generateUserPassword(): string {
  return randomBytes(12).toString("base64url");
}

export function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw error;
  }
}
