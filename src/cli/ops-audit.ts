/**
 * `authnexus ops audit <log>` lists one of the seven audit logs (newest first, filtered), and
 * `authnexus ops audit verify` checks their hash chains through POST /admin/v1/audit/verify,
 * exiting 1 when any chain is broken (the problems are printed, each naming the row).
 */
import type { Command } from "commander";
import { AUDIT_LOG_NAMES, AUDIT_LOGS, type AuditLogName } from "../shared/audit/logs.js";
import { type AdminSessionFlags, withAdminSession } from "./admin-session.js";
import { apiCommand, type JsonFlag, type Page, pageQuery, positiveInt } from "./ops-common.js";
import { type Column, orDash, printJson, printPageFooter, printTable, time } from "./output.js";

type Row = Record<string, unknown>;

const text = (row: Row, field: string) => orDash(row[field] as string | number | null | undefined);
const col = (header: string, field: string): Column<Row> => ({ header, value: (row) => text(row, field) });
const WHEN: Column<Row> = { header: "TIME", value: (row) => time(row.created_at as number) };
const ID = col("ID", "id");

/** What a person reading a terminal wants to see of each log; --json has every field. */
const COLUMNS: Record<AuditLogName, Column<Row>[]> = {
  "audit-logs": [WHEN, col("APP", "app_id"), col("USER", "user_id"), col("EVENT", "event"), col("ACTOR", "actor"), ID],
  "login-logs": [
    WHEN,
    col("APP", "app_id"),
    col("USERNAME", "username"),
    col("METHOD", "method"),
    col("RESULT", "result"),
    col("REASON", "reason"),
    col("NODE", "node_id"),
    col("IP", "ip"),
    ID,
  ],
  "agent-audit-logs": [
    WHEN,
    col("AGENT", "agent_username"),
    col("ACTION", "action"),
    { header: "TARGET", value: (row) => (row.target_id ? `${text(row, "target_type")}:${text(row, "target_id")}` : "-") },
    col("RESULT", "result"),
    col("ERROR", "error_code"),
    ID,
  ],
  "agent-login-logs": [WHEN, col("USERNAME", "username"), col("RESULT", "result"), col("REASON", "reason"), col("IP", "ip"), ID],
  "pki-audit-logs": [
    WHEN,
    col("EVENT", "event"),
    col("PROFILE", "profile"),
    col("SERIAL", "serial_hex"),
    col("CERTIFICATE", "certificate_id"),
    col("ACTOR", "actor"),
    ID,
  ],
  "node-audit-logs": [WHEN, col("NODE", "node_id"), col("EVENT", "event"), col("ACTOR", "actor"), ID],
  "node-auth-events": [WHEN, col("NODE", "node_id"), col("EVENT", "event"), col("PEER", "peer"), col("SERIAL", "cert_serial"), ID],
};

const DESCRIPTIONS: Record<AuditLogName, string> = {
  "audit-logs": "changes made to end users (created, banned, password reset, …)",
  "login-logs": "end-user login attempts on the nodes",
  "agent-audit-logs": "admin operations through the admin API",
  "agent-login-logs": "admin login attempts",
  "pki-audit-logs": "certificates issued and revoked, CAs, PKI jobs",
  "node-audit-logs": "nodes created, disabled, enabled, deleted, packages downloaded",
  "node-auth-events": "node API calls refused (unknown, revoked or mismatched certificates)",
};

interface ListFlags extends AdminSessionFlags, JsonFlag {
  from?: string;
  to?: string;
  actor?: string;
  target?: string;
  action?: string;
  result?: string;
  limit: string;
  page: string;
}

interface VerifyFlags extends AdminSessionFlags, JsonFlag {
  log?: string;
}

interface VerifyAnswer {
  ok: boolean;
  rows_checked: number;
  duration_ms: number;
  logs: Array<{
    log: string;
    ok: boolean;
    chains: number;
    rows_checked: number;
    legacy_unchained: number;
    problems: Array<{ kind: string; log: string; chain_id: string; chain_seq: number; row_id: string; message: string }>;
  }>;
}

export function registerOpsAudit(ops: Command): void {
  const audit = ops.command("audit").description("the audit logs: list one, or verify their hash chains");
  apiCommand(audit, "verify", "check the hash chains of every audit log (exit 1 when a row was edited, deleted or inserted)")
    .option("--log <name>", `only this log: ${AUDIT_LOG_NAMES.join(", ")}`)
    .action(async (flags: VerifyFlags) => {
      if (flags.log !== undefined && !(AUDIT_LOG_NAMES as string[]).includes(flags.log))
        throw new Error(`--log must be one of ${AUDIT_LOG_NAMES.join(", ")}, got "${flags.log}"`);
      const answer = await withAdminSession(flags, (s) =>
        s.call<VerifyAnswer>("POST", "/admin/v1/audit/verify", flags.log ? { log: flags.log } : {}),
      );
      if (flags.json) printJson(answer);
      else printVerify(answer);
      if (!answer.ok) process.exitCode = 1;
    });
  for (const log of AUDIT_LOG_NAMES) {
    apiCommand(audit, log, `list ${DESCRIPTIONS[log]}; newest first`)
      .option("--from <time>", "only entries at or after this time (epoch ms or ISO-8601)")
      .option("--to <time>", "only entries at or before this time (epoch ms or ISO-8601)")
      .option("--actor <who>", "who acted (an agent id, a user name, a node id: see docs/admin-api.md)")
      .option("--target <id>", "what was acted on, where the log has it")
      .option("--action <name>", "the event or action, e.g. user.created, cert.issued, password")
      .option("--result <result>", "success, failure, … where the log has a result")
      .option("--limit <n>", "rows per page (1 to 200)", "50")
      .option("--page <n>", "page number, from 1", "1")
      .action(async (flags: ListFlags) => {
        positiveInt("--limit", flags.limit, 200);
        positiveInt("--page", flags.page);
        const query = pageQuery(
          { page: flags.page, pageSize: flags.limit },
          { from: flags.from, to: flags.to, actor: flags.actor, target: flags.target, action: flags.action, result: flags.result },
        );
        const page = await withAdminSession(flags, (s) => s.call<Page<Row>>("GET", `${AUDIT_LOGS[log].path}?${query}`));
        if (flags.json) return printJson(page);
        printTable(COLUMNS[log], page.items);
        printPageFooter(page);
      });
  }
}

function printVerify(answer: VerifyAnswer): void {
  printTable(
    [
      { header: "LOG", value: (l) => l.log },
      { header: "ROWS", value: (l) => String(l.rows_checked) },
      { header: "CHAINS", value: (l) => String(l.chains) },
      { header: "LEGACY", value: (l) => String(l.legacy_unchained) },
      { header: "STATUS", value: (l) => (l.ok ? "ok" : `BROKEN (${l.problems.length} chain${l.problems.length === 1 ? "" : "s"})`) },
    ],
    answer.logs,
  );
  for (const log of answer.logs) {
    for (const p of log.problems) {
      process.stdout.write(`${p.log}: ${p.kind} row ${p.row_id} (chain ${p.chain_id}, seq ${p.chain_seq}): ${p.message}\n`);
    }
  }
  process.stdout.write(
    answer.ok
      ? `verified ${answer.rows_checked} rows in ${answer.duration_ms} ms: every chain is intact\n`
      : `verified ${answer.rows_checked} rows in ${answer.duration_ms} ms: TAMPERING DETECTED\n`,
  );
}
