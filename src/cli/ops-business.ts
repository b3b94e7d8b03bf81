/**
 * `ops users …`, `ops cards …`, `ops sessions …`: business administration of one application
 * (--app) against /admin/v1/applications/:app_id/…. A user's password is read from stdin
 * (--password-stdin) or prompted for, never taken from the command line.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { type AdminSession, type AdminSessionFlags, addAdminSessionFlags, withAdminSession } from "./admin-session.js";
import {
  apiCommand,
  discardSecretFile,
  type JsonFlag,
  openNewSecretFile,
  type Page,
  type PageFlags,
  pageQuery,
  positiveInt,
  seg,
  withPageOptions,
} from "./ops-common.js";
import { type Column, orDash, printFields, printJson, printPageFooter, printTable, time } from "./output.js";
import { promptHidden, readAllStdin } from "./prompt.js";

interface AppFlags extends AdminSessionFlags, JsonFlag {
  app: string;
}

interface UserView {
  id: string;
  username: string;
  email: string | null;
  status: string;
  auth_epoch: number;
  created_at: number;
  last_login_at: number | null;
}

interface UserDetail extends UserView {
  live_sessions: number;
  device_count: number;
  devices: Array<{ device_id: string; created_at: number; last_seen_at: number; live_sessions: number }>;
}

interface CardView {
  id: string;
  batch_id: string | null;
  hint: string;
  status: string;
  duration_seconds: number;
  note: string | null;
  created_at: number;
  activated_at: number | null;
  expires_at: number | null;
  user_id: string | null;
  bound_device_id: string | null;
}

interface SessionView {
  id: string;
  user_id: string | null;
  card_key_id: string | null;
  device_id: string;
  node_id: string | null;
  ip: string | null;
  created_at: number;
  expires_at: number;
  last_heartbeat_at: number | null;
  state: string;
}

const USER_COLUMNS: Column<UserView>[] = [
  { header: "ID", value: (u) => u.id },
  { header: "USERNAME", value: (u) => u.username },
  { header: "STATUS", value: (u) => u.status },
  { header: "EMAIL", value: (u) => orDash(u.email) },
  { header: "CREATED", value: (u) => time(u.created_at) },
  { header: "LAST_LOGIN", value: (u) => time(u.last_login_at) },
];

const CARD_COLUMNS: Column<CardView>[] = [
  { header: "ID", value: (c) => c.id },
  { header: "HINT", value: (c) => c.hint },
  { header: "STATUS", value: (c) => c.status },
  { header: "DURATION", value: (c) => duration(c.duration_seconds) },
  { header: "BATCH", value: (c) => orDash(c.batch_id) },
  { header: "ACTIVATED", value: (c) => time(c.activated_at) },
  { header: "EXPIRES", value: (c) => time(c.expires_at) },
  { header: "USER", value: (c) => orDash(c.user_id) },
  { header: "NOTE", value: (c) => orDash(c.note) },
];

const SESSION_COLUMNS: Column<SessionView>[] = [
  { header: "ID", value: (s) => s.id },
  { header: "STATE", value: (s) => s.state },
  { header: "USER", value: (s) => orDash(s.user_id) },
  { header: "CARD", value: (s) => orDash(s.card_key_id) },
  { header: "DEVICE", value: (s) => s.device_id },
  { header: "NODE", value: (s) => orDash(s.node_id) },
  { header: "IP", value: (s) => orDash(s.ip) },
  { header: "CREATED", value: (s) => time(s.created_at) },
  { header: "LAST_HEARTBEAT", value: (s) => time(s.last_heartbeat_at) },
];

const appPath = (flags: AppFlags, rest: string) => `/admin/v1/applications/${seg(flags.app)}${rest}`;

function appCommand(parent: Command, name: string, description: string): Command {
  return apiCommand(parent, name, description).requiredOption("--app <app_id>", "the application");
}

async function listPage<T>(flags: AppFlags & PageFlags, path: string, columns: Column<T>[]): Promise<void> {
  const page = await withAdminSession(flags, (s) => s.call<Page<T>>("GET", path));
  if (flags.json) return printJson(page);
  printTable(columns, page.items);
  if (process.stdout.isTTY) printPageFooter(page);
}

export function registerOpsBusiness(ops: Command): void {
  registerUsers(ops.command("users").description("an application's end users (--app)"));
  registerCards(ops.command("cards").description("an application's card keys (--app)"));
  registerSessions(ops.command("sessions").description("an application's end-user sessions (--app)"));
}

function registerUsers(users: Command): void {
  withPageOptions(appCommand(users, "list", "list the users, newest first"))
    .option("--q <text>", "part of the username or email")
    .option("--status <status>", "active or banned")
    .action(async (flags: AppFlags & PageFlags & { q?: string; status?: string }) => {
      await listPage<UserView>(flags, appPath(flags, `/users?${pageQuery(flags, { q: flags.q, status: flags.status })}`), USER_COLUMNS);
    });

  appCommand(users, "show", "one user with live sessions and devices")
    .argument("<user_id>", "user id")
    .action(async (id: string, flags: AppFlags) => {
      const user = await withAdminSession(flags, (s) => s.call<UserDetail>("GET", appPath(flags, `/users/${seg(id)}`)));
      if (flags.json) return printJson(user);
      printFields([
        ["id", user.id],
        ["username", user.username],
        ["email", orDash(user.email)],
        ["status", user.status],
        ["auth epoch", String(user.auth_epoch)],
        ["created", time(user.created_at)],
        ["last login", time(user.last_login_at)],
        ["live sessions", String(user.live_sessions)],
        ["devices", String(user.device_count)],
      ]);
      if (user.devices.length > 0) {
        process.stdout.write("\n");
        printTable(
          [
            { header: "DEVICE", value: (d: UserDetail["devices"][number]) => d.device_id },
            { header: "FIRST_SEEN", value: (d) => time(d.created_at) },
            { header: "LAST_SEEN", value: (d) => time(d.last_seen_at) },
            { header: "LIVE_SESSIONS", value: (d) => String(d.live_sessions) },
          ],
          user.devices,
          true,
        );
      }
    });

  appCommand(users, "create", "create a user; the password comes from stdin (--password-stdin) or a prompt")
    .argument("<username>", "the user's username")
    .option("--email <address>", "the user's email")
    .action(async (username: string, flags: AppFlags & { email?: string }) => {
      const password = await userPassword(flags, `Password for ${username}: `);
      const user = await withAdminSession(agentFlags(flags), (s) =>
        s.call<UserView>("POST", appPath(flags, "/users"), { username, password, ...(flags.email ? { email: flags.email } : {}) }),
      );
      if (flags.json) return printJson(user);
      process.stdout.write(`created user ${user.username} (${user.id})\n`);
    });

  appCommand(users, "reset-password", "set a new password: every session of the user ends")
    .argument("<user_id>", "user id")
    .action(async (id: string, flags: AppFlags) => {
      const password = await userPassword(flags, "New password: ");
      const user = await withAdminSession(agentFlags(flags), (s) =>
        s.call<UserView & { revoked_sessions: number }>("POST", appPath(flags, `/users/${seg(id)}/password`), { password }),
      );
      if (flags.json) return printJson(user);
      process.stdout.write(`password of ${user.username} (${user.id}) reset; ${user.revoked_sessions} session(s) revoked\n`);
    });

  appCommand(users, "ban", "ban a user: every session ends and logins are refused")
    .argument("<user_id>", "user id")
    .option("--reason <text>", "why (kept in the user audit log)")
    .action(async (id: string, flags: AppFlags & { reason?: string }) => {
      const user = await withAdminSession(flags, (s) =>
        s.call<UserView & { revoked_sessions: number }>(
          "POST",
          appPath(flags, `/users/${seg(id)}/ban`),
          flags.reason ? { reason: flags.reason } : {},
        ),
      );
      if (flags.json) return printJson(user);
      process.stdout.write(`banned ${user.username} (${user.id}); ${user.revoked_sessions} session(s) revoked\n`);
    });

  appCommand(users, "unban", "lift a ban")
    .argument("<user_id>", "user id")
    .action(async (id: string, flags: AppFlags) => {
      const user = await withAdminSession(flags, (s) => s.call<UserView>("POST", appPath(flags, `/users/${seg(id)}/unban`), {}));
      if (flags.json) return printJson(user);
      process.stdout.write(`unbanned ${user.username} (${user.id})\n`);
    });

  appCommand(users, "delete", "delete a user with their devices, sessions and variables")
    .argument("<user_id>", "user id")
    .option("--yes", "do not ask for confirmation (required when not on a terminal)")
    .action(async (id: string, flags: AppFlags & { yes?: boolean }) => {
      const answer = await withAdminSession(flags, async (s) => {
        if (!flags.yes) await confirmByName(s, appPath(flags, `/users/${seg(id)}`));
        return s.call<{ user_id: string; deleted_sessions: number; removed_devices: number }>(
          "DELETE",
          appPath(flags, `/users/${seg(id)}`),
        );
      });
      if (flags.json) return printJson(answer);
      process.stdout.write(
        `deleted user ${answer.user_id}; ${answer.deleted_sessions} session(s) and ${answer.removed_devices} device binding(s) removed\n`,
      );
    });
}

function registerCards(cards: Command): void {
  appCommand(cards, "generate", "generate a batch of card keys; the codes are shown only in this answer")
    .requiredOption("--count <n>", "how many (1 to 1000)")
    .requiredOption("--duration <time>", "validity from activation: seconds, or a number with s, m, h or d (e.g. 30d)")
    .option("--note <text>", "a note kept with each card")
    .option("--out <file>", "write the codes as CSV (id,code,hint) to this new file, mode 0600, instead of printing them")
    .action(async (flags: AppFlags & { count: string; duration: string; note?: string; out?: string }) => {
      const count = positiveInt("--count", flags.count, 1000);
      const seconds = parseDuration(flags.duration);
      // Opened before the cards exist: the codes are shown once, so a file that cannot be written must fail first.
      const out = flags.out ? openNewSecretFile(flags.out) : null;
      const batch = await withAdminSession(flags, (s) =>
        s.call<{ batch_id: string; duration_seconds: number; cards: Array<{ id: string; code: string; hint: string }> }>(
          "POST",
          appPath(flags, "/card-keys"),
          { count, duration_seconds: seconds, ...(flags.note ? { note: flags.note } : {}) },
        ),
      ).catch((error: unknown) => {
        if (out !== null) discardSecretFile(out, flags.out as string);
        throw error;
      });
      if (out !== null) {
        const csv = ["id,code,hint", ...batch.cards.map((c) => `${c.id},${c.code},${c.hint}`)].join("\n");
        fs.writeSync(out, `${csv}\n`);
        fs.closeSync(out);
      }
      // With --out the codes are in the file only.
      if (flags.json) return printJson(out !== null ? { ...batch, cards: batch.cards.map(({ code: _code, ...rest }) => rest) } : batch);
      if (flags.out) {
        process.stdout.write(`batch ${batch.batch_id}: ${batch.cards.length} card key(s) written to ${flags.out}\n`);
        return;
      }
      printTable(
        [
          { header: "ID", value: (c: { id: string; code: string; hint: string }) => c.id },
          { header: "CODE", value: (c) => c.code },
        ],
        batch.cards,
      );
      if (process.stdout.isTTY) process.stdout.write(`batch ${batch.batch_id}; the codes are not shown again\n`);
    });

  withPageOptions(appCommand(cards, "list", "list the card keys (never their codes), newest first"))
    .option("--status <status>", "unused, active, expired or disabled")
    .option("--batch <batch_id>", "one batch")
    .action(async (flags: AppFlags & PageFlags & { status?: string; batch?: string }) => {
      await listPage<CardView>(
        flags,
        appPath(flags, `/card-keys?${pageQuery(flags, { status: flags.status, batch_id: flags.batch })}`),
        CARD_COLUMNS,
      );
    });

  appCommand(cards, "disable", "disable a card key: its sessions end")
    .argument("<card_id>", "card id")
    .action(async (id: string, flags: AppFlags) => {
      const card = await withAdminSession(flags, (s) =>
        s.call<CardView & { revoked_sessions: number }>("POST", appPath(flags, `/card-keys/${seg(id)}/disable`), {}),
      );
      if (flags.json) return printJson(card);
      process.stdout.write(`disabled card ${card.id} (…${card.hint}); ${card.revoked_sessions} session(s) revoked\n`);
    });

  appCommand(cards, "delete", "delete a card key: its sessions end")
    .argument("<card_id>", "card id")
    .action(async (id: string, flags: AppFlags) => {
      const answer = await withAdminSession(flags, (s) =>
        s.call<{ card_id: string; revoked_sessions: number }>("DELETE", appPath(flags, `/card-keys/${seg(id)}`)),
      );
      if (flags.json) return printJson(answer);
      process.stdout.write(`deleted card ${answer.card_id}; ${answer.revoked_sessions} session(s) revoked\n`);
    });

  addAdminSessionOnly(cards, "export", "a batch as CSV (no codes): to stdout, or to --out")
    .requiredOption("--app <app_id>", "the application")
    .argument("<batch_id>", "batch id")
    .option("--out <file>", "write to this new file instead of stdout")
    .action(async (batchId: string, flags: AppFlags & { out?: string }) => {
      if (flags.out && fs.existsSync(flags.out)) throw new Error(`${flags.out} exists: choose a new file`);
      const { body } = await withAdminSession(flags, (s) => s.download(appPath(flags, `/card-keys/batches/${seg(batchId)}/export`)));
      if (flags.out) {
        fs.writeFileSync(flags.out, body, { flag: "wx" });
        process.stderr.write(`wrote ${flags.out}\n`);
      } else process.stdout.write(body);
    });
}

function registerSessions(sessions: Command): void {
  withPageOptions(appCommand(sessions, "list", "list end-user sessions, newest first"))
    .option("--online", "online sessions only")
    .option("--offline", "every session that is not online")
    .option("--user <user_id>", "one user's sessions")
    .action(async (flags: AppFlags & PageFlags & { online?: boolean; offline?: boolean; user?: string }) => {
      if (flags.online && flags.offline) throw new Error("pass --online or --offline, not both");
      const online = flags.online ? "true" : flags.offline ? "false" : undefined;
      await listPage<SessionView>(flags, appPath(flags, `/sessions?${pageQuery(flags, { online, user_id: flags.user })}`), SESSION_COLUMNS);
    });

  appCommand(sessions, "kick", "revoke one session and log its client out")
    .argument("<session_id>", "session id")
    .action(async (id: string, flags: AppFlags) => {
      const answer = await withAdminSession(flags, (s) =>
        s.call<{ session_id: string; user_id: string | null }>("DELETE", appPath(flags, `/sessions/${seg(id)}`)),
      );
      if (flags.json) return printJson(answer);
      process.stdout.write(`kicked session ${answer.session_id}\n`);
    });

  appCommand(sessions, "revoke", "revoke every session of a user and log their clients out (the password stays good)")
    .argument("<user_id>", "user id")
    .action(async (id: string, flags: AppFlags) => {
      const answer = await withAdminSession(flags, (s) =>
        s.call<{ user_id: string; revoked_sessions: number }>("POST", appPath(flags, `/users/${seg(id)}/sessions/revoke`), {}),
      );
      if (flags.json) return printJson(answer);
      process.stdout.write(`revoked ${answer.revoked_sessions} session(s) of user ${answer.user_id}\n`);
    });
}

/** The session flags without --json (the export prints CSV either way). */
function addAdminSessionOnly(parent: Command, name: string, description: string): Command {
  return addAdminSessionFlags(parent.command(name).description(description));
}

/**
 * In user commands --password-stdin carries the user's password, so the agent cannot also log in
 * with --username and a password from stdin: it uses --token or the stored session instead.
 */
function agentFlags(flags: AdminSessionFlags): AdminSessionFlags {
  return { ...flags, passwordStdin: false };
}

async function userPassword(flags: AdminSessionFlags, question: string): Promise<string> {
  if (flags.passwordStdin) {
    if (flags.username)
      throw new Error("--password-stdin reads the user's password here: authenticate with --token, AUTHNEXUS_ADMIN_TOKEN or `ops login`");
    return readAllStdin();
  }
  const first = await promptHidden(question);
  const second = await promptHidden("Repeat it: ");
  if (first !== second) throw new Error("the passwords do not match");
  return first;
}

async function confirmByName(s: AdminSession, path: string): Promise<void> {
  const user = await s.call<UserView>("GET", path);
  if (!process.stdin.isTTY) throw new Error(`pass --yes to delete user ${user.username} (${user.id}) without a terminal to confirm on`);
  const typed = await promptHidden(`Delete user ${user.username} (${user.id}) for good? Type the username to confirm: `);
  if (typed !== user.username) throw new Error("not confirmed: nothing was deleted");
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

function parseDuration(raw: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(raw.trim());
  const seconds = match ? Number(match[1]) * (DURATION_UNITS[match[2] || "s"] ?? 1) : Number.NaN;
  if (!Number.isSafeInteger(seconds) || seconds <= 0)
    throw new Error(`--duration must be seconds or a number with s, m, h or d (e.g. 30d), got "${raw}"`);
  return seconds;
}

function duration(seconds: number): string {
  if (seconds % 86_400 === 0) return `${seconds / 86_400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}
