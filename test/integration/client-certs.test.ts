/**
 * Application client certificates through the admin API in process, on SQLite and on
 * PostgreSQL: issuance (an app_client leaf that chains to app_client_ca, clientAuth, exactly the
 * app's URI SAN, a key that matches and is stored nowhere), the inventory and PKI audit records,
 * the SDK configuration (valid against sdkConfigSchema, only active nodes, in creation order),
 * the list, and every refusal (unknown app, recycle bin, bad input, operator) changing nothing.
 */
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type Kysely, sql } from "kysely";
import { createPkiJobWorker, type JobWorker } from "../../src/cp/jobs/index.js";
import { LEAF_VALIDITY_DAYS } from "../../src/shared/config/defaults.js";
import { appUri, parseCertificate, verifyCertificateChain } from "../../src/shared/pki/index.js";
import { SDK_CONFIG_FILES, sdkConfigSchema } from "../../src/shared/sdk-config.js";
import { type AdminApp, buildAdminApp, type CallResult, call, loginAs, snapshotDb } from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

type Obj = Record<string, unknown>;
const V1 = "/admin/v1";
const DAY_MS = 86_400_000;
const CLOCK_SKEW_MS = 5 * 60_000;
const ADMIN_PASSWORD = "Admin-Passw0rd-ClientCerts";
const OPERATOR_PASSWORD = "Operator-Passw0rd-ClientCerts";
const ISSUE_FIELDS = [
  "certificate_id",
  "certificate_pem",
  "not_after",
  "not_before",
  "ocsp_signer_ca_pem",
  "private_key_pem",
  "sdk_config",
  "serial",
  "server_ca_pem",
];

function json(res: CallResult, status: number, label: string): Obj {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  assert.ok(res.json && typeof res.json === "object", `${label}: no JSON body`);
  return res.json as Obj;
}

function refused(res: CallResult, status: number, code: string, label: string): void {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  assert.equal((res.json as Obj | undefined)?.error, code, `${label}: ${res.text.slice(0, 400)}`);
}

/** The base64 body of a PEM, on one line: what would show up if the key were stored or logged anywhere. */
function pemBody(pem: string): string {
  return pem
    .replace(/-----[A-Z ]+-----/g, "")
    .replace(/\s+/g, "")
    .slice(0, 60);
}

/** Whether any row of any table in either database holds `needle` (as text or bytes). */
async function databasesContain(cp: TestCp, needle: string): Promise<string[]> {
  const found: string[] = [];
  for (const [label, db] of [
    ["control", cp.ctx.controlDb],
    ["runtime", cp.ctx.runtimeDb],
  ] as const) {
    const anyDb = db as unknown as Kysely<unknown>;
    for (const table of await anyDb.introspection.getTables()) {
      const { rows } = await sql<Record<string, unknown>>`select * from ${sql.table(table.name)}`.execute(anyDb);
      for (const row of rows) {
        const text = Object.values(row)
          .map((v) => (Buffer.isBuffer(v) || v instanceof Uint8Array ? Buffer.from(v).toString("latin1") : String(v)))
          .join("\u0001");
        if (text.includes(needle)) found.push(`${label}.${table.name}`);
      }
    }
  }
  return found;
}

for (const variant of dbVariants()) {
  describe(`application client certificates on ${variant.name}`, { skip: variant.skip }, () => {
    let cp: TestCp;
    let app: AdminApp;
    let worker: JobWorker;
    let root: string;
    let admin: string;
    let adminId: string;
    let operator: string;
    let appId: string;
    let binAppId: string;
    let appClientCaPem: string;
    let tcpServerCaPem: string;

    const issue = (id: string, body?: unknown, token = admin) =>
      call(app, "POST", `${V1}/applications/${id}/client-certs`, { token, ...(body !== undefined ? { body } : {}) });
    const list = (id: string, query = "", token = admin) => call(app, "GET", `${V1}/applications/${id}/client-certs${query}`, { token });
    const createNode = async (name: string, host: string, port: number, onboard: boolean) => {
      cp.clock.advance(1000); // creation order is created_at order
      const created = json(await call(app, "POST", `${V1}/nodes`, { token: root, body: { name, host, business_port: port } }), 201, name);
      if (onboard) {
        const report = await worker.runOnce();
        assert.equal(report?.jobId, created.job_id);
        assert.equal(report?.outcome, "succeeded", report?.error);
      }
      return created.id as string;
    };

    before(async () => {
      cp = await createTestCp(variant, "clientcerts");
      await completeSetup(cp.ctx);
      app = (await buildAdminApp(cp)).app;
      worker = createPkiJobWorker(cp.ctx);
      root = (await loginAs(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      const newAgent = async (username: string, password: string, role: string) =>
        json(await call(app, "POST", `${V1}/agents`, { token: root, body: { username, password, role } }), 201, username);
      adminId = (await newAgent("cc-admin", ADMIN_PASSWORD, "admin")).id as string;
      await newAgent("cc-operator", OPERATOR_PASSWORD, "operator");
      admin = (await loginAs(app, "cc-admin", ADMIN_PASSWORD)).access_token;
      operator = (await loginAs(app, "cc-operator", OPERATOR_PASSWORD)).access_token;
      appId = json(await call(app, "POST", `${V1}/applications`, { token: admin, body: { name: "Acme Game" } }), 201, "app")
        .app_id as string;
      binAppId = json(await call(app, "POST", `${V1}/applications`, { token: admin, body: { name: "Binned App" } }), 201, "bin app")
        .app_id as string;
      json(await call(app, "DELETE", `${V1}/applications/${binAppId}`, { token: admin }), 200, "to the recycle bin");
      const cas = json(await call(app, "GET", `${V1}/pki/cas`, { token: admin }), 200, "cas").items as Obj[];
      const caPem = (profile: string) => cas.find((ca) => ca.profile === profile && ca.status === "active")?.certificate_pem as string;
      appClientCaPem = caPem("app_client_ca");
      tcpServerCaPem = caPem("tcp_server_ca");
      assert.ok(appClientCaPem && tcpServerCaPem);
    });
    after(async () => {
      await cp?.close();
      await variant.cleanup();
    });

    test("with no active node the SDK configuration lists none (the only thing sdkConfigSchema then refuses)", async () => {
      const issued = json(await issue(appId), 201, "issue without nodes");
      const config = issued.sdk_config as Obj;
      assert.deepEqual(config.nodes, []);
      const parsed = sdkConfigSchema.safeParse(config);
      assert.equal(parsed.success, false);
      assert.deepEqual(
        parsed.error?.issues.map((i) => i.path.join(".")),
        ["nodes"],
      );
    });

    describe("with nodes in every lifecycle state", () => {
      let nodeA: string;
      let nodeC: string;
      let issued: Obj;

      before(async () => {
        nodeA = await createNode("zz-edge-a", "edge-a.example.test", 8443, true);
        const nodeB = await createNode("edge-b-disabled", "edge-b.example.test", 8444, true);
        json(await call(app, "POST", `${V1}/nodes/${nodeB}/disable`, { token: root }), 200, "disable B");
        nodeC = await createNode("aa-edge-c", "2001:DB8::1", 9443, true);
        await createNode("edge-d-provisioning", "edge-d.example.test", 8445, false);
        const nodes = json(await call(app, "GET", `${V1}/nodes`, { token: root }), 200, "nodes").items as Obj[];
        assert.deepEqual(nodes.map((n) => n.lifecycle_status).sort(), ["active", "active", "disabled", "provisioning"]);
      });

      test("an admin issues an app_client certificate: 201 with the certificate, its key once, the CA bundles and an SDK configuration", async () => {
        issued = json(await issue(appId, { common_name: "Acme Game SDK", validity_days: 30 }), 201, "issue");
        assert.deepEqual(Object.keys(issued).sort(), ISSUE_FIELDS);
        assert.match(issued.certificate_id as string, /^crt_/);
        assert.equal(issued.server_ca_pem, tcpServerCaPem);
        assert.equal(issued.ocsp_signer_ca_pem, tcpServerCaPem);
      });

      test("the certificate chains to app_client_ca, has the clientAuth EKU and exactly the app's URI SAN", async () => {
        const pem = issued.certificate_pem as string;
        const info = parseCertificate(pem);
        assert.deepEqual(info.sans, { dns: [], ip: [], uri: [appUri(appId)] });
        assert.deepEqual(info.extendedKeyUsages, ["clientAuth"]);
        assert.equal(info.isCa, false);
        assert.equal(info.mustStaple, false);
        assert.deepEqual(info.ocspUrls, [cp.ctx.publicOcspUrl]);
        assert.match(info.subject, /CN=Acme Game SDK/);
        assert.equal(info.serialHex, issued.serial);
        assert.equal(info.notBefore, issued.not_before);
        assert.equal(info.notAfter, issued.not_after);
        assert.equal(info.notAfter - info.notBefore, 30 * DAY_MS + CLOCK_SKEW_MS);

        const chain = await verifyCertificateChain({
          leaf: pem,
          trustedCas: [appClientCaPem],
          clock: cp.clock,
          expectedProfile: "app_client",
        });
        assert.equal(chain.ok, true, JSON.stringify(chain));
        assert.equal(chain.ok && chain.issuerPem.trim(), appClientCaPem.trim());
        const wrongCa = await verifyCertificateChain({ leaf: pem, trustedCas: [tcpServerCaPem], clock: cp.clock });
        assert.equal(wrongCa.ok, false);
        assert.equal(!wrongCa.ok && wrongCa.reason, "UNTRUSTED_ISSUER");
      });

      test("the private key is a PKCS#8 key for that certificate, and it is stored and logged nowhere", async () => {
        const keyPem = issued.private_key_pem as string;
        assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
        const spki = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
        const { createHash } = await import("node:crypto");
        assert.equal(
          createHash("sha256").update(spki).digest("hex"),
          parseCertificate(issued.certificate_pem as string).publicKeySpkiSha256,
        );
        assert.deepEqual(await databasesContain(cp, pemBody(keyPem)), [], "the key body is in no table");
        const logs = cp.logLines.join("\n");
        assert.ok(!logs.includes(pemBody(keyPem)), "the key is not logged");
        assert.ok(!logs.includes("PRIVATE KEY"), "no key material in logs");
      });

      test("sdk_config validates against sdkConfigSchema and lists only the active nodes, in creation order", () => {
        const parsed = sdkConfigSchema.parse(issued.sdk_config);
        assert.deepEqual(parsed, {
          format: 1,
          app_id: appId,
          nodes: [
            { host: "edge-a.example.test", port: 8443 },
            { host: "2001:db8::1", port: 9443 },
          ],
          files: { ...SDK_CONFIG_FILES },
          must_staple: true,
          spki_pins: [],
        });
        assert.deepEqual(issued.sdk_config, parsed, "nothing left for defaults to fill in");
        assert.ok(nodeA && nodeC);
      });

      test("the inventory records it, owned by the application; PKI and agent audit trails name it", async () => {
        const id = issued.certificate_id as string;
        const detail = json(await call(app, "GET", `${V1}/pki/certs/${id}`, { token: operator }), 200, "cert detail");
        assert.equal(detail.owner_type, "application");
        assert.equal(detail.owner_id, appId);
        assert.equal(detail.purpose, "app_client");
        assert.equal(detail.ca_profile, "app_client_ca");
        assert.equal(detail.profile, "app_client");
        assert.equal(detail.status, "valid");
        assert.equal(detail.certificate_pem, issued.certificate_pem);

        const pkiAudit = await cp.ctx.controlDb.selectFrom("pki_audit_logs").selectAll().where("certificate_id", "=", id).execute();
        assert.deepEqual(
          pkiAudit.map((a) => [a.event, a.actor, a.ca_profile, a.serial_hex]),
          [["cert.issued", adminId, "app_client_ca", issued.serial]],
        );
        assert.equal(JSON.parse(pkiAudit[0]?.detail ?? "{}").owner_type, "application");

        const agentAudit = await cp.ctx.controlDb
          .selectFrom("agent_audit_logs")
          .selectAll()
          .where("action", "=", "application.client_cert.issue")
          .where("result", "=", "success")
          .execute();
        assert.equal(agentAudit.length, 2, "the issue without nodes and this one");
        const last = agentAudit.find((a) => a.detail?.includes(id));
        assert.equal(last?.target_type, "application");
        assert.equal(last?.target_id, appId);
        assert.equal(last?.agent_id, adminId);
        assert.ok(!(last?.detail ?? "").includes("PRIVATE"), "the audit detail holds no key");
      });

      test("defaults: the application's name as CN, LEAF_VALIDITY_DAYS of validity (an empty body is fine)", async () => {
        const res = await call(app, "POST", `${V1}/applications/${appId}/client-certs`, { token: root });
        const info = parseCertificate(json(res, 201, "defaults").certificate_pem as string);
        assert.match(info.subject, /CN=Acme Game/);
        assert.equal(info.notAfter - info.notBefore, LEAF_VALIDITY_DAYS * DAY_MS + CLOCK_SKEW_MS);
        const max = json(await issue(appId, { validity_days: LEAF_VALIDITY_DAYS, common_name: "x" }), 201, "max validity");
        assert.equal(parseCertificate(max.certificate_pem as string).subject, "CN=x");
      });

      test("GET lists only this application's client certificates, without keys; any role may read", async () => {
        const page = json(await list(appId, "", operator), 200, "list");
        assert.equal(page.total, 4);
        const items = page.items as Obj[];
        assert.ok(items.some((i) => i.id === issued.certificate_id));
        for (const item of items) {
          assert.equal(item.owner_id, appId);
          assert.equal(item.purpose, "app_client");
          assert.ok(!("private_key_pem" in item) && !("certificate_pem" in item), "no PEMs in the list");
        }
        assert.ok(!JSON.stringify(page).includes("PRIVATE KEY"));
        const paged = json(await list(appId, "?page=2&page_size=3"), 200, "page 2");
        assert.equal((paged.items as Obj[]).length, 1);

        json(
          await call(app, "POST", `${V1}/pki/certs/${issued.certificate_id}/revoke`, { token: admin, body: { reason: "superseded" } }),
          200,
          "revoke",
        );
        const revoked = json(await list(appId, "?status=revoked"), 200, "revoked").items as Obj[];
        assert.deepEqual(
          revoked.map((i) => i.id),
          [issued.certificate_id],
        );
        assert.equal(json(await list(appId, "?status=valid"), 200, "valid").total, 3);
        refused(await list(appId, "?status=bogus"), 400, "VALIDATION_FAILED", "bad status");
        assert.deepEqual(
          json(await list(binAppId), 200, "recycle-bin app list").items,
          [],
          "an app in the recycle bin may still be listed",
        );
        refused(await list("app_doesnotexist"), 404, "NOT_FOUND", "unknown app list");
        refused(await list(appId, "", "A".repeat(43)), 401, "UNAUTHENTICATED", "bad token");
      });

      test("refusals change nothing: unknown app 404, recycle bin 409, bad input 400, operator 403, no token 401", async () => {
        const baseline = await snapshotDb(cp.ctx);
        const cases: Array<[string, () => Promise<CallResult>, number, string]> = [
          ["unknown application", () => issue("app_doesnotexist", {}), 404, "NOT_FOUND"],
          ["id that cannot be ours", () => issue("no.such.id", {}), 404, "NOT_FOUND"],
          ["application in the recycle bin", () => issue(binAppId, {}), 409, "APPLICATION_DELETED"],
          ["recycle bin wins over a bad body", () => issue(binAppId, { validity_days: 0 }), 409, "APPLICATION_DELETED"],
          ["validity_days 0", () => issue(appId, { validity_days: 0 }), 400, "VALIDATION_FAILED"],
          ["validity_days -1", () => issue(appId, { validity_days: -1 }), 400, "VALIDATION_FAILED"],
          ["validity_days over the maximum", () => issue(appId, { validity_days: LEAF_VALIDITY_DAYS + 1 }), 400, "VALIDATION_FAILED"],
          ["validity_days fractional", () => issue(appId, { validity_days: 1.5 }), 400, "VALIDATION_FAILED"],
          ["validity_days a string", () => issue(appId, { validity_days: "30" }), 400, "VALIDATION_FAILED"],
          ["validity_days null", () => issue(appId, { validity_days: null }), 400, "VALIDATION_FAILED"],
          ["common_name empty", () => issue(appId, { common_name: "   " }), 400, "VALIDATION_FAILED"],
          ["common_name 65 characters", () => issue(appId, { common_name: "x".repeat(65) }), 400, "VALIDATION_FAILED"],
          ["common_name with a quote", () => issue(appId, { common_name: "a' OR '1'='1" }), 400, "VALIDATION_FAILED"],
          ["common_name with CR/LF", () => issue(appId, { common_name: "a\r\nb" }), 400, "VALIDATION_FAILED"],
          ["common_name with angle brackets", () => issue(appId, { common_name: "<script>" }), 400, "VALIDATION_FAILED"],
          ["common_name a number", () => issue(appId, { common_name: 5 }), 400, "VALIDATION_FAILED"],
          ["unknown field", () => issue(appId, { owner_id: "app_other" }), 400, "VALIDATION_FAILED"],
          ["a JSON array", () => issue(appId, []), 400, "VALIDATION_FAILED"],
          ["operator", () => issue(appId, {}, operator), 403, "FORBIDDEN"],
          ["no token", () => call(app, "POST", `${V1}/applications/${appId}/client-certs`, { body: {} }), 401, "UNAUTHENTICATED"],
        ];
        for (const [label, send, status, code] of cases) {
          refused(await send(), status, code, label);
          assert.deepEqual(await snapshotDb(cp.ctx), baseline, `${label}: the database changed`);
        }
        const failures = await cp.ctx.controlDb
          .selectFrom("agent_audit_logs")
          .select(["error_code", "target_id"])
          .where("action", "=", "application.client_cert.issue")
          .where("result", "=", "failure")
          .execute();
        // Every authenticated refusal is audited (the unauthenticated one has nobody to record).
        assert.equal(failures.length, cases.length - 1);
        assert.ok(failures.some((f) => f.error_code === "FORBIDDEN" && f.target_id === appId));
        assert.ok(failures.some((f) => f.error_code === "APPLICATION_DELETED" && f.target_id === binAppId));
      });
    });
  });
}
