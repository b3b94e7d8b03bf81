import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { type AdminSessionFlags, addAdminSessionFlags, withAdminSession } from "./admin-session.js";

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
}
