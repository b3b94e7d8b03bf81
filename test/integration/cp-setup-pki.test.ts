/**
 * First-run setup and the PKI inventory through the real services on both databases: the
 * console token lifecycle, the one-transaction initialize (and its refusals), sealed CA keys,
 * the CP's TLS identity, revocation, and what Channel 4 reads from the inventory.
 */

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { after, before, describe, test } from "node:test";
import { ensureCpServerCertificate, loadCpTlsIdentity } from "../../src/cp/services/pki/cp-identity.js";
import { listCertificates, loadActiveCa, recordCertificate, revokeCertificate } from "../../src/cp/services/pki/inventory.js";
import { createInventoryResolver, loadOcspIssuers } from "../../src/cp/services/pki/ocsp-status.js";
import {
  consoleTokenPath,
  getSetupStatus,
  initializeSetup,
  PASSWORD_HASH_SECRET_NAME,
  prepareConsoleToken,
  verifyMasterKey,
} from "../../src/cp/services/setup/setup.js";
import { CP_CERT_RENEW_BEFORE_MS } from "../../src/shared/config/defaults.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import {
  CA_PROFILES,
  issueLeafCertificate,
  openSecret,
  parseCertificate,
  verifyCertificateChain,
  x509,
} from "../../src/shared/pki/index.js";
import { computeIssuerHashes } from "../../src/shared/pki/ocsp/index.js";
import { createTestCp, ROOT_PASSWORD, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

for (const variant of dbVariants()) {
  describe(`setup and PKI inventory on ${variant.name}`, { skip: variant.skip }, () => {
    after(() => variant.cleanup());

    describe("console token", () => {
      let cp: TestCp;
      before(async () => {
        cp = await createTestCp(variant, "token");
      });
      after(() => cp.close());

      test("is minted once into a 0600 file and kept across restarts while the file matches", async () => {
        const first = await prepareConsoleToken(cp.ctx);
        assert.ok(first.token && first.token.length >= 43);
        assert.equal(fs.statSync(first.path).mode & 0o777, 0o600);
        assert.equal(fs.readFileSync(first.path, "utf8").trim(), first.token);
        const again = await prepareConsoleToken(cp.ctx);
        assert.equal(again.token, null, "an existing token is not shown again");
        fs.rmSync(first.path);
        const replaced = await prepareConsoleToken(cp.ctx);
        assert.ok(replaced.token && replaced.token !== first.token, "a lost file gets a new token");
        await assert.rejects(
          initializeSetup(cp.ctx, { consoleToken: first.token, adminUsername: "root", adminPassword: ROOT_PASSWORD }, null),
          (e) => isAuthNexusError(e, "SETUP_TOKEN_INVALID"),
        );
      });
    });

    describe("initialize", () => {
      let cp: TestCp;
      let token: string;
      before(async () => {
        cp = await createTestCp(variant, "init");
        token = (await prepareConsoleToken(cp.ctx)).token ?? "";
      });
      after(() => cp.close());

      test("a wrong token is refused, logged under [Setup], and changes nothing", async () => {
        await assert.rejects(
          initializeSetup(cp.ctx, { consoleToken: "wrong-token", adminUsername: "root", adminPassword: ROOT_PASSWORD }, "10.0.0.9"),
          (e) => isAuthNexusError(e, "SETUP_TOKEN_INVALID"),
        );
        assert.ok(cp.logLines.some((l) => l.includes("setup.token_rejected") && l.includes("10.0.0.9")));
        assert.equal((await cp.ctx.controlDb.selectFrom("certificate_authorities").selectAll().execute()).length, 0);
        assert.deepEqual(await getSetupStatus(cp.ctx), { requires_setup: true });
      });

      test("a weak root password is refused before anything is created", async () => {
        await assert.rejects(initializeSetup(cp.ctx, { consoleToken: token, adminUsername: "root", adminPassword: "short" }, null), (e) =>
          isAuthNexusError(e, "WEAK_PASSWORD"),
        );
        assert.equal((await cp.ctx.controlDb.selectFrom("agents").selectAll().execute()).length, 0);
      });

      test("concurrent initializes: exactly one wins", async () => {
        const attempt = () => initializeSetup(cp.ctx, { consoleToken: token, adminUsername: "root", adminPassword: ROOT_PASSWORD }, null);
        const results = await Promise.allSettled([attempt(), attempt()]);
        assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
        const loser = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
        assert.ok(isAuthNexusError(loser.reason, "SETUP_IN_PROGRESS") || isAuthNexusError(loser.reason, "SETUP_ALREADY_COMPLETED"));
        await assert.rejects(attempt(), (e) => isAuthNexusError(e, "SETUP_ALREADY_COMPLETED"));
        assert.equal(fs.existsSync(consoleTokenPath(cp.ctx.dataDir)), false, "the consumed token file is removed");
      });

      test("creates four self-signed CAs whose keys are sealed under the master key", async () => {
        const cas = await cp.ctx.controlDb.selectFrom("certificate_authorities").selectAll().execute();
        assert.deepEqual(cas.map((c) => c.profile).sort(), [...CA_PROFILES].sort());
        for (const ca of cas) {
          const info = parseCertificate(ca.cert_pem);
          assert.equal(info.isCa, true);
          assert.equal(info.subject, info.issuer);
          assert.ok(!Buffer.from(ca.key_ciphertext).toString("latin1").includes("PRIVATE KEY"), "key must not be stored in the clear");
          const loaded = await loadActiveCa(cp.ctx, ca.profile as (typeof CA_PROFILES)[number]);
          assert.match(loaded.keyPem, /BEGIN PRIVATE KEY/);
        }
        await assert.rejects(loadActiveCa({ ...cp.ctx, masterKey: randomBytes(32) }, "tcp_server_ca"), (e) =>
          isAuthNexusError(e, "PKI_DECRYPT_FAILED"),
        );
      });

      test("a different master key is refused at start", async () => {
        await verifyMasterKey(cp.ctx);
        await assert.rejects(verifyMasterKey({ ...cp.ctx, masterKey: randomBytes(32) }), (e) => isAuthNexusError(e, "MASTER_KEY_INVALID"));
      });

      test("stores the password-hash server secret sealed, and the root agent", async () => {
        const secret = await cp.ctx.controlDb
          .selectFrom("server_secrets")
          .selectAll()
          .where("name", "=", PASSWORD_HASH_SECRET_NAME)
          .executeTakeFirstOrThrow();
        assert.equal(openSecret(cp.ctx.masterKey, Buffer.from(secret.ciphertext), PASSWORD_HASH_SECRET_NAME).length, 32);
        const root = await cp.ctx.controlDb.selectFrom("agents").selectAll().executeTakeFirstOrThrow();
        const audit = await cp.ctx.controlDb.selectFrom("agent_audit_logs").selectAll().where("action", "=", "setup.initialize").execute();
        assert.equal(audit.length, 1);
        assert.equal(audit[0]?.agent_id, root.id);
        assert.equal(audit[0]?.result, "success");
        assert.equal(root.role, "root");
        assert.match(root.password_hash, /^\$scrypt-sha256\$/);
        assert.ok(!root.password_hash.includes(ROOT_PASSWORD));
      });

      test("the CP server certificate chains to cp_server_ca with the public and loopback names", async () => {
        const identity = await loadCpTlsIdentity(cp.ctx);
        const verdict = await verifyCertificateChain({
          leaf: identity.certPem,
          trustedCas: [identity.serverCaPem],
          clock: cp.clock,
          expectedProfile: "cp_server",
        });
        assert.equal(verdict.ok, true);
        const info = parseCertificate(identity.certPem);
        assert.ok(info.sans.dns.includes("cp.example.test"));
        assert.ok(info.sans.dns.includes("localhost"));
        assert.ok(info.sans.ip.includes("127.0.0.1"));
        assert.match(identity.keyPem, /BEGIN PRIVATE KEY/);
        assert.deepEqual(identity.nodeClientCaPems.length, 1);
        assert.notEqual(identity.nodeClientCaPems[0], identity.serverCaPem);
      });

      test("issued certificates are in the inventory, revocable once, and OCSP reads them live", async () => {
        const ca = await loadActiveCa(cp.ctx, "tcp_server_ca");
        const leaf = await issueLeafCertificate({
          profile: "node_server",
          issuer: { certPem: ca.certPem, keyPem: ca.keyPem },
          commonName: "node-1.example.test",
          sans: { dns: ["node-1.example.test"] },
          ocspUrl: cp.ctx.publicOcspUrl,
          clock: cp.clock,
        });
        const id = await recordCertificate(cp.ctx.controlDb, cp.clock, {
          issued: leaf,
          caId: ca.id,
          leafProfile: "node_server",
          purpose: "node_server",
          ownerType: "node",
          ownerId: "nod_1",
          actor: "test",
        });
        const listed = await listCertificates(cp.ctx, { ownerType: "node", ownerId: "nod_1" }, { page: 1, pageSize: 10 });
        assert.equal(listed.total, 1);
        assert.equal(listed.items[0]?.serial, leaf.serialHex);
        assert.equal(listed.items[0]?.status, "valid");

        const resolve = createInventoryResolver(cp.ctx, await loadOcspIssuers(cp.ctx));
        const hashes = computeIssuerHashes(Buffer.from(new x509.X509Certificate(ca.certPem).rawData));
        const query = (serialHex: string, algorithm: "sha1" | "sha256") => ({
          hashAlgorithm: algorithm,
          issuerNameHash: hashes[algorithm].nameHash,
          issuerKeyHash: hashes[algorithm].keyHash,
          serialHex,
        });
        assert.deepEqual((await resolve(query(leaf.serialHex, "sha1") as never))?.status, { kind: "good" });
        assert.deepEqual((await resolve(query("0badc0de", "sha256") as never))?.status, { kind: "unknown" });

        cp.clock.advance(1000);
        const revoked = await revokeCertificate(cp.ctx, id, "keyCompromise", "test");
        assert.equal(revoked.status, "revoked");
        assert.equal(revoked.revocation_reason, "keyCompromise");
        assert.deepEqual((await resolve(query(leaf.serialHex, "sha256") as never))?.status, {
          kind: "revoked",
          revokedAt: cp.clock.now(),
          reason: 1,
        });
        await assert.rejects(revokeCertificate(cp.ctx, id, "superseded", "test"), (e) => isAuthNexusError(e, "CONFLICT"));
        const again = await Promise.allSettled([
          revokeCertificate(cp.ctx, id, "superseded", "a"),
          revokeCertificate(cp.ctx, id, "superseded", "b"),
        ]);
        assert.ok(
          again.every((r) => r.status === "rejected" && isAuthNexusError(r.reason, "CONFLICT")),
          "the first revocation's time and reason stand",
        );

        const audit = await cp.ctx.controlDb
          .selectFrom("pki_audit_logs")
          .select("event")
          .where("serial_hex", "=", leaf.serialHex)
          .execute();
        assert.deepEqual(audit.map((a) => a.event).sort(), ["cert.issued", "cert.revoked"]);

        const otherIssuer = { ...query(leaf.serialHex, "sha256"), issuerKeyHash: Buffer.alloc(32) };
        assert.equal(await resolve(otherIssuer as never), null, "an unknown issuer resolves to nothing (unauthorized)");
      });

      test("the CP renews its own server certificate when revoked or close to expiry, keeping its names", async () => {
        const before = await loadCpTlsIdentity(cp.ctx);
        await ensureCpServerCertificate(cp.ctx);
        assert.equal((await loadCpTlsIdentity(cp.ctx)).certPem, before.certPem, "a healthy certificate is kept");

        const [current] = (await listCertificates(cp.ctx, { ownerType: "control_plane", status: "valid" }, { page: 1, pageSize: 5 })).items;
        assert.ok(current);
        await revokeCertificate(cp.ctx, current.id, "keyCompromise", "test");
        await assert.rejects(loadCpTlsIdentity(cp.ctx), (e) => isAuthNexusError(e, "PKI_NOT_INITIALISED"));
        await ensureCpServerCertificate(cp.ctx);
        const renewed = await loadCpTlsIdentity(cp.ctx);
        assert.notEqual(renewed.certPem, before.certPem);
        assert.deepEqual(parseCertificate(renewed.certPem).sans, parseCertificate(before.certPem).sans);
        assert.equal(
          (
            await verifyCertificateChain({
              leaf: renewed.certPem,
              trustedCas: [renewed.serverCaPem],
              clock: cp.clock,
              expectedProfile: "cp_server",
            })
          ).ok,
          true,
        );

        const info = parseCertificate(renewed.certPem);
        cp.clock.set(info.notAfter - CP_CERT_RENEW_BEFORE_MS + 1000);
        await ensureCpServerCertificate(cp.ctx);
        assert.notEqual((await loadCpTlsIdentity(cp.ctx)).certPem, renewed.certPem, "renewed ahead of expiry");
        assert.ok(cp.logLines.some((l) => l.includes("cert.renewed")));
      });

      test("expired certificates are reported as expired by the inventory", async () => {
        cp.clock.advance(400 * 24 * 3600 * 1000);
        const expired = await listCertificates(cp.ctx, { status: "expired" }, { page: 1, pageSize: 10 });
        assert.ok(expired.items.some((c) => c.purpose === "cp_server"));
      });
    });
  });
}
