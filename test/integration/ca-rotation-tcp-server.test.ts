/**
 * Rotating the TCP server CA (the CA of every node's business certificate, which SDK programs
 * trust), with a real CP, real nodes and real SDK clients (must-staple) in process, on SQLite and
 * PostgreSQL.
 *
 * What the rotation must never do is cut a program off without warning: a connection opened
 * before the rotation stays up through every phase; after publish the SDK trust material holds
 * both CAs, so a program given it keeps connecting once the nodes serve new-CA certificates. A
 * program still holding only the old CA is refused on a NEW handshake after the switch: that is
 * why operators redistribute the bundle between publish and switch.
 *
 * - Bad input (the two CAs that still cannot be rotated, wrong phase order, a second open
 *   rotation, stray body fields) gets its error and changes nothing.
 * - prepare → publish → rollback before the switch: the SDK material holds the old CA only again.
 * - prepare → publish (both CAs handed out) → switch: every node gets a certificate rotation
 *   (one already under way is listed as such); the running node serves a new-CA certificate with
 *   a staple the new CA signed; both-CAs and new-CA-only programs connect, an old-CA-only one is
 *   refused; rollback is refused from now on; retire is refused while a (stopped) node still
 *   serves an old-CA certificate, and goes through with force; the SDK material then holds the
 *   new CA only.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { splitPemBundle } from "../../src/shared/pki/index.js";
import { buildOcspRequest, verifyOcspResponse } from "../../src/shared/pki/ocsp/index.js";
import { dbVariants } from "../helpers/databases.js";
import { type ClientMaterial, type DeployedNode, type Deployment, startDeployment, type TestApplication } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { connectProbe, expectCode, type Probe } from "../helpers/sdk-clients.js";

type Obj = Record<string, any>;
const PASSWORD = "correct-horse-2";
const BASE = "/pki/ca-rotations";
const SETTINGS = { login_attempts_per_minute: 100_000 };
const POLICY = { max_devices_per_user: 100 };

for (const variant of dbVariants()) {
  describe(`TCP server CA rotation (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let n1: DeployedNode;
    let n2: DeployedNode;
    let app: TestApplication;
    let oldMaterial: ClientMaterial;
    let oldCaId: string;
    const username = "tcp-rotation-user";
    const open: Probe[] = [];
    let devices = 0;

    const connect = async (node: DeployedNode, material: ClientMaterial): Promise<Probe> => {
      devices += 1;
      const probe = await connectProbe({
        appId: app.appId,
        appSecret: app.secret,
        material,
        node: node.address,
        deviceId: `tcp-${devices}`,
      });
      open.push(probe);
      return probe;
    };
    /** A new connection (must-staple) that logs in and answers a heartbeat. */
    const works = async (node: DeployedNode, material: ClientMaterial): Promise<Probe> => {
      const probe = await connect(node, material);
      assert.equal(probe.client.node?.staple, "verified");
      probe.session = await probe.client.loginPassword(username, PASSWORD);
      await probe.client.heartbeat();
      return probe;
    };
    const tcpCas = async (): Promise<Obj[]> => (await d.admin("GET", "/pki/cas")).items.filter((ca: Obj) => ca.profile === "tcp_server_ca");
    const caPem = async (id: string): Promise<string> => (await tcpCas()).find((ca) => ca.id === id)?.certificate_pem;
    const fingerprints = (bundle: string) => splitPemBundle(bundle).map((pem) => new X509Certificate(pem).fingerprint256);
    const fp = (pem: string) => new X509Certificate(pem).fingerprint256;
    const detail = (id: string): Promise<Obj> => d.admin("GET", `${BASE}/${id}`);
    /** What a refused request must leave untouched; the counters only while no node rotation runs meanwhile. */
    const snapshot = async (counters = true) => ({
      cas: (await tcpCas()).map((ca) => `${ca.id}:${ca.status}`).sort(),
      rotations: (await d.admin("GET", `${BASE}?page_size=200`)).items.map((r: Obj) => `${r.id}:${r.phase}:${r.updated_at}`),
      ...(counters
        ? {
            audit: (await d.admin("GET", "/pki/audit-logs?page_size=1")).total,
            jobs: (await d.admin("GET", "/pki/jobs?page_size=1")).total,
          }
        : {}),
    });
    const refused = async (method: string, path: string, body: unknown, status: number, code: string): Promise<Obj> => {
      const answer = await d.adminRaw(method, path, body);
      assert.equal(answer.status, status, `${method} ${path}: ${answer.text}`);
      assert.equal(answer.json?.error, code, answer.text);
      assert.ok(typeof answer.json.message === "string" && answer.json.message.length > 0);
      return answer.json;
    };
    /** The OCSP responder's answer for `certPem`, verified as signed by `issuerPem` itself. */
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
    const nodeServerCert = async (nodeId: string): Promise<Obj> => {
      const certs = await d.admin("GET", `/pki/certs?owner_type=node&owner_id=${nodeId}&profile=node_server&page_size=200`);
      return d.admin("GET", `/pki/certs/${certs.items[0].id}`);
    };
    const nodeRotation = (nodeId: string, id: string) => d.admin("GET", `/nodes/${nodeId}/certs/rotations/${id}`);

    before(async () => {
      d = await startDeployment(variant, { label: `tcp_ca_rotation_${variant.name}`, cpFlags: { "cert-rotation-grace": "1" } });
      n1 = await d.addNode("tcp-rotation-1");
      n2 = await d.addNode("tcp-rotation-2");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: SETTINGS });
      app = await d.createApp("TCP CA Rotation", POLICY);
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
      const cas = await tcpCas();
      assert.equal(cas.length, 1);
      oldCaId = cas[0]?.id;
      assert.equal(splitPemBundle(oldMaterial.serverCaPem).length, 1);
    });

    after(async () => {
      await Promise.all(open.splice(0).map((p) => p.client.close()));
      await d?.stop();
    });

    test("bad input changes nothing", async () => {
      const before = await snapshot();
      await refused("POST", BASE, { ca: "no_such_ca" }, 400, "VALIDATION_FAILED");
      await refused("POST", BASE, { ca: "tcp_server_ca", force: true }, 400, "VALIDATION_FAILED");
      assert.deepEqual(await snapshot(), before);
    });

    test("prepare → publish → rollback before the switch: the SDK material holds the old CA only again, the nodes are untouched", async () => {
      const prepared = await d.admin("POST", BASE, { ca: "tcp_server_ca" });
      assert.equal(prepared.new_ca.status, "pending");
      assert.equal(prepared.progress, null);
      const published = await d.admin("POST", `${BASE}/${prepared.id}/publish`, {});
      assert.deepEqual(published.published_versions, [], "nothing is delivered to the nodes");
      assert.equal(fingerprints((await d.issueClient(app.appId)).serverCaPem).length, 2);
      const rolledBack = await d.admin("POST", `${BASE}/${prepared.id}/rollback`, {});
      assert.equal(rolledBack.phase, "rolled_back");
      assert.equal(rolledBack.old_ca.status, "active");
      assert.equal(rolledBack.new_ca.status, "abandoned");
      assert.equal(rolledBack.revoked_certificates, 0);
      const material = await d.issueClient(app.appId);
      assert.deepEqual(fingerprints(material.serverCaPem), [fp(await caPem(oldCaId))]);
      assert.deepEqual(fingerprints(material.ocspSignerCaPem), [fp(await caPem(oldCaId))]);
      for (const node of [n1, n2]) assert.equal((await nodeServerCert(node.nodeId)).ca_profile, "tcp_server_ca");
      assert.equal((await d.admin("GET", `/nodes/${n1.nodeId}/certs/rotations`)).items.length, 0);
      await works(n1, oldMaterial);
    });

    test("publish hands out both CAs; switch moves the nodes onto the new CA with no open connection lost; retire waits for every node unless forced", async (t) => {
      // Opened before anything happens, with the old CA only: it must stay up to the end.
      const keeper = await works(n1, oldMaterial);

      const prepared = await d.admin("POST", BASE, { ca: "tcp_server_ca" });
      const id = prepared.id as string;
      const newCaId = prepared.new_ca.id as string;
      assert.equal(prepared.old_ca.id, oldCaId);
      assert.match(prepared.new_ca.subject, / G3$/, "the third CA of the profile (the second was abandoned)");
      assert.equal(fingerprints((await d.issueClient(app.appId)).serverCaPem).length, 1, "pending: not handed out yet");

      // Out of order, a second prepare, stray fields: refused, nothing changes.
      const before = await snapshot();
      await refused("POST", BASE, { ca: "tcp_server_ca" }, 409, "CA_ROTATION_IN_PROGRESS");
      await refused("POST", `${BASE}/${id}/switch`, {}, 409, "CA_ROTATION_WRONG_PHASE");
      await refused("POST", `${BASE}/${id}/retire`, { force: true }, 409, "CA_ROTATION_WRONG_PHASE");
      await refused("POST", `${BASE}/${id}/retire`, { force: "yes" }, 400, "VALIDATION_FAILED");
      assert.deepEqual(await snapshot(), before);

      const published = await d.admin("POST", `${BASE}/${id}/publish`, {});
      assert.equal(published.new_ca.status, "next");
      assert.deepEqual(published.published_versions, []);
      assert.match(published.detail.published.operator_action, /Redistribute the SDK trust bundle/);
      // Per node, the CA of its current certificate; nothing waits on a node before the switch.
      assert.equal(published.progress.ready, true);
      assert.deepEqual(
        published.progress.nodes.map((n: Obj) => [n.node_id, n.server_ca_id, n.on_new_ca, n.done]),
        [
          [n1.nodeId, oldCaId, false, true],
          [n2.nodeId, oldCaId, false, true],
        ],
      );
      const oldCaPem = await caPem(oldCaId);
      const newCaPem = await caPem(newCaId);
      const bothMaterial = await d.issueClient(app.appId);
      assert.deepEqual(fingerprints(bothMaterial.serverCaPem), [fp(oldCaPem), fp(newCaPem)]);
      assert.deepEqual(fingerprints(bothMaterial.ocspSignerCaPem), [fp(oldCaPem), fp(newCaPem)]);
      await works(n1, bothMaterial);
      const newOnlyMaterial: ClientMaterial = { ...bothMaterial, serverCaPem: newCaPem, ocspSignerCaPem: newCaPem };

      // n2: a rotation already under way (issued from the old CA), then the node stops for good.
      const manual = await d.admin("POST", `/nodes/${n2.nodeId}/certs/rotate`);
      await n2.stop();
      await waitFor("n2's rotation is issued", async () => (await nodeRotation(n2.nodeId, manual.id)).status === "delivering");

      const started = performance.now();
      const switched = await d.admin("POST", `${BASE}/${id}/switch`, {});
      assert.equal(switched.phase, "switched");
      assert.equal(switched.old_ca.status, "retiring");
      assert.equal(switched.new_ca.status, "active");
      assert.deepEqual(switched.next_steps, ["retire"], "no rollback once the nodes move");
      const requested = switched.detail.switched.node_rotations as Obj[];
      assert.deepEqual(
        requested.map((r) => [r.node_id, r.outcome]),
        [
          [n1.nodeId, "requested"],
          [n2.nodeId, "already_in_progress"],
        ],
      );
      assert.equal(requested[1]?.rotation_id, manual.id);
      const n1Rotation = (await d.admin("GET", `/nodes/${n1.nodeId}/certs/rotations`)).items[0];
      assert.equal(n1Rotation.id, requested[0]?.rotation_id);
      assert.equal(n1Rotation.reason, "ca_rotation");

      const before2 = await snapshot(false);
      const noRollback = await refused("POST", `${BASE}/${id}/rollback`, {}, 409, "CA_ROTATION_WRONG_PHASE");
      assert.match(noRollback.message, /Cannot roll back a tcp_server_ca rotation after the switch/);
      assert.deepEqual(noRollback.details.next_steps, ["retire"]);
      assert.deepEqual(await snapshot(false), before2);

      const progress = await waitFor(
        "n1 serves a certificate of the new CA",
        async () => {
          const p = (await detail(id)).progress;
          return p.nodes.find((n: Obj) => n.node_id === n1.nodeId)?.done ? p : null;
        },
        30_000,
      );
      t.diagnostic(`[${variant.name}] switch → n1 on the new CA: ${(performance.now() - started).toFixed(0)} ms`);
      assert.equal(progress.ready, false);
      const n1Progress = progress.nodes.find((n: Obj) => n.node_id === n1.nodeId);
      assert.deepEqual([n1Progress.server_ca_id, n1Progress.on_new_ca, n1Progress.rotation_id], [newCaId, true, n1Rotation.id]);
      assert.ok(["applied", "completed"].includes(n1Progress.rotation_status), n1Progress.rotation_status);
      const n2Progress = progress.nodes.find((n: Obj) => n.node_id === n2.nodeId);
      assert.deepEqual([n2Progress.on_new_ca, n2Progress.done, n2Progress.rotation_id], [false, false, manual.id]);

      // New handshakes: a new-CA certificate, stapled with a response the new CA signed.
      const served = await nodeServerCert(n1.nodeId);
      assert.ok(new X509Certificate(served.certificate_pem).checkIssued(new X509Certificate(newCaPem)));
      assert.equal(await ocspStatus(served.certificate_pem, newCaPem), "good");
      assert.equal(n1.server.agent.stapler.status().status, "good");
      await works(n1, bothMaterial);
      await works(n1, newOnlyMaterial);
      await expectCode(connect(n1, oldMaterial), "NODE_CERT_REFUSED", "an old-CA-only program on a new handshake after the switch");
      await keeper.client.heartbeat();

      // Retire waits for n2 (stopped, still on its old-CA certificate).
      const before3 = await snapshot(false);
      const waiting = await refused("POST", `${BASE}/${id}/retire`, {}, 409, "CA_ROTATION_NODES_PENDING");
      assert.match(waiting.message, /1 of 2 node\(s\) do not serve a server certificate of the new CA yet \(tcp-rotation-2\)/);
      assert.deepEqual(
        waiting.details.pending_nodes.map((n: Obj) => [n.node_id, n.rotation_id]),
        [[n2.nodeId, manual.id]],
      );
      assert.deepEqual(await snapshot(false), before3);

      // n1's rotation completes (the grace is 1 s), then retire with force.
      await waitFor("n1's rotation completes", async () => (await nodeRotation(n1.nodeId, n1Rotation.id)).status === "completed", 20_000);
      const retired = await d.admin("POST", `${BASE}/${id}/retire`, { force: true, revoke_leaves: true });
      assert.equal(retired.phase, "retired");
      assert.equal(retired.old_ca.status, "retired");
      assert.equal(retired.new_ca.status, "active");
      assert.equal(retired.detail.retired.forced, true);
      assert.deepEqual(retired.detail.retired.pending_nodes, [n2.nodeId]);
      assert.ok(retired.revoked_certificates >= 1, "n2's old-CA certificates");
      assert.ok(d.cpLogs().some((e) => e.msg === "ca_rotation.retire_forced" && e.rotation_id === id));
      const afterRetire = await d.issueClient(app.appId);
      assert.deepEqual(fingerprints(afterRetire.serverCaPem), [fp(newCaPem)]);
      assert.deepEqual(fingerprints(afterRetire.ocspSignerCaPem), [fp(newCaPem)]);
      await works(n1, afterRetire);
      await works(n1, bothMaterial);
      await refused("POST", `${BASE}/${id}/rollback`, {}, 409, "CA_ROTATION_WRONG_PHASE");

      // The connection opened before the rotation is still the same one and still answers.
      await keeper.client.heartbeat();
      assert.equal(keeper.count("disconnected"), 0);

      const events = (await d.admin("GET", "/pki/audit-logs?page_size=200")).items
        .filter((a: Obj) => a.event.startsWith("ca_rotation.") && a.detail?.rotation_id === id)
        .map((a: Obj) => a.event)
        .reverse();
      assert.deepEqual(events, ["ca_rotation.prepared", "ca_rotation.published", "ca_rotation.switched", "ca_rotation.retired"]);
      const audit = await d.admin("GET", "/agent-audit-logs?action=pki.ca_rotation.retire");
      const retires = audit.items.filter((a: Obj) => a.target_id === id).map((a: Obj) => [a.result, a.error_code]);
      assert.deepEqual(retires[0], ["success", null], "the forced retire, newest first");
      assert.deepEqual(retires[1], ["failure", "CA_ROTATION_NODES_PENDING"]);
    });
  });
}
