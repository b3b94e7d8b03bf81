import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { LEAF_VALIDITY_DAYS } from "../shared/config/defaults.js";
import { SDK_CONFIG_FILES } from "../shared/sdk-config.js";
import { delay, systemClock, systemScheduler } from "../shared/time/index.js";
import { AdminApiError } from "./admin-client.js";
import { type AdminSessionFlags, addAdminSessionFlags, withAdminSession } from "./admin-session.js";
import { DEFAULT_ROTATION_TIMEOUT_S, followRotation, type RotationView } from "./follow-rotation.js";
import { type Column, day, orDash, printFields, printJson, printPageFooter, printTable, time } from "./output.js";
import { checkSdkOutputDir, writeSdkFiles } from "./sdk-files.js";

interface CaItem {
  profile: string;
  status: string;
  subject: string;
  not_after: number;
  fingerprint_sha256: string;
  certificate_pem: string;
}

interface CertItem {
  id: string;
  serial: string;
  profile: string;
  subject: string;
  not_after: number;
  status: string;
  owner_type: string | null;
  owner_id: string | null;
}

interface ExpiringItem {
  id: string;
  serial: string;
  profile: string;
  owner_type: string | null;
  owner_id: string | null;
  not_after: number;
  days_left: number;
}

interface JobItem {
  id: string;
  kind: string;
  status: string;
  target_type: string | null;
  target_id: string | null;
  attempts: number;
  max_attempts: number;
  last_error: string | null;
  run_after: number;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  created_by: string | null;
  result: unknown;
}

interface AuditItem {
  id: string;
  created_at: number;
  event: string;
  actor: string;
  certificate_id: string | null;
  serial_hex: string | null;
  profile: string | null;
  job_id: string | null;
  detail: unknown;
}

interface Page<T> {
  items: T[];
  page: number;
  page_size: number;
  total: number;
}

interface IssuedClientCert {
  certificate_id: string;
  serial: string;
  not_after: number;
  certificate_pem: string;
  private_key_pem: string;
  server_ca_pem: string;
  ocsp_signer_ca_pem: string;
  sdk_config: { app_id: string; nodes: { host: string; port: number }[]; files: Record<string, string> };
}

interface IssueClientFlags extends AdminSessionFlags {
  app: string;
  out: string;
  commonName?: string;
  validityDays?: string;
  json?: boolean;
}

interface JsonFlag {
  json?: boolean;
}

interface PageFlags extends AdminSessionFlags, JsonFlag {
  page: string;
  pageSize: string;
}

const owner = (row: { owner_type: string | null; owner_id: string | null }) => `${orDash(row.owner_type)}:${orDash(row.owner_id)}`;

const CERT_COLUMNS: Column<CertItem>[] = [
  { header: "ID", value: (c) => c.id },
  { header: "SERIAL", value: (c) => c.serial },
  { header: "PROFILE", value: (c) => c.profile },
  { header: "STATUS", value: (c) => c.status },
  { header: "NOT_AFTER", value: (c) => day(c.not_after) },
  { header: "OWNER", value: owner },
  { header: "SUBJECT", value: (c) => c.subject },
];

const EXPIRING_COLUMNS: Column<ExpiringItem>[] = [
  { header: "ID", value: (c) => c.id },
  { header: "SERIAL", value: (c) => c.serial },
  { header: "PROFILE", value: (c) => c.profile },
  { header: "OWNER", value: owner },
  { header: "NOT_AFTER", value: (c) => time(c.not_after) },
  { header: "DAYS_LEFT", value: (c) => String(c.days_left) },
];

const JOB_COLUMNS: Column<JobItem>[] = [
  { header: "ID", value: (j) => j.id },
  { header: "KIND", value: (j) => j.kind },
  { header: "STATUS", value: (j) => j.status },
  { header: "ATTEMPTS", value: (j) => `${j.attempts}/${j.max_attempts}` },
  { header: "TARGET", value: (j) => `${orDash(j.target_type)}:${orDash(j.target_id)}` },
  { header: "CREATED", value: (j) => time(j.created_at) },
  { header: "LAST_ERROR", value: (j) => orDash(j.last_error) },
];

const AUDIT_COLUMNS: Column<AuditItem>[] = [
  { header: "TIME", value: (a) => time(a.created_at) },
  { header: "EVENT", value: (a) => a.event },
  { header: "ACTOR", value: (a) => a.actor },
  { header: "CERTIFICATE", value: (a) => orDash(a.certificate_id) },
  { header: "SERIAL", value: (a) => orDash(a.serial_hex) },
  { header: "PROFILE", value: (a) => orDash(a.profile) },
  { header: "JOB", value: (a) => orDash(a.job_id) },
  { header: "DETAIL", value: (a) => (a.detail === null ? "-" : JSON.stringify(a.detail)) },
];

export function registerPki(program: Command): void {
  const pki = program.command("pki").description("certificate operations against a running Control Plane");

  command(pki, "cas", "list the CA certificates; --out-dir writes <profile>.pem files")
    .option("--out-dir <dir>", "write each active CA certificate as <dir>/<profile>.pem")
    .action(async (flags: AdminSessionFlags & JsonFlag & { outDir?: string }) => {
      const cas = await withAdminSession(flags, (s) => s.call<{ items: CaItem[] }>("GET", "/admin/v1/pki/cas"));
      if (flags.outDir) writeCaFiles(flags.outDir, cas.items);
      if (flags.json) return printJson(cas);
      printTable(
        [
          { header: "PROFILE", value: (ca: CaItem) => ca.profile },
          { header: "STATUS", value: (ca) => ca.status },
          { header: "NOT_AFTER", value: (ca) => day(ca.not_after) },
          { header: "SHA256", value: (ca) => ca.fingerprint_sha256 },
        ],
        cas.items,
      );
    });

  pageOptions(command(pki, "certs", "list the certificate inventory"))
    .option("--status <status>", "valid, revoked or expired")
    .option("--profile <profile>", "cp_server, node_server, node_client or app_client")
    .option("--ca-profile <profile>", "only certificates of this CA")
    .option("--owner-type <type>", "e.g. control_plane, node, application")
    .option("--owner-id <id>", "e.g. a node or application id")
    .action(async (flags: PageFlags & { status?: string; profile?: string; caProfile?: string; ownerType?: string; ownerId?: string }) => {
      const query = pageQuery(flags, {
        status: flags.status,
        profile: flags.profile,
        ca_profile: flags.caProfile,
        owner_type: flags.ownerType,
        owner_id: flags.ownerId,
      });
      await listPage<CertItem>(flags, `/admin/v1/pki/certs?${query}`, CERT_COLUMNS);
    });

  pageOptions(command(pki, "expiring", "list the active certificates that expire within --days, soonest first"))
    .option("--days <n>", "how many days ahead to look (1 to 3650)", "30")
    .action(async (flags: PageFlags & { days: string }) => {
      await listPage<ExpiringItem>(flags, `/admin/v1/pki/expiring?${pageQuery(flags, { days: flags.days })}`, EXPIRING_COLUMNS);
    });

  command(pki, "revoke", "revoke a certificate; OCSP answers revoked from the next request")
    .argument("<certificate-id>", "id from `pki certs`")
    .option("--reason <reason>", "RFC 5280 reason, e.g. keyCompromise, superseded", "unspecified")
    .action(async (id: string, flags: AdminSessionFlags & JsonFlag & { reason: string }) => {
      const cert = await withAdminSession(flags, (s) =>
        s.call<CertItem>("POST", `/admin/v1/pki/certs/${encodeURIComponent(id)}/revoke`, { reason: flags.reason }),
      );
      if (flags.json) return printJson(cert);
      process.stdout.write(`revoked ${cert.id} (serial ${cert.serial})\n`);
    });

  registerJobs(pki);
  registerCaRotate(pki);
  registerNodeRotate(pki);

  pageOptions(command(pki, "audit", "list the PKI audit log: issuance, revocation, job state changes; newest first"))
    .option("--from <time>", "only entries at or after this time (epoch ms or ISO-8601)")
    .option("--to <time>", "only entries at or before this time (epoch ms or ISO-8601)")
    .option("--event <event>", "e.g. cert.issued, cert.revoked, job.state_changed")
    .option("--certificate <id>", "only entries about this certificate id")
    .option("--serial <hex>", "only entries about this certificate serial")
    .option("--job <id>", "only entries about this PKI job")
    .action(
      async (flags: PageFlags & { from?: string; to?: string; event?: string; certificate?: string; serial?: string; job?: string }) => {
        const query = pageQuery(flags, {
          from: flags.from,
          to: flags.to,
          event: flags.event,
          certificate_id: flags.certificate,
          serial: flags.serial,
          job_id: flags.job,
        });
        await listPage<AuditItem>(flags, `/admin/v1/pki/audit-logs?${query}`, AUDIT_COLUMNS);
      },
    );

  addAdminSessionFlags(
    pki
      .command("issue-client")
      .description("issue an application client certificate and write it with an SDK configuration into a new directory"),
  )
    .requiredOption("--app <id>", "application id")
    .requiredOption("--out <dir>", "directory to write into (created 0700; existing files are never overwritten)")
    .option("--common-name <cn>", "certificate subject CN (default: the application's name)")
    .option("--validity-days <n>", `days the certificate is valid (default and maximum ${LEAF_VALIDITY_DAYS})`)
    .option("--json", "print the written paths and the certificate id as JSON")
    .action(async (flags: IssueClientFlags) => {
      const body = {
        ...(flags.commonName !== undefined ? { common_name: flags.commonName } : {}),
        ...(flags.validityDays !== undefined ? { validity_days: wholeNumber(flags.validityDays, "--validity-days") } : {}),
      };
      checkSdkOutputDir(flags.out);
      const issued = await withAdminSession(flags, (s) =>
        s.call<IssuedClientCert>("POST", `/admin/v1/applications/${encodeURIComponent(flags.app)}/client-certs`, body),
      );
      const unexpected = Object.entries(SDK_CONFIG_FILES).filter(([key, name]) => issued.sdk_config.files[key] !== name);
      if (unexpected.length > 0) {
        throw new Error(
          `the CP's SDK configuration names other files than this CLI writes; certificate ${issued.certificate_id} was issued but not written`,
        );
      }
      let written: ReturnType<typeof writeSdkFiles>;
      try {
        written = writeSdkFiles(flags.out, {
          client_cert: issued.certificate_pem,
          client_key: issued.private_key_pem,
          server_ca: issued.server_ca_pem,
          ocsp_signer_ca: issued.ocsp_signer_ca_pem,
          sdk_config: `${JSON.stringify(issued.sdk_config, null, 2)}\n`,
        });
      } catch (error) {
        throw new Error(
          `certificate ${issued.certificate_id} was issued but could not be written (${(error as Error).message}); revoke it with \`authnexus pki revoke ${issued.certificate_id}\``,
        );
      }
      if (issued.sdk_config.nodes.length === 0) {
        process.stderr.write(
          'warning: no node is active yet, so authnexus-sdk.json lists no nodes; the SDK refuses it until its "nodes" names at least one {host, port}\n',
        );
      }
      if (flags.json) {
        const files = Object.fromEntries(written.map((f) => [f.key, f.path]));
        process.stdout.write(`${JSON.stringify({ certificate_id: issued.certificate_id, files })}\n`);
        return;
      }
      process.stdout.write(
        `Issued certificate ${issued.certificate_id} (serial ${issued.serial}) for application ${issued.sdk_config.app_id}, valid until ${day(issued.not_after)}.\n`,
      );
      for (const f of written) process.stdout.write(`  wrote ${f.path}  (${f.mode.toString(8).padStart(4, "0")}, ${f.what})\n`);
      process.stdout.write(
        `The SDK configuration lists ${issued.sdk_config.nodes.length} node(s). The application secret is not in these files: supply it to the SDK separately.\n`,
      );
    });
}

function wholeNumber(value: string, flag: string): number {
  if (!/^\d{1,6}$/.test(value)) throw new Error(`${flag} must be a whole number of days`);
  return Number(value);
}

/** `pki jobs list|show|retry|cancel`: the durable PKI job queue. */
function registerJobs(pki: Command): void {
  const jobs = pki.command("jobs").description("PKI jobs: list, show, retry a failed one, cancel a pending one");
  pageOptions(command(jobs, "list", "list PKI jobs, newest first"))
    .option("--status <status>", "pending, running, succeeded, failed or cancelled")
    .option("--kind <kind>", "e.g. node_onboard")
    .option("--target <id>", "only jobs for this target (e.g. a node id)")
    .action(async (flags: PageFlags & { status?: string; kind?: string; target?: string }) => {
      const query = pageQuery(flags, { status: flags.status, kind: flags.kind, target_id: flags.target });
      await listPage<JobItem>(flags, `/admin/v1/pki/jobs?${query}`, JOB_COLUMNS);
    });
  command(jobs, "show", "show one PKI job")
    .argument("<job-id>", "id from `pki jobs list`")
    .action(async (id: string, flags: AdminSessionFlags & JsonFlag) => {
      const job = await withAdminSession(flags, (s) => s.call<JobItem>("GET", jobPath(id)));
      if (flags.json) return printJson(job);
      printJob(job);
    });
  for (const [action, description] of [
    ["retry", "run a failed or cancelled job again with a fresh set of attempts"],
    ["cancel", "cancel a pending job"],
  ] as const) {
    command(jobs, action, description)
      .argument("<job-id>", "id from `pki jobs list`")
      .action(async (id: string, flags: AdminSessionFlags & JsonFlag) => {
        const job = await withAdminSession(flags, (s) => s.call<JobItem>("POST", `${jobPath(id)}/${action}`, {}));
        if (flags.json) return printJson(job);
        process.stdout.write(`job ${job.id} is now ${job.status}\n`);
      });
  }
}

interface CaSummaryItem {
  id: string;
  status: string;
  subject: string;
  serial: string;
  not_after: number;
}

interface NodeProgressItem {
  node_id: string;
  name: string;
  status: string;
  last_checkin_at: number | null;
  applied: number;
  pending: number;
  errors: number;
  done: boolean;
}

interface RotationItem {
  id: string;
  ca_profile: string;
  phase: string;
  open: boolean;
  next_steps: string[];
  old_ca: CaSummaryItem;
  new_ca: CaSummaryItem;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  created_by: string | null;
  detail: Record<string, unknown>;
  progress: { items: number; nodes_total: number; nodes_done: number; ready: boolean; nodes: NodeProgressItem[] } | null;
  /** Retire and rollback only. */
  revoked_certificates?: number;
}

export const CA_ROTATE_PHASES = ["prepare", "publish", "status", "switch", "retire", "rollback"] as const;
type CaRotatePhase = (typeof CA_ROTATE_PHASES)[number];

interface CaRotateFlags extends AdminSessionFlags, JsonFlag {
  phase?: string;
  force?: boolean;
  revokeLeaves?: boolean;
  waitReady?: string;
}

/** How often `--wait-ready` reads the rotation. */
const READY_POLL_MS = 2000;

const NODE_PROGRESS_COLUMNS: Column<NodeProgressItem>[] = [
  { header: "NODE", value: (n) => n.node_id },
  { header: "NAME", value: (n) => n.name },
  { header: "STATUS", value: (n) => n.status },
  { header: "APPLIED", value: (n) => String(n.applied) },
  { header: "PENDING", value: (n) => String(n.pending) },
  { header: "ERRORS", value: (n) => String(n.errors) },
  { header: "DONE", value: (n) => (n.done ? "yes" : "no") },
  { header: "LAST_CHECKIN", value: (n) => time(n.last_checkin_at) },
];

/** `pki ca rotate <ca> [--phase …]`: one step of a CA rotation, or the open rotation's status. */
function registerCaRotate(pki: Command): void {
  const ca = pki.command("ca").description("CA operations");
  command(ca, "rotate", "rotate a CA in phases: prepare, publish, switch, retire (or rollback); without --phase, show the open rotation")
    .argument("<ca>", "CA profile: app_client_ca, tcp_server_ca, cp_server_ca or cp_node_client_ca")
    .option("--phase <phase>", `one of ${CA_ROTATE_PHASES.join(", ")} (default: status)`)
    .option("--force", "with --phase switch or retire: go on although some nodes are not done (see --phase status)")
    .option("--revoke-leaves", "with --phase retire: revoke every certificate of the old CA not yet revoked")
    .option("--wait-ready <seconds>", "with --phase status: wait until every node is done (exit 1 when the time runs out)")
    .action(async (caProfile: string, flags: CaRotateFlags) => {
      const phase = (flags.phase ?? "status") as CaRotatePhase;
      if (!CA_ROTATE_PHASES.includes(phase)) throw new Error(`--phase must be one of ${CA_ROTATE_PHASES.join(", ")}`);
      if (flags.force && phase !== "switch" && phase !== "retire") throw new Error("--force goes with --phase switch or retire only");
      if (flags.revokeLeaves && phase !== "retire") throw new Error("--revoke-leaves goes with --phase retire only");
      const waitMs = flags.waitReady === undefined ? null : Number(flags.waitReady) * 1000;
      if (waitMs !== null && phase !== "status") throw new Error("--wait-ready goes with --phase status only");
      if (waitMs !== null && !(Number.isInteger(waitMs) && waitMs > 0))
        throw new Error("--wait-ready must be a whole number of seconds, at least 1");
      const base = "/admin/v1/pki/ca-rotations";
      const answer = await withAdminSession(flags, async (s): Promise<RotationItem | Page<RotationItem>> => {
        if (phase === "prepare") return s.call<RotationItem>("POST", base, { ca: caProfile });
        const open = await s.call<Page<RotationItem>>("GET", `${base}?${new URLSearchParams({ ca: caProfile, open: "true" })}`);
        const current = open.items[0];
        if (!current) {
          if (phase === "status") return open;
          throw new Error(`no rotation of ${caProfile} is open; start one with --phase prepare`);
        }
        const path = `${base}/${encodeURIComponent(current.id)}`;
        if (phase === "status" && waitMs !== null) return waitUntilReady(() => s.call<RotationItem>("GET", path), waitMs);
        if (phase === "status") return s.call<RotationItem>("GET", path);
        if (phase === "switch") return s.call<RotationItem>("POST", `${path}/switch`, { force: flags.force === true });
        if (phase === "retire")
          return s.call<RotationItem>("POST", `${path}/retire`, {
            revoke_leaves: flags.revokeLeaves === true,
            force: flags.force === true,
          });
        return s.call<RotationItem>("POST", `${path}/${phase}`, {});
      });
      if (flags.json) return printJson(answer);
      if ("items" in answer) {
        process.stdout.write(`no rotation of ${caProfile} is open\n`);
        return;
      }
      printRotation(answer, phase);
    });
}

/** Reads the rotation until its progress is ready; fails with the rotation's state when `waitMs` runs out. */
async function waitUntilReady(read: () => Promise<RotationItem>, waitMs: number): Promise<RotationItem> {
  const deadline = systemClock.now() + waitMs;
  for (;;) {
    const rotation = await read();
    if (rotation.progress?.ready) return rotation;
    if (systemClock.now() >= deadline) {
      const p = rotation.progress;
      const left = p ? p.nodes.filter((n) => !n.done).map((n) => n.name) : [];
      throw new Error(
        `not every node is done after ${waitMs / 1000} s (${p ? `${p.nodes_done} of ${p.nodes_total}` : "no progress yet"}${left.length ? `; waiting for ${left.join(", ")}` : ""})`,
      );
    }
    await delay(systemScheduler, READY_POLL_MS).promise;
  }
}

const STEP_DONE: Record<CaRotatePhase, string> = {
  prepare: "prepared: the new CA exists and does not sign yet; next: --phase publish",
  publish: "published: both CAs are trusted (see the steps for this CA in docs/operations.md); when every node is done, --phase switch",
  status: "",
  switch: "switched: the new CA signs from now on; old certificates keep working until --phase retire",
  retire: "retired: only the new CA is trusted; old-CA certificates are refused once every party has applied it",
  rollback: "rolled back: the old CA signs again and is the only one trusted",
};

function printRotation(r: RotationItem, phase: CaRotatePhase): void {
  if (phase !== "status") process.stdout.write(`${STEP_DONE[phase]}\n`);
  if (r.revoked_certificates !== undefined) {
    const whose = phase === "rollback" ? "issued by the new CA" : "of the old CA";
    process.stdout.write(`${r.revoked_certificates} certificate(s) ${whose} revoked (superseded)\n`);
  }
  printFields([
    ["id", r.id],
    ["ca", r.ca_profile],
    ["phase", r.phase],
    ["next steps", r.next_steps.length > 0 ? r.next_steps.join(", ") : "-"],
    ["old CA", `${r.old_ca.id} (${r.old_ca.status}) ${r.old_ca.subject}`],
    ["new CA", `${r.new_ca.id} (${r.new_ca.status}) ${r.new_ca.subject}`],
    ["created", `${time(r.created_at)} by ${orDash(r.created_by)}`],
    ["finished", time(r.finished_at)],
  ]);
  if (!r.progress) return;
  const p = r.progress;
  process.stdout.write(
    `nodes: ${p.nodes_done} of ${p.nodes_total} done${p.ready ? "" : ` (${r.phase === "switched" ? "retire" : "switch"} waits for the rest, or --force)`}\n`,
  );
  if (p.nodes.length > 0) printTable(NODE_PROGRESS_COLUMNS, p.nodes);
}

interface NodeRotateFlags extends AdminSessionFlags, JsonFlag {
  /** false with --no-wait. */
  wait: boolean;
  timeout: string;
}

const NODE_ROTATION_COLUMNS: Column<RotationView>[] = [
  { header: "ID", value: (r) => r.id },
  { header: "STATUS", value: (r) => r.status },
  { header: "REASON", value: (r) => r.reason },
  { header: "CREATED", value: (r) => time(r.created_at) },
  { header: "APPLIED", value: (r) => time(r.acked_at) },
  { header: "RETIRE_AT", value: (r) => time(r.retire_at) },
  { header: "COMPLETED", value: (r) => time(r.completed_at) },
  { header: "JOBS", value: (r) => (r.jobs.length === 0 ? "-" : r.jobs.map((j) => `${j.id}:${j.status}`).join(",")) },
];

/** `pki rotate <nid>` (queue a rotation of a node's certificates and follow it) and `pki rotations <nid>`. */
function registerNodeRotate(pki: Command): void {
  command(pki, "rotate", "rotate a node's server and client certificates, and follow the rotation until the node applied them")
    .argument("<node-id>", "the node's id")
    .option("--no-wait", "print the rotation's id and URL and return at once")
    .option("--timeout <seconds>", "stop following after this long (the rotation goes on)", String(DEFAULT_ROTATION_TIMEOUT_S))
    .action(async (nodeId: string, flags: NodeRotateFlags) => {
      const timeoutS = flags.wait ? positiveSeconds(flags.timeout, "--timeout") : 0;
      const base = `/admin/v1/nodes/${encodeURIComponent(nodeId)}/certs`;
      const outcome = await withAdminSession(flags, async (s) => {
        const queued = await s.call<RotationView & { rotation_url: string }>("POST", `${base}/rotate`, {});
        if (!flags.wait) return { queued, followed: null };
        // With --json stdout carries the final view only; progress goes to a person watching stderr.
        const print = flags.json
          ? (line: string) => {
              if (process.stderr.isTTY) process.stderr.write(`${line}\n`);
            }
          : (line: string) => process.stdout.write(`${line}\n`);
        print(
          `rotation ${queued.id} of node ${queued.node_id} queued; following ${queued.rotation_url} (interrupting stops following, not the rotation)`,
        );
        const followed = await followRotation(queued, {
          get: (path) => s.call<RotationView>("GET", path),
          print,
          now: () => systemClock.now(),
          sleep: (ms) => delay(systemScheduler, ms).promise,
          timeoutMs: timeoutS * 1000,
          transient: (error) => error instanceof AdminApiError && (error.status === 0 || error.status >= 500),
        });
        return { queued, followed };
      });
      const { queued, followed } = outcome;
      if (!followed) {
        if (flags.json) return printJson(queued);
        process.stdout.write(`rotation ${queued.id} of node ${queued.node_id} queued (${queued.status})\n${queued.rotation_url}\n`);
        return;
      }
      if (flags.json) printJson(followed.view);
      if (!followed.ok) throw new Error(followed.message);
    });

  command(pki, "rotations", "list a node's certificate rotations, newest first")
    .argument("<node-id>", "the node's id")
    .action(async (nodeId: string, flags: AdminSessionFlags & JsonFlag) => {
      const list = await withAdminSession(flags, (s) =>
        s.call<{ items: RotationView[] }>("GET", `/admin/v1/nodes/${encodeURIComponent(nodeId)}/certs/rotations`),
      );
      if (flags.json) return printJson(list);
      printTable(NODE_ROTATION_COLUMNS, list.items);
    });
}

function positiveSeconds(value: string, flag: string): number {
  if (!/^\d{1,6}$/.test(value) || Number(value) === 0) throw new Error(`${flag} must be a whole number of seconds, at least 1`);
  return Number(value);
}

function printJob(job: JobItem): void {
  printFields([
    ["id", job.id],
    ["kind", job.kind],
    ["status", job.status],
    ["target", `${orDash(job.target_type)}:${orDash(job.target_id)}`],
    ["attempts", `${job.attempts}/${job.max_attempts}`],
    ["created", `${time(job.created_at)} by ${orDash(job.created_by)}`],
    ["started", time(job.started_at)],
    ["finished", time(job.finished_at)],
    ["run after", time(job.run_after)],
    ["last error", orDash(job.last_error)],
    ["result", job.result === null ? "-" : JSON.stringify(job.result)],
  ]);
}

const jobPath = (id: string) => `/admin/v1/pki/jobs/${encodeURIComponent(id)}`;

/** A subcommand with the admin session flags and --json. */
function command(parent: Command, name: string, description: string): Command {
  return addAdminSessionFlags(parent.command(name).description(description)).option("--json", "print the admin API's JSON answer");
}

function pageOptions(cmd: Command): Command {
  return cmd.option("--page <n>", "page number", "1").option("--page-size <n>", "rows per page (at most 200)", "50");
}

/** page, page_size and every filter that was given. */
function pageQuery(flags: PageFlags, filters: Record<string, string | undefined>): URLSearchParams {
  const query = new URLSearchParams({ page: flags.page, page_size: flags.pageSize });
  for (const [name, value] of Object.entries(filters)) if (value !== undefined) query.set(name, value);
  return query;
}

/** GETs one page and prints it as a table with a footer, or as JSON. */
async function listPage<T>(flags: PageFlags, path: string, columns: Column<T>[]): Promise<void> {
  const page = await withAdminSession(flags, (s) => s.call<Page<T>>("GET", path));
  if (flags.json) return printJson(page);
  printTable(columns, page.items);
  printPageFooter(page);
}

function writeCaFiles(outDir: string, cas: CaItem[]): void {
  fs.mkdirSync(outDir, { recursive: true });
  for (const ca of cas) if (ca.status === "active") fs.writeFileSync(path.join(outDir, `${ca.profile}.pem`), ca.certificate_pem);
}
