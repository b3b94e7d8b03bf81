/**
 * `authnexus ops presence` and `authnexus ops reports <report>`: online users per application
 * and node, and the daily reports, read from a running Control Plane's admin API.
 */
import type { Command } from "commander";
import { type AdminSessionFlags, withAdminSession } from "./admin-session.js";
import { apiCommand, type JsonFlag } from "./ops-common.js";
import { type Column, printJson, printTable, time } from "./output.js";

const REPORTS = ["login-daily", "card-generated-daily", "card-activated-daily", "agent-login-daily"] as const;

interface PresenceAnswer {
  online_users: number;
  apps: Array<{
    app_id: string;
    online_users: number;
    nodes: Array<{ node_id: string; name: string; online_users: number; reported_at: number }>;
  }>;
  nodes: Array<{
    node_id: string;
    name: string;
    status: string;
    stale: boolean;
    reported_at: number;
    online_users: number;
    apps: Record<string, number>;
  }>;
  online_window_ms: number;
}

interface Counts {
  count?: number;
  success?: number;
  failure?: number;
  throttled?: number;
  total?: number;
}

interface ReportAnswer {
  report: string;
  time_zone: string;
  from: string;
  to: string;
  app_id: string | null;
  totals: Counts;
  days: Array<Counts & { date: string; hours: number; by_app?: Record<string, number | Counts>; by_method?: Record<string, Counts> }>;
}

interface ReportFlags extends AdminSessionFlags, JsonFlag {
  from?: string;
  to?: string;
  app?: string;
  tz?: string;
}

/** "app_a 3/1/0" for login counts (success/failure/throttled), "app_a 3" for card counts. */
function breakdown(parts: Record<string, number | Counts> | undefined): string {
  const entries = Object.entries(parts ?? {});
  if (entries.length === 0) return "-";
  return entries
    .map(([name, c]) => (typeof c === "number" ? `${name} ${c}` : `${name} ${c.success ?? 0}/${c.failure ?? 0}/${c.throttled ?? 0}`))
    .join(", ");
}

export function registerOpsReports(ops: Command): void {
  apiCommand(ops, "presence", "online users per application and node, from the nodes' checkins").action(
    async (flags: AdminSessionFlags & JsonFlag) => {
      const presence = await withAdminSession(flags, (s) => s.call<PresenceAnswer>("GET", "/admin/v1/presence"));
      if (flags.json) return printJson(presence);
      printTable(
        [
          { header: "NODE", value: (n: PresenceAnswer["nodes"][number]) => n.name },
          { header: "ID", value: (n) => n.node_id },
          { header: "STATUS", value: (n) => (n.stale ? `${n.status} (stale)` : n.status) },
          { header: "USERS", value: (n) => String(n.online_users) },
          { header: "REPORTED", value: (n) => time(n.reported_at) },
          { header: "APPS", value: (n) => breakdown(n.apps) },
        ],
        presence.nodes,
      );
      process.stdout.write("\n");
      printTable(
        [
          { header: "APP", value: (a: PresenceAnswer["apps"][number]) => a.app_id },
          { header: "USERS", value: (a) => String(a.online_users) },
          { header: "NODES", value: (a) => a.nodes.map((n) => `${n.name} ${n.online_users}`).join(", ") },
        ],
        presence.apps,
      );
      const stale = presence.nodes.filter((n) => n.stale).length;
      process.stdout.write(
        `${presence.online_users} online users on ${presence.nodes.length - stale} online nodes` +
          (stale > 0 ? `; ${stale} stale node(s) not counted (no checkin within ${presence.online_window_ms / 1000} s)\n` : "\n"),
      );
    },
  );

  apiCommand(ops, "reports", "daily reports: counts per local day (from and to are dates, both included)")
    .argument("<report>", REPORTS.join(", "))
    .option("--from <date>", "first day, YYYY-MM-DD (default: 30 days ending with --to)")
    .option("--to <date>", "last day, YYYY-MM-DD (default: today)")
    .option("--app <app-id>", "only this application (not for agent-login-daily)")
    .option("--tz <zone>", "IANA time zone of the days (default: the CP's --report-time-zone)")
    .action(async (report: string, flags: ReportFlags) => {
      if (!(REPORTS as readonly string[]).includes(report)) throw new Error(`unknown report "${report}": use one of ${REPORTS.join(", ")}`);
      const query = new URLSearchParams();
      for (const [name, value] of [
        ["from", flags.from],
        ["to", flags.to],
        ["app_id", flags.app],
        ["tz", flags.tz],
      ] as const)
        if (value !== undefined) query.set(name, value);
      const answer = await withAdminSession(flags, (s) => s.call<ReportAnswer>("GET", `/admin/v1/reports/${report}?${query}`));
      if (flags.json) return printJson(answer);
      type DayRow = ReportAnswer["days"][number];
      const login = answer.totals.total !== undefined;
      const columns: Column<DayRow>[] = [
        { header: "DATE", value: (d) => d.date },
        { header: "HOURS", value: (d) => String(d.hours) },
        ...(login
          ? [
              { header: "SUCCESS", value: (d: DayRow) => String(d.success ?? 0) },
              { header: "FAILURE", value: (d: DayRow) => String(d.failure ?? 0) },
              { header: "THROTTLED", value: (d: DayRow) => String(d.throttled ?? 0) },
              { header: "TOTAL", value: (d: DayRow) => String(d.total ?? 0) },
            ]
          : [{ header: "COUNT", value: (d: DayRow) => String(d.count ?? 0) }]),
        ...(answer.days.some((d) => d.by_method) ? [{ header: "BY_METHOD", value: (d: DayRow) => breakdown(d.by_method) }] : []),
        ...(answer.days.some((d) => d.by_app) ? [{ header: "BY_APP", value: (d: DayRow) => breakdown(d.by_app) }] : []),
      ];
      printTable(columns, answer.days);
      const t = answer.totals;
      const totals = login ? `${t.success ?? 0} success, ${t.failure ?? 0} failure, ${t.throttled ?? 0} throttled` : `${t.count ?? 0}`;
      process.stdout.write(
        `${answer.report} ${answer.from}..${answer.to} (${answer.time_zone}${answer.app_id ? `, app ${answer.app_id}` : ""}): ${totals}\n`,
      );
    });
}
