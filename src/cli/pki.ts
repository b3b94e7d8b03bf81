import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { LEAF_VALIDITY_DAYS } from "../shared/config/defaults.js";
import { SDK_CONFIG_FILES } from "../shared/sdk-config.js";
import { type AdminSessionFlags, addAdminSessionFlags, withAdminSession } from "./admin-session.js";
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

const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export function registerPki(program: Command): void {
  const pki = program.command("pki").description("certificate operations against a running Control Plane");

  addAdminSessionFlags(pki.command("cas").description("list the CA certificates; --out-dir writes <profile>.pem files"))
    .option("--out-dir <dir>", "write each active CA certificate as <dir>/<profile>.pem")
    .action(async (flags: AdminSessionFlags & { outDir?: string }) => {
      const { items } = await withAdminSession(flags, (s) => s.call<{ items: CaItem[] }>("GET", "/admin/v1/pki/cas"));
      for (const ca of items) {
        process.stdout.write(
          `${ca.profile.padEnd(18)} ${ca.status.padEnd(7)} until ${day(ca.not_after)}  sha256:${ca.fingerprint_sha256}\n`,
        );
        if (flags.outDir && ca.status === "active") {
          fs.mkdirSync(flags.outDir, { recursive: true });
          fs.writeFileSync(path.join(flags.outDir, `${ca.profile}.pem`), ca.certificate_pem);
        }
      }
    });

  addAdminSessionFlags(pki.command("certs").description("list the certificate inventory"))
    .option("--status <status>", "valid, revoked or expired")
    .option("--ca-profile <profile>", "only certificates of this CA")
    .option("--owner-type <type>", "e.g. control_plane, node")
    .option("--page <n>", "page number", "1")
    .option("--page-size <n>", "rows per page (at most 200)", "50")
    .action(
      async (flags: AdminSessionFlags & { status?: string; caProfile?: string; ownerType?: string; page: string; pageSize: string }) => {
        const query = new URLSearchParams({ page: flags.page, page_size: flags.pageSize });
        if (flags.status) query.set("status", flags.status);
        if (flags.caProfile) query.set("ca_profile", flags.caProfile);
        if (flags.ownerType) query.set("owner_type", flags.ownerType);
        const page = await withAdminSession(flags, (s) =>
          s.call<{ items: CertItem[]; total: number; page: number }>("GET", `/admin/v1/pki/certs?${query}`),
        );
        for (const c of page.items) {
          process.stdout.write(
            `${c.id}  ${c.serial}  ${c.profile.padEnd(11)} ${c.status.padEnd(7)} until ${day(c.not_after)}  ${c.subject}  ${c.owner_type ?? "-"}:${c.owner_id ?? "-"}\n`,
          );
        }
        process.stdout.write(`page ${page.page}, ${page.items.length} of ${page.total}\n`);
      },
    );

  addAdminSessionFlags(pki.command("revoke").description("revoke a certificate; OCSP answers revoked from the next request"))
    .argument("<certificate-id>", "id from `pki certs`")
    .option("--reason <reason>", "RFC 5280 reason, e.g. keyCompromise, superseded", "unspecified")
    .action(async (id: string, flags: AdminSessionFlags & { reason: string }) => {
      const cert = await withAdminSession(flags, (s) =>
        s.call<CertItem>("POST", `/admin/v1/pki/certs/${encodeURIComponent(id)}/revoke`, { reason: flags.reason }),
      );
      process.stdout.write(`revoked ${cert.id} (serial ${cert.serial})\n`);
    });

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
