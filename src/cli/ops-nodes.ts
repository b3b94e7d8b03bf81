/**
 * `ops nodes …`: the fleet (GET /admin/v1/nodes…) and each node's lifecycle: create, disable,
 * enable, delete, reissue, and the deploy package (waiting for the onboarding job first).
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import type { Command } from "commander";
import { delay, systemClock, systemScheduler } from "../shared/time/index.js";
import type { AdminSessionFlags } from "./admin-session.js";
import { withAdminSession } from "./admin-session.js";
import {
  apiCommand,
  type JsonFlag,
  type Page,
  type PageFlags,
  pageQuery,
  positiveInt,
  progressLine,
  seg,
  withPageOptions,
} from "./ops-common.js";
import { type Column, orDash, printFields, printJson, printPageFooter, printTable, time } from "./output.js";
import { promptHidden } from "./prompt.js";

interface NodeView {
  id: string;
  name: string;
  host: string;
  business_port: number;
  status: string;
  lifecycle_status: string;
  created_at: number;
  disabled_at: number | null;
  last_checkin_at: number | null;
  sse_connected: boolean;
  ocsp_last_applied_at: number | null;
  software_version: string | null;
  online_users: number;
}

interface CertSummary {
  id: string;
  serial: string;
  status: string;
  not_after: number;
}

interface JobView {
  id: string;
  kind: string;
  status: string;
  attempts: number;
  max_attempts: number;
  last_error: string | null;
}

interface NodeDetail extends NodeView {
  certificates: { server: CertSummary | null; client: CertSummary | null; previous_client: CertSummary | null };
  onboarding_job: JobView | null;
  current_package: { id: string; created_at: number; sha256: string; size_bytes: number; downloaded_at: number | null } | null;
  health?: Array<{ field: string; value: unknown; healthy: boolean; action: string | null }>;
}

interface Overview {
  total: number;
  by_status: Record<string, number>;
  online_users: number;
  sse_connected: number;
  ocsp_stale: { count: number; nodes: Array<{ id: string; name: string; ocsp_last_applied_at: number | null }> };
  generated_at: number;
  [more: string]: unknown;
}

/** How often `nodes package` looks at the onboarding job (ms). */
const PACKAGE_POLL_MS = 500;
/** How long `nodes package` waits for the onboarding job by default (s). */
const DEFAULT_PACKAGE_TIMEOUT_S = 120;

const NODE_COLUMNS: Column<NodeView>[] = [
  { header: "ID", value: (n) => n.id },
  { header: "NAME", value: (n) => n.name },
  { header: "ADDRESS", value: (n) => `${n.host}:${n.business_port}` },
  { header: "STATUS", value: (n) => n.status },
  { header: "LAST_CHECKIN", value: (n) => time(n.last_checkin_at) },
  { header: "SSE", value: (n) => (n.sse_connected ? "yes" : "no") },
  { header: "OCSP_APPLIED", value: (n) => time(n.ocsp_last_applied_at) },
  { header: "USERS", value: (n) => String(n.online_users) },
  { header: "VERSION", value: (n) => orDash(n.software_version) },
];

const nodePath = (id: string) => `/admin/v1/nodes/${seg(id)}`;

export function registerOpsNodes(ops: Command): void {
  const nodes = ops.command("nodes").description("server nodes: fleet health, lifecycle, deploy packages");

  apiCommand(nodes, "overview", "fleet totals: nodes by status, online users, SSE, stale OCSP staples").action(
    async (flags: AdminSessionFlags & JsonFlag) => {
      const o = await withAdminSession(flags, (s) => s.call<Overview>("GET", "/admin/v1/nodes/overview"));
      if (flags.json) return printJson(o);
      printFields([
        ["nodes", String(o.total)],
        ...Object.entries(o.by_status).map(([status, n]): [string, string] => [`  ${status}`, String(n)]),
        ["online users", String(o.online_users)],
        ["SSE connected", String(o.sse_connected)],
        ["stale OCSP staples", String(o.ocsp_stale.count)],
        ...o.ocsp_stale.nodes.map((n): [string, string] => [`  ${n.name}`, `${n.id}, last applied ${time(n.ocsp_last_applied_at)}`]),
        ["generated at", time(o.generated_at)],
      ]);
    },
  );

  withPageOptions(apiCommand(nodes, "list", "list the nodes, newest first"))
    .option("--status <status>", "provisioning, online, offline or disabled")
    .action(async (flags: PageFlags & { status?: string }) => {
      const page = await withAdminSession(flags, (s) =>
        s.call<Page<NodeView>>("GET", `/admin/v1/nodes?${pageQuery(flags, { status: flags.status })}`),
      );
      if (flags.json) return printJson(page);
      printTable(NODE_COLUMNS, page.items);
      if (process.stdout.isTTY) printPageFooter(page);
    });

  apiCommand(nodes, "show", "one node: health, certificates, onboarding job, current package")
    .argument("<nid>", "node id")
    .action(async (id: string, flags: AdminSessionFlags & JsonFlag) => {
      const node = await withAdminSession(flags, (s) => s.call<NodeDetail>("GET", nodePath(id)));
      if (flags.json) return printJson(node);
      printNode(node);
    });

  apiCommand(nodes, "create", "create a node; its onboarding job issues its certificates and builds its deploy package")
    .requiredOption("--name <name>", "unique name, 1-100 characters")
    .requiredOption("--host <host>", "DNS name or IP SDK clients reach it at (goes into its certificate)")
    .requiredOption("--business-port <port>", "its business port for SDK clients, e.g. 8443")
    .action(async (flags: AdminSessionFlags & JsonFlag & { name: string; host: string; businessPort: string }) => {
      const port = positiveInt("--business-port", flags.businessPort, 65535);
      const node = await withAdminSession(flags, (s) =>
        s.call<NodeDetail & { job_id: string }>("POST", "/admin/v1/nodes", { name: flags.name, host: flags.host, business_port: port }),
      );
      if (flags.json) return printJson(node);
      // The id alone on stdout, so a script can take it: NODE=$(authnexus ops nodes create …).
      process.stdout.write(`${node.id}\n`);
      process.stderr.write(
        `created node ${node.name} (${node.id}); onboarding job ${node.job_id} issues its certificates.\n` +
          `Download its deploy package with: authnexus ops nodes package ${node.id} --out ${node.name}.tar.gz\n`,
      );
    });

  for (const action of ["disable", "enable"] as const) {
    apiCommand(
      nodes,
      action,
      action === "disable"
        ? "disable a node: its certificates answer OCSP revoked, SDK clients refuse it and its clients are logged out"
        : "enable a disabled node again",
    )
      .argument("<nid>", "node id")
      .action(async (id: string, flags: AdminSessionFlags & JsonFlag) => {
        const node = await withAdminSession(flags, (s) => s.call<NodeDetail>("POST", `${nodePath(id)}/${action}`, {}));
        if (flags.json) return printJson(node);
        process.stdout.write(`node ${node.name} (${node.id}) ${action}d; status ${node.status}\n`);
      });
  }

  apiCommand(nodes, "delete", "delete a node for good: its certificates are revoked and its pending jobs cancelled")
    .argument("<nid>", "node id")
    .option("--yes", "do not ask for confirmation (required when not on a terminal)")
    .action(async (id: string, flags: AdminSessionFlags & JsonFlag & { yes?: boolean }) => {
      const answer = await withAdminSession(flags, async (s) => {
        if (!flags.yes) {
          const node = await s.call<NodeDetail>("GET", nodePath(id));
          if (!process.stdin.isTTY) throw new Error(`pass --yes to delete node ${node.name} (${node.id}) without a terminal to confirm on`);
          const typed = await promptHidden(`Delete node ${node.name} (${node.id}) for good? Type its name to confirm: `);
          if (typed !== node.name) throw new Error("not confirmed: nothing was deleted");
        }
        return s.call<{ node_id: string; revoked_certificate_ids: string[]; cancelled_job_ids: string[] }>("DELETE", nodePath(id));
      });
      if (flags.json) return printJson(answer);
      process.stdout.write(
        `deleted node ${answer.node_id}; revoked certificates: ${answer.revoked_certificate_ids.join(", ") || "none"}; ` +
          `cancelled jobs: ${answer.cancelled_job_ids.join(", ") || "none"}\n`,
      );
    });

  apiCommand(nodes, "reissue", "revoke a node's certificates and build a new deploy package (compromised or lost keys)")
    .argument("<nid>", "node id")
    .action(async (id: string, flags: AdminSessionFlags & JsonFlag) => {
      const answer = await withAdminSession(flags, (s) =>
        s.call<{ node_id: string; job_id: string; revoked_certificate_ids: string[] }>("POST", `${nodePath(id)}/reissue-package`, {}),
      );
      if (flags.json) return printJson(answer);
      process.stdout.write(
        `revoked certificates of node ${answer.node_id}: ${answer.revoked_certificate_ids.join(", ") || "none"}; job ${answer.job_id} builds a new package.\n` +
          `Download it with: authnexus ops nodes package ${answer.node_id} --out FILE (it waits for the job), then enrol the node from it.\n`,
      );
    });

  apiCommand(nodes, "package", "wait for the node's onboarding job, then download its current deploy package (mode 0600)")
    .argument("<nid>", "node id")
    .requiredOption("--out <file>", "where to write the .tar.gz (it holds the node's private keys)")
    .option("--force", "overwrite --out when it exists")
    .option("--timeout <seconds>", "how long to wait for the onboarding job", String(DEFAULT_PACKAGE_TIMEOUT_S))
    .action(async (id: string, flags: AdminSessionFlags & JsonFlag & { out: string; force?: boolean; timeout: string }) => {
      const timeoutMs = positiveInt("--timeout", flags.timeout, 86_400) * 1000;
      if (!flags.force && fs.existsSync(flags.out)) throw new Error(`${flags.out} exists: pass --force to overwrite it`);
      const result = await withAdminSession(flags, async (s) => {
        const node = await waitForPackage(id, timeoutMs, (path) => s.call<NodeDetail>("GET", path));
        const pkg = node.current_package as NonNullable<NodeDetail["current_package"]>;
        const { body, headers } = await s.download(`${nodePath(id)}/deploy-packages/${seg(pkg.id)}/download`);
        const sha256 = createHash("sha256").update(body).digest("hex");
        const announced = headers.get("x-package-sha256");
        if (announced && announced !== sha256)
          throw new Error(`the download's SHA-256 ${sha256} differs from the announced ${announced}: nothing written`);
        writePrivateFile(flags.out, body, flags.force === true);
        return { node_id: node.id, node_name: node.name, package_id: pkg.id, sha256, size_bytes: body.length, file: flags.out };
      });
      if (flags.json) return printJson(result);
      process.stdout.write(
        `wrote the deploy package ${result.package_id} of node ${result.node_name} to ${result.file} (${result.size_bytes} bytes, mode 0600, sha256 ${result.sha256})\n`,
      );
    });
}

/** Polls the node until its onboarding job is over and it has a current package; a failed job is an error. */
async function waitForPackage(id: string, timeoutMs: number, get: (path: string) => Promise<NodeDetail>): Promise<NodeDetail> {
  const progress = progressLine();
  const started = systemClock.now();
  try {
    for (;;) {
      const node = await get(nodePath(id));
      const job = node.onboarding_job;
      const running = job !== null && (job.status === "pending" || job.status === "running");
      if (!running && node.current_package) return node;
      if (job && (job.status === "failed" || job.status === "cancelled"))
        throw new Error(
          `the onboarding job ${job.id} of node ${node.name} ${job.status}${job.last_error ? `: ${job.last_error}` : ""}; see \`authnexus pki job ${job.id}\``,
        );
      const elapsedMs = systemClock.now() - started;
      if (elapsedMs >= timeoutMs)
        throw new Error(
          `node ${node.name} has no deploy package after ${Math.round(elapsedMs / 1000)} s` +
            (job ? ` (job ${job.id} is ${job.status}, attempt ${job.attempts}/${job.max_attempts})` : "") +
            `; try again later or with a longer --timeout`,
        );
      progress.update(
        job
          ? `waiting for onboarding job ${job.id} (${job.status}, attempt ${job.attempts}/${job.max_attempts}) … ${Math.round(elapsedMs / 1000)} s`
          : `waiting for node ${node.name}'s deploy package … ${Math.round(elapsedMs / 1000)} s`,
      );
      await delay(systemScheduler, PACKAGE_POLL_MS).promise;
    }
  } finally {
    progress.done();
  }
}

/** Creates the file with mode 0600 from the first byte (or replaces it, with force). */
function writePrivateFile(file: string, body: Buffer, force: boolean): void {
  if (force) fs.rmSync(file, { force: true });
  const fd = fs.openSync(file, "wx", 0o600);
  try {
    fs.writeFileSync(fd, body);
    fs.fchmodSync(fd, 0o600);
  } finally {
    fs.closeSync(fd);
  }
}

function printNode(node: NodeDetail): void {
  const cert = (c: CertSummary | null) => (c ? `${c.id} serial ${c.serial}, ${c.status}, until ${time(c.not_after)}` : "-");
  const job = node.onboarding_job;
  const pkg = node.current_package;
  printFields([
    ["id", node.id],
    ["name", node.name],
    ["address", `${node.host}:${node.business_port}`],
    ["status", `${node.status} (lifecycle ${node.lifecycle_status})`],
    ["created", time(node.created_at)],
    ["disabled", time(node.disabled_at)],
    ["last checkin", time(node.last_checkin_at)],
    ["SSE connected", node.sse_connected ? "yes" : "no"],
    ["OCSP last applied", time(node.ocsp_last_applied_at)],
    ["software version", orDash(node.software_version)],
    ["online users", String(node.online_users)],
    ["server certificate", cert(node.certificates.server)],
    ["client certificate", cert(node.certificates.client)],
    ["previous client cert", cert(node.certificates.previous_client)],
    [
      "onboarding job",
      job ? `${job.id} ${job.status} (attempt ${job.attempts}/${job.max_attempts})${job.last_error ? `: ${job.last_error}` : ""}` : "-",
    ],
    [
      "current package",
      pkg ? `${pkg.id}, ${pkg.size_bytes} bytes, created ${time(pkg.created_at)}, downloaded ${time(pkg.downloaded_at)}` : "-",
    ],
  ]);
  if (node.health && node.health.length > 0) {
    process.stdout.write("\n");
    printTable(
      [
        { header: "CHECK", value: (h: NonNullable<NodeDetail["health"]>[number]) => h.field },
        { header: "HEALTHY", value: (h) => (h.healthy ? "yes" : "no") },
        { header: "VALUE", value: (h) => (typeof h.value === "string" ? h.value : JSON.stringify(h.value ?? null)) },
        { header: "ACTION", value: (h) => orDash(h.action) },
      ],
      node.health,
      true,
    );
  }
}
