/**
 * Node lifecycle through the admin API in process, on SQLite and on PostgreSQL: create → the
 * NodeOnboard job → a downloadable deploy package whose manifest validates and whose
 * certificates verify (SANs, must-staple, AIA, identity URI, matching keys), unpacked by the real
 * `tar`; list, filter, overview and detail; disable → OCSP revoked (certificateHold) and
 * enable → good through the real answerer and `openssl ocsp`; hard delete; roles; and hostile
 * input on every endpoint (4xx, nothing stored).
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BasicOCSPResponse, OCSPResponse } from "@peculiar/asn1-ocsp";
import { AsnConvert } from "@peculiar/asn1-schema";
import { createPkiJobWorker, type JobWorker } from "../../src/cp/jobs/index.js";
import { createOcspAnswerer } from "../../src/cp/ocsp/index.js";
import type { NodeNotice } from "../../src/cp/services/event-bus.js";
import { createInventoryResolver, loadOcspIssuers } from "../../src/cp/services/pki/ocsp-status.js";
import { PASSWORD_HASH_SECRET_NAME } from "../../src/cp/services/setup/setup.js";
import { NODE_ONLINE_WINDOW_MS, OCSP_STALE_AFTER_MS } from "../../src/shared/config/defaults.js";
import { agentPackageSchema, PACKAGE_FILES } from "../../src/shared/node-protocol/index.js";
import { nodeUri, openSecret, parseCertificate, verifyCertificateChain } from "../../src/shared/pki/index.js";
import { type AdminApp, buildAdminApp, type CallResult, call, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { provisionNode, unpackPackage } from "../helpers/nodes.js";

type Obj = Record<string, unknown>;
const V1 = "/admin/v1";
const OPERATOR_PASSWORD = "Operator-Passw0rd-Nodes";

function json(res: CallResult, status: number, label: string): Obj {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  assert.ok(res.json && typeof res.json === "object", `${label}: no JSON body`);
  return res.json as Obj;
}

function refused(res: CallResult, status: number, code: string, label: string): void {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  assert.equal((res.json as Obj | undefined)?.error, code, `${label}: ${res.text.slice(0, 400)}`);
}

function run(cmd: string, args: string[], cwd?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", env: { ...process.env, TZ: "UTC", LC_ALL: "C" } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface OcspResult {
  kind: "good" | "revoked" | "unknown";
  revokedAt?: number;
  reason?: number;
  /** What `openssl ocsp -respin` printed after verifying the signature against the issuer. */
  openssl: string;
}

/**
 * Asks the real answerer (inventory resolver over the Control DB) about `certPem`, with a
 * request built by `openssl ocsp`, and has openssl verify the answer against the issuer.
 */
async function ocspStatus(cp: TestCp, certPem: string, issuerPem: string): Promise<OcspResult> {
  const dir = mkdtempSync(join(tmpdir(), "nodes-ocsp-"));
  try {
    writeFileSync(join(dir, "cert.pem"), certPem);
    writeFileSync(join(dir, "issuer.pem"), issuerPem);
    const req = run("openssl", ["ocsp", "-issuer", "issuer.pem", "-cert", "cert.pem", "-no_nonce", "-reqout", "req.der"], dir);
    assert.equal(req.status, 0, req.stderr);
    const answer = createOcspAnswerer({ resolve: createInventoryResolver(cp.ctx, await loadOcspIssuers(cp.ctx)), clock: cp.clock });
    const der = await answer(readFileSync(join(dir, "req.der")));
    writeFileSync(join(dir, "resp.der"), der);
    // The answer is dated by the test's ManualClock; the wide window lets openssl judge the rest.
    const check = run(
      "openssl",
      [
        "ocsp",
        "-respin",
        "resp.der",
        "-issuer",
        "issuer.pem",
        "-cert",
        "cert.pem",
        "-CAfile",
        "issuer.pem",
        "-no_nonce",
        "-validity_period",
        "300000000",
      ],
      dir,
    );
    assert.equal(check.status, 0, check.stderr);
    assert.match(check.stderr, /Response verify OK/);
    const response = AsnConvert.parse(der, OCSPResponse);
    assert.ok(response.responseBytes, "a successful response");
    const basic = AsnConvert.parse(response.responseBytes.response, BasicOCSPResponse);
    const single = basic.tbsResponseData.responses[0];
    assert.ok(single);
    const status = single.certStatus;
    if (status.revoked) {
      const reason = status.revoked.revocationReason?.reason;
      return {
        kind: "revoked",
        revokedAt: status.revoked.revocationTime.getTime(),
        ...(reason === undefined ? {} : { reason }),
        openssl: check.stdout,
      };
    }
    return { kind: status.good !== undefined ? "good" : "unknown", openssl: check.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const variant of dbVariants()) {
  describe(`nodes on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    let worker: JobWorker;
    let root: string;
    let operator: string;
    const notices: NodeNotice[] = [];

    const create = (body: unknown, token = root) => call(app, "POST", `${V1}/nodes`, { token, body });
    const get = (path: string, token = root) => call(app, "GET", `${V1}${path}`, { token });
    const post = (path: string, token = root) => call(app, "POST", `${V1}${path}`, { token });
    /** Creates a node through the API and runs its onboarding job. */
    const provisioned = async (name: string, host = `${name}.example.test`) => {
      const created = json(await create({ name, host, business_port: 8443 }), 201, `create ${name}`);
      const report = await worker.runOnce();
      assert.equal(report?.jobId, created.job_id);
      assert.equal(report?.outcome, "succeeded", report?.error);
      return created.id as string;
    };

    before(async () => {
      cp = await createTestCp(variant, "nodes");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      worker = createPkiJobWorker(cp.ctx);
      cp.ctx.events.onNotice((n) => notices.push(n));
      root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      json(
        await call(app, "POST", `${V1}/agents`, {
          token: root,
          body: { username: "node-operator", password: OPERATOR_PASSWORD, role: "operator" },
        }),
        201,
        "create operator",
      );
      operator = (await loginAs(app, "node-operator", OPERATOR_PASSWORD)).access_token;
    });
    after(async () => {
      await cp.close();
      await variant.cleanup();
    });

    describe("create, onboard, download", () => {
      let nodeId: string;
      let jobId: string;
      let packageId: string;
      let archive: Buffer;

      test("POST /nodes creates a provisioning node and a pending NodeOnboard job in one go", async () => {
        const node = json(await create({ name: "edge-1", host: "Edge-1.Example.Test", business_port: 8443 }), 201, "create");
        nodeId = node.id as string;
        jobId = node.job_id as string;
        assert.match(nodeId, /^nod_/);
        assert.equal(node.host, "edge-1.example.test", "the host is stored in its canonical (certificate) form");
        assert.equal(node.status, "provisioning");
        assert.equal(node.lifecycle_status, "provisioning");
        assert.deepEqual(node.certificates, { server: null, client: null, previous_client: null });
        const job = node.onboarding_job as Obj;
        assert.equal(job.id, jobId);
        assert.equal(job.kind, "node_onboard");
        assert.equal(job.status, "pending");
        assert.equal(job.attempts, 0);
        assert.equal(job.max_attempts, 5);
        assert.deepEqual(job.payload, { node_id: nodeId });
        const audit = await cp.ctx.controlDb.selectFrom("node_audit_logs").selectAll().where("node_id", "=", nodeId).execute();
        assert.deepEqual(
          audit.map((a) => a.event),
          ["node.created"],
        );
        const agentAudit = await cp.ctx.controlDb.selectFrom("agent_audit_logs").selectAll().where("action", "=", "node.create").execute();
        assert.equal(agentAudit.length, 1);
        assert.equal(agentAudit[0]?.target_id, nodeId);
        assert.equal(agentAudit[0]?.result, "success");
      });

      test("before the job has run there is nothing to download (409 NODE_NOT_PROVISIONED)", async () => {
        assert.deepEqual(json(await get(`/nodes/${nodeId}/deploy-packages`), 200, "list").items, []);
        refused(await get(`/nodes/${nodeId}/deploy-packages/pkg_none/download`), 409, "NODE_NOT_PROVISIONED", "download too early");
      });

      test("the job issues both certificates, stores the package, activates the node", async () => {
        const report = await worker.runOnce();
        assert.deepEqual(report, { jobId, kind: "node_onboard", outcome: "succeeded" });
        assert.equal(await worker.runOnce(), null, "nothing else is due");
        const node = json(await get(`/nodes/${nodeId}`), 200, "detail");
        assert.equal(node.lifecycle_status, "active");
        assert.equal(node.status, "offline", "active but never checked in");
        const certs = node.certificates as Record<string, Obj | null>;
        assert.equal(certs.server?.status, "valid");
        assert.equal(certs.server?.purpose, "node_server");
        assert.equal(certs.client?.status, "valid");
        assert.equal(certs.client?.purpose, "node_client");
        assert.equal(certs.previous_client, null);
        const job = node.onboarding_job as Obj;
        assert.equal(job.status, "succeeded");
        assert.equal(job.attempts, 1);
        assert.equal(job.claimed_by, null);
        const result = job.result as Obj;
        assert.equal(result.server_cert_id, certs.server?.id);
        assert.equal(result.client_cert_id, certs.client?.id);
        const current = node.current_package as Obj;
        packageId = current.id as string;
        assert.equal(result.package_id, packageId);

        const inventory = await cp.ctx.controlDb
          .selectFrom("certificates")
          .selectAll()
          .where("owner_type", "=", "node")
          .where("owner_id", "=", nodeId)
          .execute();
        assert.deepEqual(inventory.map((c) => c.purpose).sort(), ["node_client", "node_server"]);
        const pkiAudit = await cp.ctx.controlDb.selectFrom("pki_audit_logs").selectAll().where("actor", "=", "job:node_onboard").execute();
        assert.deepEqual(pkiAudit.map((a) => a.event).sort(), ["cert.issued", "cert.issued", "package.built"]);
        const nodeAudit = await cp.ctx.controlDb
          .selectFrom("node_audit_logs")
          .select("event")
          .where("node_id", "=", nodeId)
          .orderBy("created_at")
          .execute();
        assert.ok(nodeAudit.some((a) => a.event === "node.provisioned"));
        const pkiLog = cp.logLines.filter((l) => l.includes('"category":"PKI"') || l.includes("[PKI]"));
        assert.ok(
          pkiLog.some((l) => l.includes("cert.issued") && l.includes(nodeId)),
          "cert.issued is logged under [PKI]",
        );
        assert.ok(pkiLog.some((l) => l.includes("package.built")));
        assert.ok(!cp.logLines.some((l) => l.includes("PRIVATE KEY")), "no key material in logs");
      });

      test("the package list shows the package without its bytes; the stored archive is sealed", async () => {
        const items = json(await get(`/nodes/${nodeId}/deploy-packages`), 200, "list").items as Obj[];
        assert.equal(items.length, 1);
        assert.equal(items[0]?.id, packageId);
        assert.equal(items[0]?.current, true);
        assert.equal(items[0]?.downloaded_at, null);
        assert.equal(items[0]?.job_id, jobId);
        assert.ok(!("archive_ciphertext" in (items[0] ?? {})));
        const row = await cp.ctx.controlDb.selectFrom("deploy_packages").selectAll().where("id", "=", packageId).executeTakeFirstOrThrow();
        assert.ok(!Buffer.from(row.archive_ciphertext).includes(Buffer.from([0x1f, 0x8b, 0x08])), "the archive is not stored in the clear");
      });

      test("an operator may not download (the package holds private keys): 403, nothing recorded", async () => {
        const before = await snapshotDb(cp.ctx);
        refused(await get(`/nodes/${nodeId}/deploy-packages/${packageId}/download`, operator), 403, "FORBIDDEN", "operator download");
        assert.deepEqual(await snapshotDb(cp.ctx), before);
      });

      test("root downloads a gzip attachment; the download is recorded", async () => {
        cp.clock.advance(1000);
        const res = await app.request(`${V1}/nodes/${nodeId}/deploy-packages/${packageId}/download`, {
          headers: { authorization: `Bearer ${root}` },
        });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("content-type"), "application/gzip");
        assert.match(
          res.headers.get("content-disposition") ?? "",
          /^attachment; filename="authnexus-node-edge-1-pkg_[A-Za-z0-9_-]+\.tar\.gz"$/,
        );
        assert.equal(res.headers.get("cache-control"), "no-store");
        archive = Buffer.from(await res.arrayBuffer());
        assert.equal(Number(res.headers.get("content-length")), archive.length);
        assert.deepEqual(archive.subarray(0, 2), Buffer.from([0x1f, 0x8b]));
        const row = await cp.ctx.controlDb
          .selectFrom("deploy_packages")
          .select(["sha256", "size_bytes", "downloaded_at"])
          .where("id", "=", packageId)
          .executeTakeFirstOrThrow();
        assert.equal(res.headers.get("x-package-sha256"), row.sha256);
        assert.equal(row.size_bytes, archive.length);
        assert.equal(row.downloaded_at, cp.clock.now());
        const audit = await cp.ctx.controlDb.selectFrom("node_audit_logs").selectAll().where("event", "=", "package.downloaded").execute();
        assert.equal(audit.length, 1);
        assert.equal(JSON.parse(audit[0]?.detail ?? "{}").package_id, packageId);
        // The early attempt, the operator's refused one and this download: all in the agent audit trail.
        const agentAudit = await cp.ctx.controlDb
          .selectFrom("agent_audit_logs")
          .select(["result", "error_code"])
          .where("action", "=", "node.package_download")
          .where("target_id", "=", nodeId)
          .execute();
        assert.deepEqual(agentAudit.map((a) => `${a.result}:${a.error_code}`).sort(), [
          "failure:FORBIDDEN",
          "failure:NODE_NOT_PROVISIONED",
          "success:null",
        ]);
      });

      test("the real tar lists the files with their modes and extracts a manifest that validates", async () => {
        const dir = mkdtempSync(join(tmpdir(), "nodes-pkg-"));
        try {
          writeFileSync(join(dir, "p.tar.gz"), archive);
          const listing = run("tar", ["-tzvf", "p.tar.gz"], dir);
          assert.equal(listing.status, 0, listing.stderr);
          const modes = new Map(
            listing.stdout
              .trim()
              .split("\n")
              .map((l) => {
                const parts = l.split(/\s+/);
                return [parts.at(-1) ?? "", parts[0] ?? ""] as const;
              }),
          );
          assert.equal(modes.get("node_agent.json"), "-rw-r--r--");
          assert.equal(modes.get("tls/"), "drwxr-xr-x");
          assert.equal(modes.get("secrets/"), "drwx------");
          assert.equal(modes.get(PACKAGE_FILES.client_key), "-rw-------");
          assert.equal(modes.get(PACKAGE_FILES.server_key), "-rw-------");
          assert.equal(modes.get(PACKAGE_FILES.password_hash_key), "-rw-------");
          for (const path of [
            PACKAGE_FILES.cp_ca,
            PACKAGE_FILES.client_cert,
            PACKAGE_FILES.server_cert,
            PACKAGE_FILES.server_issuer,
            PACKAGE_FILES.app_client_ca,
          ]) {
            assert.equal(modes.get(path), "-rw-r--r--", path);
          }
          assert.equal(modes.size, 11, "manifest, two directories and eight files");
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });

      test("the package's manifest, certificates, keys, CA bundles and password-hash key are right", async () => {
        const pkg = await unpackPackage(archive);
        try {
          const m = agentPackageSchema.parse(pkg.manifest);
          assert.equal(m.node_id, nodeId);
          assert.equal(m.node_name, "edge-1");
          assert.equal(m.package_id, packageId);
          assert.equal(m.cp_url, "https://cp.example.test:9091", "trailing slash stripped");
          assert.equal(m.ocsp_url, cp.ctx.publicOcspUrl);
          assert.deepEqual(m.business, { host: "edge-1.example.test", port: 8443 });
          const file = (path: string) => {
            const content = pkg.files[path];
            assert.ok(content, `${path} is in the package`);
            return content.toString("utf8");
          };
          const cas = Object.fromEntries(
            (await cp.ctx.controlDb.selectFrom("certificate_authorities").select(["profile", "cert_pem"]).execute()).map((c) => [
              c.profile,
              c.cert_pem.trim(),
            ]),
          );
          assert.equal(file(m.files.cp_ca).trim(), cas.cp_server_ca);
          assert.equal(file(m.files.server_issuer).trim(), cas.tcp_server_ca);
          assert.equal(file(m.files.app_client_ca).trim(), cas.app_client_ca);

          const server = parseCertificate(file(m.files.server_cert));
          assert.deepEqual(server.sans, { dns: ["edge-1.example.test"], ip: [], uri: [] });
          assert.equal(server.mustStaple, true);
          assert.deepEqual(server.ocspUrls, [cp.ctx.publicOcspUrl]);
          assert.deepEqual(server.extendedKeyUsages, ["serverAuth"]);
          const serverChain = await verifyCertificateChain({
            leaf: file(m.files.server_cert),
            trustedCas: [file(m.files.server_issuer)],
            clock: cp.clock,
            expectedProfile: "node_server",
          });
          assert.ok(serverChain.ok, JSON.stringify(serverChain));

          const client = parseCertificate(file(m.files.client_cert));
          assert.deepEqual(client.sans.uri, [nodeUri(nodeId)]);
          assert.deepEqual(client.extendedKeyUsages, ["clientAuth"]);
          const clientChain = await verifyCertificateChain({
            leaf: file(m.files.client_cert),
            trustedCas: [cas.cp_node_client_ca ?? ""],
            clock: cp.clock,
            expectedProfile: "node_client",
          });
          assert.ok(clientChain.ok, JSON.stringify(clientChain));
          const wrongCa = await verifyCertificateChain({
            leaf: file(m.files.client_cert),
            trustedCas: [file(m.files.server_issuer)],
            clock: cp.clock,
          });
          assert.equal(wrongCa.ok, false, "the client certificate does not chain to tcp_server_ca");

          assert.ok(
            new X509Certificate(file(m.files.server_cert)).checkPrivateKey(createPrivateKey(file(m.files.server_key))),
            "server key matches",
          );
          assert.ok(
            new X509Certificate(file(m.files.client_cert)).checkPrivateKey(createPrivateKey(file(m.files.client_key))),
            "client key matches",
          );

          const inventory = await cp.ctx.controlDb
            .selectFrom("certificates")
            .select(["purpose", "serial_hex"])
            .where("owner_id", "=", nodeId)
            .execute();
          assert.equal(inventory.find((c) => c.purpose === "node_server")?.serial_hex, server.serialHex);
          assert.equal(inventory.find((c) => c.purpose === "node_client")?.serial_hex, client.serialHex);

          const secret = await cp.ctx.controlDb
            .selectFrom("server_secrets")
            .select("ciphertext")
            .where("name", "=", PASSWORD_HASH_SECRET_NAME)
            .executeTakeFirstOrThrow();
          const expected = openSecret(cp.ctx.masterKey, Buffer.from(secret.ciphertext), PASSWORD_HASH_SECRET_NAME);
          assert.equal(file(m.files.password_hash_key).trim(), expected.toString("hex"));

          // openssl agrees: the business certificate is a TLS server certificate under tcp_server_ca.
          const verify = run(
            "openssl",
            [
              "verify",
              "-purpose",
              "sslserver",
              "-attime",
              String(Math.floor(cp.clock.now() / 1000)),
              "-CAfile",
              m.files.server_issuer,
              m.files.server_cert,
            ],
            pkg.dir,
          );
          assert.equal(verify.status, 0, verify.stdout + verify.stderr);
          writeFileSync(join(pkg.dir, "cp_node_client_ca.pem"), cas.cp_node_client_ca ?? "");
          const verifyClient = run(
            "openssl",
            [
              "verify",
              "-purpose",
              "sslclient",
              "-attime",
              String(Math.floor(cp.clock.now() / 1000)),
              "-CAfile",
              "cp_node_client_ca.pem",
              m.files.client_cert,
            ],
            pkg.dir,
          );
          assert.equal(verifyClient.status, 0, verifyClient.stdout + verifyClient.stderr);
        } finally {
          await pkg.cleanup();
        }
      });

      test("an IP host becomes an IP SAN (IPv6 in canonical form)", async () => {
        for (const [host, canonical] of [
          ["10.1.2.3", "10.1.2.3"],
          ["2001:DB8:0:0::1", "2001:db8::1"],
        ] as const) {
          const created = json(await create({ name: `ip-${canonical.replace(/[:.]/g, "-")}`, host, business_port: 9443 }), 201, host);
          assert.equal(created.host, canonical);
          assert.equal((await worker.runOnce())?.outcome, "succeeded");
          const row = await cp.ctx.controlDb
            .selectFrom("certificates")
            .select("cert_pem")
            .where("owner_id", "=", created.id as string)
            .where("purpose", "=", "node_server")
            .executeTakeFirstOrThrow();
          assert.deepEqual(parseCertificate(row.cert_pem).sans, { dns: [], ip: [canonical], uri: [] });
        }
      });
    });

    describe("hostile input", () => {
      let existing: string;
      before(async () => {
        existing = await provisioned("hostile-base");
      });

      test("POST /nodes: every bad body is a 4xx and stores nothing", async () => {
        const good = { name: "never-stored", host: "never.example.test", business_port: 8443 };
        const cases: Array<[string, { body?: unknown; raw?: string; type?: string }, number, string]> = [
          ["malformed JSON", { raw: '{"name": "x",', type: "application/json" }, 400, "MALFORMED_JSON"],
          ["text/plain body", { raw: JSON.stringify(good), type: "text/plain" }, 415, "UNSUPPORTED_MEDIA_TYPE"],
          ["empty body", { raw: "" }, 400, "VALIDATION_FAILED"],
          ["array body", { body: [good] }, 400, "VALIDATION_FAILED"],
          ["null body", { body: null }, 400, "VALIDATION_FAILED"],
          ["unknown field", { body: { ...good, description: "x" } }, 400, "VALIDATION_FAILED"],
          ["unknown field (status)", { body: { ...good, status: "active" } }, 400, "VALIDATION_FAILED"],
          ["missing name", { body: { host: good.host, business_port: 8443 } }, 400, "VALIDATION_FAILED"],
          ["missing host", { body: { name: good.name, business_port: 8443 } }, 400, "VALIDATION_FAILED"],
          ["missing port", { body: { name: good.name, host: good.host } }, 400, "VALIDATION_FAILED"],
          ["empty name", { body: { ...good, name: "  " } }, 400, "VALIDATION_FAILED"],
          ["name with quotes", { body: { ...good, name: "x'; DROP TABLE nodes; --" } }, 400, "VALIDATION_FAILED"],
          ["name with NUL", { body: { ...good, name: "a\u0000b" } }, 400, "VALIDATION_FAILED"],
          ["name too long", { body: { ...good, name: "n".repeat(101) } }, 400, "VALIDATION_FAILED"],
          ["port 0", { body: { ...good, business_port: 0 } }, 400, "VALIDATION_FAILED"],
          ["port 70000", { body: { ...good, business_port: 70000 } }, 400, "VALIDATION_FAILED"],
          ["port -1", { body: { ...good, business_port: -1 } }, 400, "VALIDATION_FAILED"],
          ["port 1.5", { body: { ...good, business_port: 1.5 } }, 400, "VALIDATION_FAILED"],
          ["port as string", { body: { ...good, business_port: "8443" } }, 400, "VALIDATION_FAILED"],
          ["host number", { body: { ...good, host: 12 } }, 400, "VALIDATION_FAILED"],
        ];
        const badHosts = [
          "",
          "*.example.test",
          "-bad.example.test",
          "bad-.example.test",
          "a..b",
          "under_score.example.test",
          "trailing.dot.",
          "1.2.3.999",
          "256.1.1.1",
          "http://node.example.test",
          "node.example.test:8443",
          "[::1]",
          "fe80::1%eth0",
          "nöde.example.test",
          "space host",
          "x".repeat(64),
          `${"a.".repeat(127)}ab`,
          "node.example.test\r\nX-Injected: 1",
        ];
        for (const host of badHosts)
          cases.push([`host ${JSON.stringify(host).slice(0, 40)}`, { body: { ...good, host } }, 400, "VALIDATION_FAILED"]);
        cases.push(["duplicate name", { body: { ...good, name: "hostile-base" } }, 409, "CONFLICT"]);

        const before = await snapshotDb(cp.ctx);
        for (const [label, input, status, code] of cases) {
          const res =
            input.raw !== undefined
              ? await call(app, "POST", `${V1}/nodes`, {
                  token: root,
                  rawBody: input.raw,
                  headers: input.type ? { "content-type": input.type } : {},
                })
              : await create(input.body);
          refused(res, status, code, label);
        }
        assert.deepEqual(await snapshotDb(cp.ctx), before, "no refused create stored anything");
        assert.equal(await worker.runOnce(), null, "no job was queued");
      });

      test("bad ids, bad bodies and bad queries on every node endpoint: 4xx, nothing stored", async () => {
        const before = await snapshotDb(cp.ctx);
        const cases: Array<[string, string, { body?: unknown; raw?: string }, number, string]> = [
          ["GET", "/nodes/not%20an%20id", {}, 404, "NOT_FOUND"],
          ["GET", `/nodes/${"x".repeat(65)}`, {}, 404, "NOT_FOUND"],
          ["GET", "/nodes/nod_missing", {}, 404, "NOT_FOUND"],
          ["POST", "/nodes/nod_missing/disable", {}, 404, "NOT_FOUND"],
          ["POST", "/nodes/nod_missing/enable", {}, 404, "NOT_FOUND"],
          ["DELETE", "/nodes/nod_missing", {}, 404, "NOT_FOUND"],
          ["DELETE", "/nodes/bad%24id", {}, 404, "NOT_FOUND"],
          ["GET", "/nodes/nod_missing/deploy-packages", {}, 404, "NOT_FOUND"],
          ["GET", "/nodes/nod_missing/deploy-packages/pkg_x/download", {}, 404, "NOT_FOUND"],
          ["GET", `/nodes/${existing}/deploy-packages/pkg_missing/download`, {}, 404, "NOT_FOUND"],
          ["GET", `/nodes/${existing}/deploy-packages/bad%21id/download`, {}, 404, "NOT_FOUND"],
          ["POST", `/nodes/${existing}/disable`, { body: { reason: "x" } }, 400, "VALIDATION_FAILED"],
          ["POST", `/nodes/${existing}/disable`, { raw: "{" }, 400, "MALFORMED_JSON"],
          ["POST", `/nodes/${existing}/enable`, { body: [] }, 400, "VALIDATION_FAILED"],
          ["DELETE", `/nodes/${existing}`, { body: { force: true } }, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes?status=active", {}, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes?status=ONLINE", {}, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes?page=0", {}, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes?page_size=201", {}, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes/audit-logs?from=yesterday", {}, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes/audit-logs?from=2000&to=1000", {}, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes/audit-logs?node_id=bad!", {}, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes/auth-events?event=DROP%20TABLE", {}, 400, "VALIDATION_FAILED"],
          ["GET", "/nodes/auth-events?page=-1", {}, 400, "VALIDATION_FAILED"],
          ["PUT", `/nodes/${existing}`, {}, 404, "ROUTE_NOT_FOUND"],
        ];
        for (const [method, path, input, status, code] of cases) {
          const options =
            input.raw !== undefined
              ? { token: root, rawBody: input.raw, headers: { "content-type": "application/json" } }
              : input.body !== undefined
                ? { token: root, body: input.body }
                : { token: root };
          refused(await call(app, method, `${V1}${path}`, options), status, code, `${method} ${path}`);
        }
        assert.deepEqual(await snapshotDb(cp.ctx), before);
      });

      test("roles: an operator reads everything but changes nothing; no token is 401", async () => {
        for (const path of [
          "/nodes",
          "/nodes/overview",
          `/nodes/${existing}`,
          `/nodes/${existing}/deploy-packages`,
          "/nodes/audit-logs",
          "/nodes/auth-events",
        ]) {
          json(await get(path, operator), 200, `operator GET ${path}`);
        }
        const pkg = (json(await get(`/nodes/${existing}/deploy-packages`), 200, "packages").items as Obj[])[0]?.id as string;
        const before = await snapshotDb(cp.ctx);
        refused(
          await create({ name: "op-node", host: "op.example.test", business_port: 1 }, operator),
          403,
          "FORBIDDEN",
          "operator create",
        );
        refused(await post(`/nodes/${existing}/disable`, operator), 403, "FORBIDDEN", "operator disable");
        refused(await post(`/nodes/${existing}/enable`, operator), 403, "FORBIDDEN", "operator enable");
        refused(await call(app, "DELETE", `${V1}/nodes/${existing}`, { token: operator }), 403, "FORBIDDEN", "operator delete");
        refused(await get(`/nodes/${existing}/deploy-packages/${pkg}/download`, operator), 403, "FORBIDDEN", "operator download");
        refused(await call(app, "GET", `${V1}/nodes`), 401, "UNAUTHENTICATED", "no token");
        refused(
          await call(app, "GET", `${V1}/nodes/${existing}/deploy-packages/${pkg}/download`),
          401,
          "UNAUTHENTICATED",
          "no token download",
        );
        assert.deepEqual(await snapshotDb(cp.ctx), before);
      });
    });

    describe("list, overview, detail", () => {
      const ids = { online: "", offline: "", disabled: "", provisioning: "" };
      before(async () => {
        // A separate fleet: every node from here on is named fleet-*.
        ids.online = await provisioned("fleet-online");
        ids.offline = await provisioned("fleet-offline");
        ids.disabled = await provisioned("fleet-disabled");
        const stuck = json(await create({ name: "fleet-provisioning", host: "prov.example.test", business_port: 8443 }), 201, "create");
        ids.provisioning = stuck.id as string;
        // Its onboarding job is cancelled, so the node stays provisioning for the tests below.
        assert.equal(json(await post(`/pki/jobs/${stuck.job_id}/cancel`), 200, "cancel").status, "cancelled");
        const now = cp.clock.now();
        await cp.ctx.controlDb
          .updateTable("nodes")
          .set({
            last_checkin_at: now - 10_000,
            sse_connected: 1,
            online_users: 42,
            ocsp_last_applied_at: now - 60_000,
            software_version: "0.1.0",
            metadata: JSON.stringify({ hostname: "edge-a", os: "linux" }),
            metrics: JSON.stringify({ cpu: 0.25 }),
            app_versions: JSON.stringify({ app_1: "1.2.3" }),
          })
          .where("id", "=", ids.online)
          .execute();
        await cp.ctx.controlDb
          .updateTable("nodes")
          .set({
            last_checkin_at: now - NODE_ONLINE_WINDOW_MS - 1,
            online_users: 7,
            ocsp_last_applied_at: now - OCSP_STALE_AFTER_MS - 1,
            metadata: "{not json",
          })
          .where("id", "=", ids.offline)
          .execute();
        json(await post(`/nodes/${ids.disabled}/disable`), 200, "disable");
      });

      const fleet = async (query: string) => {
        const page = json(await get(`/nodes?page_size=200${query}`), 200, `list ${query}`);
        return (page.items as Obj[]).filter((n) => String(n.name).startsWith("fleet-"));
      };

      test("each node shows its displayed status, and the status filter selects by it", async () => {
        const all = await fleet("");
        const byName = Object.fromEntries(all.map((n) => [n.name, n.status]));
        assert.deepEqual(byName, {
          "fleet-online": "online",
          "fleet-offline": "offline",
          "fleet-disabled": "disabled",
          "fleet-provisioning": "provisioning",
        });
        for (const status of ["online", "offline", "disabled", "provisioning"]) {
          const names = (await fleet(`&status=${status}`)).map((n) => n.name);
          assert.deepEqual(names, [`fleet-${status}`], status);
        }
      });

      test("pagination: page_size and total", async () => {
        const first = json(await get("/nodes?page=1&page_size=2"), 200, "page 1");
        assert.equal((first.items as Obj[]).length, 2);
        const total = first.total as number;
        assert.ok(total >= 4);
        const last = json(await get(`/nodes?page=${Math.ceil(total / 2)}&page_size=2`), 200, "last page");
        assert.ok((last.items as Obj[]).length >= 1);
        assert.equal(last.total, total);
      });

      test("the detail shows everything an operator watches, JSON columns parsed", async () => {
        const node = json(await get(`/nodes/${ids.online}`), 200, "detail");
        assert.equal(node.status, "online");
        assert.equal(node.sse_connected, true);
        assert.equal(node.software_version, "0.1.0");
        assert.equal(node.online_users, 42);
        assert.equal(node.last_checkin_at, cp.clock.now() - 10_000);
        assert.equal(node.ocsp_last_applied_at, cp.clock.now() - 60_000);
        assert.deepEqual(node.metadata, { hostname: "edge-a", os: "linux" });
        assert.deepEqual(node.metrics, { cpu: 0.25 });
        assert.deepEqual(node.app_versions, { app_1: "1.2.3" });
        const certs = node.certificates as Record<string, Obj>;
        assert.match(String(certs.server?.serial), /^[0-9a-f]{32}$/);
        assert.ok(Number(certs.server?.not_after) > cp.clock.now());
        assert.equal((node.onboarding_job as Obj).status, "succeeded");
        const offline = json(await get(`/nodes/${ids.offline}`), 200, "offline detail");
        assert.equal(offline.metadata, null, "a malformed JSON column reads as null, not a 500");
      });

      test("the overview counts displayed statuses, online users, SSE and stale OCSP", async () => {
        const overview = json(await get("/nodes/overview"), 200, "overview");
        const all = json(await get("/nodes?page_size=200"), 200, "all");
        const items = all.items as Obj[];
        const count = (status: string) => items.filter((n) => n.status === status).length;
        assert.equal(overview.total, items.length);
        assert.deepEqual(overview.by_status, {
          provisioning: count("provisioning"),
          online: count("online"),
          offline: count("offline"),
          disabled: count("disabled"),
        });
        assert.equal(overview.online_users, 42, "offline nodes' stale counts are not summed");
        assert.equal(overview.sse_connected, 1);
        const stale = overview.ocsp_stale as { count: number; nodes: Obj[]; threshold_ms: number };
        assert.equal(stale.threshold_ms, OCSP_STALE_AFTER_MS);
        const staleNames = stale.nodes.map((n) => n.name);
        assert.ok(staleNames.includes("fleet-offline"), "applied more than 1 h ago");
        assert.ok(!staleNames.includes("fleet-online"), "applied a minute ago");
        assert.ok(!staleNames.includes("fleet-disabled") && !staleNames.includes("fleet-provisioning"), "only active nodes are judged");
        assert.equal(stale.count, stale.nodes.length);
      });

      test("presence follows the clock: no checkin within 2 minutes → offline, and a stream flag left by a dead CP no longer counts", async () => {
        const sseCount = async () => Number(json(await get("/nodes/overview"), 200, "overview").sse_connected);
        const connectedBefore = await sseCount();
        cp.clock.advance(NODE_ONLINE_WINDOW_MS);
        const detail = json(await get(`/nodes/${ids.online}`), 200, "detail");
        assert.equal(detail.status, "offline");
        assert.equal(detail.sse_connected, false, "the flag is still 1 in the row, but the node stopped checking in");
        assert.equal(await sseCount(), connectedBefore - 1);
        assert.deepEqual(await fleet("&status=online"), []);
        await cp.ctx.controlDb.updateTable("nodes").set({ last_checkin_at: cp.clock.now() }).where("id", "=", ids.online).execute();
        const back = json(await get(`/nodes/${ids.online}`), 200, "detail");
        assert.equal(back.status, "online");
        assert.equal(back.sse_connected, true);
        assert.equal(await sseCount(), connectedBefore);
      });

      test("audit logs and auth events: paginated, filtered by node, event and time", async () => {
        const auditAll = json(await get(`/nodes/audit-logs?node_id=${ids.disabled}`), 200, "audit");
        const events = (auditAll.items as Obj[]).map((a) => a.event);
        assert.deepEqual(events.slice().sort(), ["node.created", "node.disabled", "node.provisioned"]);
        const created = (auditAll.items as Obj[]).find((a) => a.event === "node.created");
        assert.equal((created?.detail as Obj | undefined)?.name, "fleet-disabled");
        const onlyDisabled = json(await get(`/nodes/audit-logs?event=node.disabled&node_id=${ids.disabled}`), 200, "by event");
        assert.equal(onlyDisabled.total, 1);
        const future = json(await get(`/nodes/audit-logs?from=${cp.clock.now() + 1}`), 200, "future");
        assert.equal(future.total, 0);

        const at = cp.clock.now();
        await cp.ctx.controlDb
          .insertInto("node_auth_events")
          .values([
            {
              id: "nae_1",
              created_at: at - 1000,
              node_id: ids.online,
              event: "cert.rejected",
              peer: "10.0.0.1",
              cert_serial: "ab",
              detail: JSON.stringify({ reason: "revoked" }),
            },
            {
              id: "nae_2",
              created_at: at,
              node_id: ids.offline,
              event: "identity.mismatch",
              peer: "10.0.0.2",
              cert_serial: "cd",
              detail: null,
            },
          ])
          .execute();
        const auth = json(await get(`/nodes/auth-events?page_size=1`), 200, "auth events");
        assert.equal(auth.total, 2);
        assert.equal((auth.items as Obj[])[0]?.id, "nae_2", "newest first");
        const filtered = json(await get(`/nodes/auth-events?node_id=${ids.online}&to=${at - 1}`), 200, "filtered");
        assert.deepEqual(
          (filtered.items as Obj[]).map((e) => [e.id, e.detail]),
          [["nae_1", { reason: "revoked" }]],
        );
      });
    });

    describe("disable, enable and OCSP", () => {
      let nodeId: string;
      let serverPem: string;
      let clientPem: string;
      let tcpCaPem: string;
      let clientCaPem: string;

      before(async () => {
        // Through the shared helper, so the certificates checked are the ones the node receives.
        const node = await provisionNode(cp, { name: "ocsp-node", host: "ocsp.example.test" });
        nodeId = node.nodeId;
        const file = (path: string) => node.files[path]?.toString("utf8") ?? "";
        serverPem = file(node.manifest.files.server_cert);
        clientPem = file(node.manifest.files.client_cert);
        tcpCaPem = file(node.manifest.files.server_issuer);
        await node.cleanup();
        const cas = await cp.ctx.controlDb.selectFrom("certificate_authorities").select(["profile", "cert_pem"]).execute();
        clientCaPem = cas.find((c) => c.profile === "cp_node_client_ca")?.cert_pem ?? "";
        assert.equal(json(await get(`/nodes/${nodeId}`), 200, "detail").lifecycle_status, "active");
      });

      test("an active node's certificates are good", async () => {
        const status = await ocspStatus(cp, serverPem, tcpCaPem);
        assert.equal(status.kind, "good");
        assert.match(status.openssl, /cert\.pem: good/);
        assert.equal((await ocspStatus(cp, clientPem, clientCaPem)).kind, "good");
      });

      test("disable: status disabled, and OCSP answers revoked (certificateHold) from the disable time", async () => {
        cp.clock.advance(5000);
        const disabledAt = cp.clock.now();
        const node = json(await post(`/nodes/${nodeId}/disable`), 200, "disable");
        assert.equal(node.status, "disabled");
        assert.equal(node.disabled_at, disabledAt);
        const status = await ocspStatus(cp, serverPem, tcpCaPem);
        assert.equal(status.kind, "revoked");
        assert.equal(status.revokedAt, Math.floor(disabledAt / 1000) * 1000);
        assert.equal(status.reason, 6, "certificateHold");
        assert.match(status.openssl, /cert\.pem: revoked/);
        assert.match(status.openssl, /Reason: certificateHold/);
        assert.equal((await ocspStatus(cp, clientPem, clientCaPem)).kind, "revoked");
        const inventory = await cp.ctx.controlDb.selectFrom("certificates").select("status").where("owner_id", "=", nodeId).execute();
        assert.deepEqual(
          inventory.map((c) => c.status),
          ["valid", "valid"],
          "a hold is not a revocation in the inventory",
        );
      });

      test("disable again is idempotent: same disabled_at, one audit row", async () => {
        const first = (await cp.ctx.controlDb.selectFrom("nodes").select("disabled_at").where("id", "=", nodeId).executeTakeFirstOrThrow())
          .disabled_at;
        cp.clock.advance(1000);
        const node = json(await post(`/nodes/${nodeId}/disable`), 200, "disable again");
        assert.equal(node.disabled_at, first);
        const rows = await cp.ctx.controlDb
          .selectFrom("node_audit_logs")
          .select("event")
          .where("node_id", "=", nodeId)
          .where("event", "=", "node.disabled")
          .execute();
        assert.equal(rows.length, 1);
      });

      test("enable: active again, OCSP good again; enabling twice changes nothing", async () => {
        const node = json(await post(`/nodes/${nodeId}/enable`), 200, "enable");
        assert.equal(node.lifecycle_status, "active");
        assert.equal(node.disabled_at, null);
        assert.equal((await ocspStatus(cp, serverPem, tcpCaPem)).kind, "good");
        assert.equal((await ocspStatus(cp, clientPem, clientCaPem)).kind, "good");
        const before = await snapshotDb(cp.ctx);
        json(await post(`/nodes/${nodeId}/enable`), 200, "enable again");
        assert.deepEqual(await snapshotDb(cp.ctx), before);
      });

      test("a node disabled while provisioning stays disabled after its job, and enables to active", async () => {
        const created = json(await create({ name: "disabled-early", host: "early.example.test", business_port: 8443 }), 201, "create");
        const id = created.id as string;
        assert.equal(json(await post(`/nodes/${id}/disable`), 200, "disable").status, "disabled");
        assert.equal(json(await post(`/nodes/${id}/enable`), 200, "enable").lifecycle_status, "provisioning", "no certificates yet");
        json(await post(`/nodes/${id}/disable`), 200, "disable again");
        assert.equal((await worker.runOnce())?.outcome, "succeeded");
        const node = json(await get(`/nodes/${id}`), 200, "detail");
        assert.equal(node.status, "disabled");
        assert.equal((node.certificates as Obj).server !== null, true);
        const pem = (
          await cp.ctx.controlDb
            .selectFrom("certificates")
            .select("cert_pem")
            .where("owner_id", "=", id)
            .where("purpose", "=", "node_server")
            .executeTakeFirstOrThrow()
        ).cert_pem;
        assert.equal((await ocspStatus(cp, pem, tcpCaPem)).kind, "revoked");
        assert.equal(json(await post(`/nodes/${id}/enable`), 200, "enable").lifecycle_status, "active");
        assert.equal((await ocspStatus(cp, pem, tcpCaPem)).kind, "good");
      });
    });

    describe("delete", () => {
      test("revokes the certificates (cessationOfOperation), removes node and packages, keeps the audit trail", async () => {
        const nodeId = await provisioned("doomed");
        const certs = await cp.ctx.controlDb
          .selectFrom("certificates")
          .select(["id", "purpose", "cert_pem"])
          .where("owner_id", "=", nodeId)
          .execute();
        const tcpCaPem = (
          await cp.ctx.controlDb
            .selectFrom("certificate_authorities")
            .select("cert_pem")
            .where("profile", "=", "tcp_server_ca")
            .executeTakeFirstOrThrow()
        ).cert_pem;
        cp.clock.advance(2000);
        const deletedAt = cp.clock.now();
        const res = json(await call(app, "DELETE", `${V1}/nodes/${nodeId}`, { token: root }), 200, "delete");
        assert.equal(res.node_id, nodeId);
        assert.deepEqual((res.revoked_certificate_ids as string[]).slice().sort(), certs.map((c) => c.id).sort());
        refused(await get(`/nodes/${nodeId}`), 404, "NOT_FOUND", "gone");
        refused(await get(`/nodes/${nodeId}/deploy-packages`), 404, "NOT_FOUND", "packages gone");
        assert.equal((await cp.ctx.controlDb.selectFrom("deploy_packages").select("id").where("node_id", "=", nodeId).execute()).length, 0);
        const after = await cp.ctx.controlDb
          .selectFrom("certificates")
          .select(["status", "revocation_reason", "revoked_at"])
          .where("owner_id", "=", nodeId)
          .execute();
        assert.deepEqual(after, [
          { status: "revoked", revocation_reason: "cessationOfOperation", revoked_at: deletedAt },
          { status: "revoked", revocation_reason: "cessationOfOperation", revoked_at: deletedAt },
        ]);
        const status = await ocspStatus(cp, certs.find((c) => c.purpose === "node_server")?.cert_pem ?? "", tcpCaPem);
        assert.equal(status.kind, "revoked");
        assert.equal(status.reason, 5, "cessationOfOperation");
        assert.deepEqual(notices.at(-1), { kind: "node.deleted", nodeId });
        const trail = await cp.ctx.controlDb.selectFrom("node_audit_logs").select("event").where("node_id", "=", nodeId).execute();
        assert.ok(trail.some((t) => t.event === "node.deleted"));
        refused(await call(app, "DELETE", `${V1}/nodes/${nodeId}`, { token: root }), 404, "NOT_FOUND", "second delete");
      });

      test("deleting a node still provisioning cancels its pending job", async () => {
        const created = json(await create({ name: "doomed-early", host: "doomed.example.test", business_port: 8443 }), 201, "create");
        const res = json(await call(app, "DELETE", `${V1}/nodes/${created.id}`, { token: root }), 200, "delete");
        assert.deepEqual(res.cancelled_job_ids, [created.job_id]);
        assert.deepEqual(res.revoked_certificate_ids, []);
        const job = json(await get(`/pki/jobs/${created.job_id}`), 200, "job");
        assert.equal(job.status, "cancelled");
        assert.equal(job.last_error, "node deleted");
        assert.equal(await worker.runOnce(), null);
      });
    });
  });
}
