/**
 * Rotating the application client CA (POST /admin/v1/pki/ca-rotations and its phases), with a
 * real CP, real nodes and real SDK clients in process (test/helpers/deployment.ts), on SQLite and
 * PostgreSQL.
 *
 * What a rotation must never do is lock out the programs already shipped: an SDK client holding
 * a certificate of the old CA keeps working through prepare, publish and switch, and is refused
 * only after retire, once the nodes applied bundles that no longer hold its CA. And a switch must
 * not outrun the fleet: while a node has not applied the bundles holding the new CA, the clients
 * the new CA would sign could not reach it, so the switch is refused unless forced.
 *
 * - Bad input (a CA that cannot be rotated yet or an unknown one, unknown rotation, wrong phase
 *   order, a second open rotation, stray body fields) gets its error and changes nothing.
 * - prepare → publish → switch → rollback: new certificates come from the new CA while switched;
 *   the rollback makes the old CA active again, revokes what the new CA issued (superseded) and
 *   the nodes stop accepting the new CA.
 * - prepare → publish with a node stopped → switch refused (CA_ROTATION_NODES_PENDING), forced →
 *   new certificates from the new CA work, a deploy package built now carries the new CA, OCSP
 *   answers for both CAs → retire with revoke_leaves → the old-CA client is refused on a new
 *   handshake (layer 3), its certificate is revoked, the new-CA client keeps working.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { PACKAGE_FILES } from "../../src/shared/node-protocol/index.js";
import { buildOcspRequest, verifyOcspResponse } from "../../src/shared/pki/ocsp/index.js";
import { ROOT_PASSWORD } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";
import { type ClientMaterial, type DeployedNode, type Deployment, startDeployment, type TestApplication } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { unpackPackage } from "../helpers/nodes.js";
import { connectProbe, expectCode, type Probe } from "../helpers/sdk-clients.js";

type Obj = Record<string, any>;
const PASSWORD = "correct-horse-1";
const BASE = "/pki/ca-rotations";
/** Every client here comes from 127.0.0.1: refused attempts must not throttle the rest. */
const SETTINGS = { login_attempts_per_minute: 100_000 };
const POLICY = { max_devices_per_user: 100 };

for (const variant of dbVariants()) {
  describe(`application client CA rotation (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let n1: DeployedNode;
    let n2: DeployedNode;
    let app: TestApplication;
    let oldMaterial: ClientMaterial;
    let oldCaId: string;
    const username = "rotation-user";
    const open: Probe[] = [];
    let devices = 0;

    const connect = async (node: DeployedNode, material: ClientMaterial): Promise<Probe> => {
      devices += 1;
      const probe = await connectProbe({
        appId: app.appId,
        appSecret: app.secret,
        material,
        node: node.address,
        deviceId: `rot-${devices}`,
      });
      open.push(probe);
      return probe;
    };
    /** A new connection that logs in and answers a heartbeat: the client certificate works end to end. */
    const works = async (node: DeployedNode, material: ClientMaterial): Promise<Probe> => {
      const probe = await connect(node, material);
      probe.session = await probe.client.loginPassword(username, PASSWORD);
      await probe.client.heartbeat();
      return probe;
    };
    const appCas = async (): Promise<Obj[]> => (await d.admin("GET", "/pki/cas")).items.filter((ca: Obj) => ca.profile === "app_client_ca");
    const caPem = async (id: string): Promise<string> => (await appCas()).find((ca) => ca.id === id)?.certificate_pem;
    const issuedBy = (certPem: string, issuerPem: string) => {
      const cert = new X509Certificate(certPem);
      const issuer = new X509Certificate(issuerPem);
      return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
    };
    const detail = (id: string): Promise<Obj> => d.admin("GET", `${BASE}/${id}`);
    const waitUntilNodesApplied = (id: string, nodes: DeployedNode[]) =>
      waitFor(`${nodes.map((n) => n.nodeId).join(", ")} applied the published bundles`, async () => {
        const progress = (await detail(id)).progress;
        return nodes.every((n) => progress.nodes.find((p: Obj) => p.node_id === n.nodeId)?.done === true) ? progress : null;
      });
    /** What a refused request must leave untouched. */
    const snapshot = async () => ({
      cas: (await appCas()).map((ca) => `${ca.id}:${ca.status}`).sort(),
      rotations: (await d.admin("GET", `${BASE}?page_size=200`)).items.map((r: Obj) => `${r.id}:${r.phase}:${r.updated_at}`),
      audit: (await d.admin("GET", "/pki/audit-logs?page_size=1")).total,
      bundle: (await d.admin("GET", `/applications/${app.appId}/configs/app_client_ca_bundle`)).version,
    });
    const refused = async (method: string, path: string, body: unknown, status: number, code: string): Promise<Obj> => {
      const answer = await d.adminRaw(method, path, body);
      assert.equal(answer.status, status, `${method} ${path}: ${answer.text}`);
      assert.equal(answer.json?.error, code, answer.text);
      assert.ok(typeof answer.json.message === "string" && answer.json.message.length > 0);
      return answer.json;
    };
    const ocspStatus = async (certPem: string, issuerPem: string): Promise<string> => {
      const issuerDer = new X509Certificate(issuerPem).raw;
      const request = buildOcspRequest(new X509Certificate(certPem).raw, issuerDer);
      const res = await fetch(`http://127.0.0.1:${d.cp.ocspAddress()?.port}/ocsp`, {
        method: "POST",
        headers: { "content-type": "application/ocsp-request" },
        body: request.der,
      });
      const der = Buffer.from(await res.arrayBuffer());
      return verifyOcspResponse(der, { issuerDer, certId: request.certId, nonce: request.nonce, now: Date.now(), clockSkewMs: 60_000 })
        .status.kind;
    };
    const tlsRefusals = (node: DeployedNode, since: number) =>
      node
        .events()
        .slice(since)
        .filter((e) => e.msg === "client.refused");

    before(async () => {
      d = await startDeployment(variant, { label: `ca_rotation_${variant.name}` });
      n1 = await d.addNode("rotation-1");
      n2 = await d.addNode("rotation-2");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: SETTINGS });
      app = await d.createApp("CA Rotation", POLICY);
      oldMaterial = await d.issueClient(app.appId);
      await d.waitForApp(app.appId);
      await d.createUser(app.appId, username, PASSWORD);
      await waitFor("both nodes apply the settings and the policy", () =>
        d.nodes.every(
          (n) =>
            n.server.agent.store.serverRuntimeSettings().login_attempts_per_minute === SETTINGS.login_attempts_per_minute &&
            n.server.agent.store.appPolicy(app.appId).max_devices_per_user === POLICY.max_devices_per_user,
        ),
      );
      const cas = await appCas();
      assert.equal(cas.length, 1);
      oldCaId = cas[0]?.id;
    });

    after(async () => {
      await Promise.all(open.splice(0).map((p) => p.client.close()));
      await d?.stop();
    });

    test("bad input gets its error and changes nothing", async () => {
      const before = await snapshot();
      await refused("POST", BASE, { ca: "made_up_ca" }, 400, "VALIDATION_FAILED");
      await refused("POST", BASE, {}, 400, "VALIDATION_FAILED");
      await refused("POST", BASE, { ca: "app_client_ca", extra: true }, 400, "VALIDATION_FAILED");
      await refused("GET", `${BASE}?ca=made_up_ca`, undefined, 400, "VALIDATION_FAILED");
      await refused("GET", `${BASE}/car_missing`, undefined, 404, "NOT_FOUND");
      for (const step of ["publish", "switch", "retire", "rollback"])
        await refused("POST", `${BASE}/car_missing/${step}`, {}, 404, "NOT_FOUND");
      assert.deepEqual(await snapshot(), before);
      assert.equal((await d.admin("GET", BASE)).total, 0);

      // Refusals are in the agent audit trail too.
      const audit = await d.admin("GET", "/agent-audit-logs?action=pki.ca_rotation.prepare");
      assert.ok(audit.items.some((a: Obj) => a.result === "failure" && a.error_code === "VALIDATION_FAILED"));
    });

    test("prepare → publish → switch → rollback: the old CA is active again, the new CA's certificates are revoked and refused", async () => {
      const oldClient = await works(n1, oldMaterial);

      const prepared = await d.admin("POST", BASE, { ca: "app_client_ca" });
      assert.equal(prepared.phase, "prepared");
      assert.equal(prepared.open, true);
      assert.deepEqual(prepared.next_steps, ["publish", "rollback"]);
      assert.equal(prepared.old_ca.id, oldCaId);
      assert.equal(prepared.old_ca.status, "active");
      assert.equal(prepared.new_ca.status, "pending");
      assert.notEqual(prepared.new_ca.subject, prepared.old_ca.subject, "the CAs of one profile differ by name");
      assert.equal(prepared.progress, null);
      const id = prepared.id as string;
      assert.deepEqual((await appCas()).map((ca) => ca.status).sort(), ["active", "pending"]);

      // One open rotation per CA; steps only in order. Each refusal changes nothing.
      const before = await snapshot();
      const second = await refused("POST", BASE, { ca: "app_client_ca" }, 409, "CA_ROTATION_IN_PROGRESS");
      assert.equal(second.details?.rotation_id, id);
      const early = await refused("POST", `${BASE}/${id}/switch`, {}, 409, "CA_ROTATION_WRONG_PHASE");
      assert.match(early.message, /next step is publish or rollback/);
      await refused("POST", `${BASE}/${id}/switch`, { force: true }, 409, "CA_ROTATION_WRONG_PHASE");
      await refused("POST", `${BASE}/${id}/retire`, {}, 409, "CA_ROTATION_WRONG_PHASE");
      await refused("POST", `${BASE}/${id}/publish`, { force: true }, 400, "VALIDATION_FAILED");
      await refused("POST", `${BASE}/${id}/switch`, { force: "yes" }, 400, "VALIDATION_FAILED");
      assert.deepEqual(await snapshot(), before);
      // The old CA still signs.
      const stillOld = await d.issueClient(app.appId);
      assert.ok(issuedBy(stillOld.certPem, await caPem(oldCaId)));

      const published = await d.admin("POST", `${BASE}/${id}/publish`, {});
      assert.equal(published.phase, "published");
      assert.equal(published.new_ca.status, "next");
      assert.deepEqual(
        published.published_versions.map((v: Obj) => [v.type, v.scope]),
        [["app_client_ca_bundle", `app:${app.appId}`]],
      );
      const bundle = await d.admin("GET", `/applications/${app.appId}/configs/app_client_ca_bundle`);
      assert.equal(bundle.version, published.published_versions[0].version);
      assert.ok(bundle.content.pem.includes((await caPem(oldCaId)).trim()));
      assert.ok(bundle.content.pem.includes((await caPem(prepared.new_ca.id)).trim()));
      await refused("POST", `${BASE}/${id}/publish`, {}, 409, "CA_ROTATION_WRONG_PHASE");
      const progress = await waitUntilNodesApplied(id, [n1, n2]);
      assert.equal(progress.ready, true);
      assert.equal(progress.nodes_total, 2);
      assert.equal(progress.items, 1);

      // Both nodes apply the new bundle; the old-CA client, connected all along and new, still works.
      await oldClient.client.heartbeat();
      await works(n2, oldMaterial);

      const switched = await d.admin("POST", `${BASE}/${id}/switch`, {});
      assert.equal(switched.phase, "switched");
      assert.equal(switched.old_ca.status, "retiring");
      assert.equal(switched.new_ca.status, "active");
      assert.equal(switched.detail.switched.forced, false);
      const newMaterial = await d.issueClient(app.appId);
      assert.ok(issuedBy(newMaterial.certPem, await caPem(prepared.new_ca.id)), "issued by the new CA after the switch");
      await works(n1, newMaterial);
      await oldClient.client.heartbeat();
      await works(n1, oldMaterial);

      const rolledBack = await d.admin("POST", `${BASE}/${id}/rollback`, {});
      assert.equal(rolledBack.phase, "rolled_back");
      assert.equal(rolledBack.open, false);
      assert.deepEqual(rolledBack.next_steps, []);
      assert.equal(rolledBack.revoked_certificates, 1, "the one certificate the new CA issued");
      assert.equal(rolledBack.old_ca.status, "active");
      assert.equal(rolledBack.new_ca.status, "abandoned");
      assert.equal(rolledBack.detail.rolled_back.from_phase, "switched");
      const revoked = await d.admin("GET", `/pki/certs/${newMaterial.certificateId}`);
      assert.equal(revoked.status, "revoked");
      assert.equal(revoked.revocation_reason, "superseded");
      const afterRollback = await d.admin("GET", `/applications/${app.appId}/configs/app_client_ca_bundle`);
      assert.equal(afterRollback.content.pem.trim(), (await caPem(oldCaId)).trim(), "the bundle holds the old CA only");
      assert.ok(issuedBy((await d.issueClient(app.appId)).certPem, await caPem(oldCaId)), "the old CA signs again");
      await refused("POST", `${BASE}/${id}/rollback`, {}, 409, "CA_ROTATION_WRONG_PHASE");
      await refused("POST", `${BASE}/${id}/retire`, {}, 409, "CA_ROTATION_WRONG_PHASE");

      // Once a node applied the rollback's bundle, a new-CA client is refused: the new CA is in no
      // trust anchor any more (layer 1: the node's package names only the CA it was built with).
      await waitUntilNodesApplied(id, [n1, n2]);
      const since = n1.events().length;
      await assert.rejects(
        connect(n1, newMaterial),
        (error: Error) => isAuthNexusError(error, "CONNECTION_CLOSED") || isAuthNexusError(error, "CLIENT_CERT_REFUSED"),
      );
      const line = await waitFor("a [TLS] refusal", () =>
        n1
          .events()
          .slice(since)
          .find((e) => (e.msg === "handshake.failed" && e.layer === 1) || (e.msg === "client.refused" && e.layer === 3)),
      );
      assert.equal(line.category, "TLS");
      await oldClient.client.heartbeat();
      await works(n2, oldMaterial);

      const events = (await d.admin("GET", "/pki/audit-logs?page_size=200")).items
        .filter((a: Obj) => a.event.startsWith("ca_rotation.") && a.detail?.rotation_id === id)
        .map((a: Obj) => a.event)
        .reverse();
      assert.deepEqual(events, ["ca_rotation.prepared", "ca_rotation.published", "ca_rotation.switched", "ca_rotation.rolled_back"]);
      const logged = d
        .cpLogs()
        .filter((e) => e.category === "PKI" && String(e.msg).startsWith("ca_rotation.") && e.rotation_id === id)
        .map((e) => e.msg);
      assert.deepEqual(logged, ["ca_rotation.prepared", "ca_rotation.published", "ca_rotation.switched", "ca_rotation.rolled_back"]);
    });

    test("a switch waits for every node unless forced; after retire the old-CA client is refused on a new handshake", async () => {
      const n3 = await d.addNode("rotation-3");
      const oldClient = await works(n1, oldMaterial);
      const prepared = await d.admin("POST", BASE, { ca: "app_client_ca" });
      const id = prepared.id as string;
      const newCaId = prepared.new_ca.id as string;
      assert.equal(prepared.old_ca.id, oldCaId, "the CA the rollback made active again");
      const listed = await d.admin("GET", `${BASE}?ca=app_client_ca&open=true`);
      assert.deepEqual(
        listed.items.map((r: Obj) => r.id),
        [id],
      );
      assert.equal((await d.admin("GET", `${BASE}?open=false`)).total, 1);

      await n3.stop();
      await d.admin("POST", `${BASE}/${id}/publish`, {});
      const progress = await waitUntilNodesApplied(id, [n1, n2]);
      assert.equal(progress.ready, false);
      assert.equal(progress.nodes_total, 3);
      assert.equal(progress.nodes_done, 2);
      assert.equal(progress.nodes.find((p: Obj) => p.node_id === n3.nodeId)?.pending, 1);

      const before = await snapshot();
      const waiting = await refused("POST", `${BASE}/${id}/switch`, {}, 409, "CA_ROTATION_NODES_PENDING");
      assert.match(waiting.message, /1 of 3 node\(s\) have not applied/);
      assert.match(waiting.message, /rotation-3/);
      assert.deepEqual(
        waiting.details.pending_nodes.map((n: Obj) => n.node_id),
        [n3.nodeId],
      );
      assert.deepEqual(await snapshot(), before);
      assert.ok(issuedBy((await d.issueClient(app.appId)).certPem, await caPem(oldCaId)), "still the old CA");

      const forced = await d.admin("POST", `${BASE}/${id}/switch`, { force: true });
      assert.equal(forced.phase, "switched");
      assert.equal(forced.detail.switched.forced, true);
      assert.deepEqual(forced.detail.switched.pending_nodes, [n3.nodeId]);
      assert.ok(d.cpLogs().some((e) => e.msg === "ca_rotation.switch_forced" && e.rotation_id === id));
      // GET /pki/cas shows every CA of the profile with its status (the first rotation's successor abandoned).
      const cas = await appCas();
      assert.deepEqual(cas.map((ca) => ca.status).sort(), ["abandoned", "active", "retiring"]);
      assert.equal(cas.find((ca) => ca.id === oldCaId)?.status, "retiring");
      assert.equal(cas.find((ca) => ca.id === newCaId)?.status, "active");

      const newMaterial = await d.issueClient(app.appId);
      const newCaPem = await caPem(newCaId);
      const oldCaPem = await caPem(oldCaId);
      assert.ok(issuedBy(newMaterial.certPem, newCaPem));
      await works(n1, newMaterial);
      await works(n2, newMaterial);
      await oldClient.client.heartbeat();
      await works(n2, oldMaterial);
      // OCSP answers for both CAs while the old one is retiring.
      assert.equal(await ocspStatus(oldMaterial.certPem, oldCaPem), "good");
      assert.equal(await ocspStatus(newMaterial.certPem, newCaPem), "good");

      // A deploy package built now carries the new CA.
      const created = await d.admin("POST", "/nodes", { name: "rotation-package", host: "127.0.0.1", business_port: 8443 });
      const pkg = await waitFor(
        "deploy package built",
        async () =>
          ((await d.admin("GET", `/nodes/${created.id}/deploy-packages`)).items as { id: string; current: boolean }[]).find(
            (p) => p.current,
          ),
        20_000,
      );
      const download = await fetch(`${d.adminUrl}/nodes/${created.id}/deploy-packages/${pkg.id}/download`, {
        headers: {
          authorization: `Bearer ${(await d.admin("POST", "/auth/login", { username: "root", password: ROOT_PASSWORD })).access_token}`,
        },
      });
      assert.equal(download.status, 200);
      const unpacked = await unpackPackage(Buffer.from(await download.arrayBuffer()));
      try {
        assert.equal(String(unpacked.files[PACKAGE_FILES.app_client_ca]).trim(), newCaPem.trim());
      } finally {
        await unpacked.cleanup();
      }
      await d.admin("DELETE", `/nodes/${created.id}`);
      await d.admin("DELETE", `/nodes/${n3.nodeId}`);

      const oldValid = (await d.admin("GET", `/pki/certs?ca_profile=app_client_ca&status=valid&page_size=200`)).items.filter(
        (c: Obj) => c.id !== newMaterial.certificateId,
      );
      const retired = await d.admin("POST", `${BASE}/${id}/retire`, { revoke_leaves: true });
      assert.equal(retired.phase, "retired");
      assert.equal(retired.open, false);
      assert.equal(retired.old_ca.status, "retired");
      assert.equal(retired.new_ca.status, "active");
      assert.equal(retired.revoked_certificates, oldValid.length);
      assert.ok(oldValid.length >= 2, "the first client certificate and those issued before the switch");
      const bundle = await d.admin("GET", `/applications/${app.appId}/configs/app_client_ca_bundle`);
      assert.equal(bundle.content.pem.trim(), newCaPem.trim(), "the bundle holds the new CA only");
      assert.equal((await d.admin("GET", `/pki/certs/${oldMaterial.certificateId}`)).status, "revoked");
      assert.equal((await d.admin("GET", `/pki/certs/${newMaterial.certificateId}`)).status, "valid");
      assert.equal(await ocspStatus(oldMaterial.certPem, oldCaPem), "revoked");
      assert.equal(await ocspStatus(newMaterial.certPem, newCaPem), "good");
      await refused("POST", `${BASE}/${id}/rollback`, {}, 409, "CA_ROTATION_WRONG_PHASE");

      const after = await waitUntilNodesApplied(id, [n1, n2]);
      assert.equal(after.ready, true);
      for (const node of [n1, n2]) {
        const since = node.events().length;
        await expectCode(connect(node, oldMaterial), "CLIENT_CERT_REFUSED", `an old-CA client on ${node.nodeId} after retire`);
        await waitFor("a layer-3 refusal", () => tlsRefusals(node, since).find((e) => e.layer === 3));
        await works(node, newMaterial);
      }
      const audit = await d.admin("GET", "/agent-audit-logs?action=pki.ca_rotation.switch");
      assert.deepEqual(
        audit.items.filter((a: Obj) => a.target_id === id).map((a: Obj) => [a.result, a.error_code]),
        [
          ["success", null],
          ["failure", "CA_ROTATION_NODES_PENDING"],
        ],
      );
      // A new rotation may be prepared once this one is finished.
      const next = await d.admin("POST", BASE, { ca: "app_client_ca" });
      assert.equal(next.old_ca.id, newCaId);
      await d.admin("POST", `${BASE}/${next.id}/rollback`, {});
    });
  });
}
