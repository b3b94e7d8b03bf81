/**
 * `ops apps …` (applications) and `ops configs …` (config items, and watching a change reach the
 * nodes): the admin API's /applications and /configs, so a walkthrough needs no curl.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { delay, systemClock, systemScheduler } from "../shared/time/index.js";
import { type AdminSessionFlags, withAdminSession } from "./admin-session.js";
import {
  apiCommand,
  discardSecretFile,
  type JsonFlag,
  openNewSecretFile,
  type Page,
  type PageFlags,
  pageQuery,
  positiveInt,
  progressLine,
  seg,
  withPageOptions,
} from "./ops-common.js";
import { type Column, orDash, printJson, printPageFooter, printTable, time } from "./output.js";
import { readAllStdin } from "./prompt.js";

interface AppView {
  app_id: string;
  name: string;
  status: string;
  created_at: number;
  app_secret?: string;
}

interface ConfigItemView {
  type: string;
  scope: string;
  app_id: string | null;
  version: number;
  created_at: number;
  created_by: string | null;
  nodes: { total: number; synced: number; error: number; pending: number; not_sent: number };
}

interface SavedConfig {
  type: string;
  scope: string;
  version: number;
  changed: boolean;
}

/** How often `configs set --wait` looks at the nodes' state (ms), and how long it waits by default (s). */
const WAIT_POLL_MS = 500;
const DEFAULT_WAIT_S = 60;

const APP_COLUMNS: Column<AppView>[] = [
  { header: "APP_ID", value: (a) => a.app_id },
  { header: "NAME", value: (a) => a.name },
  { header: "STATUS", value: (a) => a.status },
  { header: "CREATED", value: (a) => time(a.created_at) },
];

const ITEM_COLUMNS: Column<ConfigItemView>[] = [
  { header: "TYPE", value: (i) => i.type },
  { header: "SCOPE", value: (i) => i.scope },
  { header: "VERSION", value: (i) => String(i.version) },
  { header: "CREATED", value: (i) => time(i.created_at) },
  { header: "BY", value: (i) => orDash(i.created_by) },
  { header: "SYNCED", value: (i) => `${i.nodes.synced}/${i.nodes.total}` },
  { header: "PENDING", value: (i) => String(i.nodes.pending + i.nodes.not_sent) },
  { header: "ERROR", value: (i) => String(i.nodes.error) },
];

export function registerOpsApps(ops: Command): void {
  const apps = ops.command("apps").description("applications: create one, list them");
  apiCommand(apps, "create", "create an application; prints its id (the secret, shown once, goes to --secret-out)")
    .argument("<name>", "the application's name")
    .requiredOption("--secret-out <file>", "write the application secret here (mode 0600; must not exist)")
    .action(async (name: string, flags: { secretOut: string } & AdminSessionFlags & JsonFlag) => {
      const out = flags.secretOut;
      // Opened before the application exists: its secret is shown once, so an unwritable file must fail first.
      const fd = openNewSecretFile(out);
      const app = await withAdminSession(flags, (s) => s.call<AppView>("POST", "/admin/v1/applications", { name })).catch(
        (error: unknown) => {
          discardSecretFile(fd, out);
          throw error;
        },
      );
      fs.writeSync(fd, `${app.app_secret ?? ""}\n`);
      fs.closeSync(fd);
      if (flags.json) return printJson({ ...app, app_secret: undefined, secret_file: out });
      process.stdout.write(`${app.app_id}\n`);
      process.stderr.write(`application ${app.app_id} (${app.name}) created; its secret is in ${out} (shown once)\n`);
    });
  withPageOptions(apiCommand(apps, "list", "list the applications")).action(async (flags: PageFlags) => {
    const page = await withAdminSession(flags, (s) => s.call<Page<AppView>>("GET", `/admin/v1/applications?${pageQuery(flags)}`));
    if (flags.json) return printJson(page);
    printTable(APP_COLUMNS, page.items);
    printPageFooter(page);
  });

  const configs = ops.command("configs").description("config items: set one and watch it reach the nodes, list them");
  apiCommand(configs, "set", "publish a new version of a config item (the content is a JSON file, or - for stdin)")
    .argument("<type>", "config type, e.g. server_runtime_settings, cp_agent_runtime, app_policy")
    .requiredOption("--file <file>", "the content as JSON (- reads stdin)")
    .option("--app <app_id>", "the application, for a per-application type")
    .option("--wait", "wait until every node that is not provisioning applied it (or reported an error)")
    .option("--timeout <seconds>", "with --wait: give up after this long", String(DEFAULT_WAIT_S))
    .action(async (type: string, flags: { file: string; app?: string; wait?: boolean; timeout: string } & AdminSessionFlags & JsonFlag) => {
      const content = parseContent(flags.file === "-" ? await readAllStdin() : fs.readFileSync(flags.file, "utf8"), flags.file);
      const timeoutMs = positiveInt("--timeout", flags.timeout, 86_400) * 1000;
      const path = flags.app ? `/admin/v1/applications/${seg(flags.app)}/configs/${seg(type)}` : `/admin/v1/configs/${seg(type)}`;
      await withAdminSession(flags, async (s) => {
        const saved = await s.call<SavedConfig>("PUT", path, { content });
        if (!flags.wait) {
          if (flags.json) return printJson(saved);
          process.stdout.write(`${saved.type} ${saved.scope}: version ${saved.version}${saved.changed ? "" : " (unchanged)"}\n`);
          return;
        }
        const item = await waitForNodes(() => readItem(s, saved), saved, timeoutMs);
        if (flags.json) return printJson(item);
        const n = item.nodes;
        process.stdout.write(`${saved.type} ${saved.scope}: version ${saved.version} applied by ${n.synced} of ${n.total} node(s)\n`);
        if (n.error > 0) throw new Error(`${n.error} node(s) refused version ${saved.version}: ops nodes show <node-id> names each error`);
      });
    });
  withPageOptions(apiCommand(configs, "list", "list config items at their latest version, with how many nodes applied it"))
    .option("--type <type>", "only this type")
    .option("--app <app_id>", "only this application's items")
    .action(async (flags: PageFlags & { type?: string; app?: string }) => {
      const query = pageQuery(flags, { type: flags.type, app_id: flags.app });
      const page = await withAdminSession(flags, (s) => s.call<Page<ConfigItemView>>("GET", `/admin/v1/configs?${query}`));
      if (flags.json) return printJson(page);
      printTable(ITEM_COLUMNS, page.items);
      printPageFooter(page);
    });
}

function parseContent(text: string, source: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new Error(`${source === "-" ? "stdin" : source} is not JSON: ${(error as Error).message}`);
  }
}

type Session = Parameters<Parameters<typeof withAdminSession>[1]>[0];

async function readItem(s: Session, saved: SavedConfig): Promise<ConfigItemView> {
  const appId = saved.scope.startsWith("app:") ? saved.scope.slice(4) : undefined;
  const query = new URLSearchParams({ type: saved.type, page_size: "200", ...(appId ? { app_id: appId } : {}) });
  const page = await s.call<Page<ConfigItemView>>("GET", `/admin/v1/configs?${query}`);
  const item = page.items.find((i) => i.scope === saved.scope);
  if (!item) throw new Error(`${saved.type} ${saved.scope} is not delivered to nodes (its application is gone?)`);
  return item;
}

/** Reads the item until no node is still pending on this version; a progress line on a terminal. */
async function waitForNodes(read: () => Promise<ConfigItemView>, saved: SavedConfig, timeoutMs: number): Promise<ConfigItemView> {
  const deadline = systemClock.now() + timeoutMs;
  const progress = progressLine();
  try {
    for (;;) {
      const item = await read();
      if (item.version !== saved.version) throw new Error(`a newer version (${item.version}) was published meanwhile`);
      const n = item.nodes;
      const waiting = n.pending + n.not_sent;
      progress.update(`version ${saved.version}: applied by ${n.synced} of ${n.total}, waiting for ${waiting}, errors ${n.error}`);
      if (waiting === 0) return item;
      if (systemClock.now() >= deadline)
        throw new Error(
          `${waiting} node(s) have not applied version ${saved.version} after ${timeoutMs / 1000} s (ops nodes overview shows which are offline)`,
        );
      await delay(systemScheduler, WAIT_POLL_MS).promise;
    }
  } finally {
    progress.done();
  }
}
