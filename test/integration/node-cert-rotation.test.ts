/**
 * Rotating a node's certificates (POST /admin/v1/nodes/:nid/certs/rotate) while it serves, with a
 * real CP and a real node in process (test/helpers/deployment.ts) on SQLite and PostgreSQL, and
 * 200 real SDK clients connected and making requests throughout.
 *
 * - The rotation issues new business server and CP client certificates and a new package; the
 *   node receives them on a config pull, staples the new certificate's OCSP response, swaps its
 *   listener and its CP client without a restart, persists them and acks.
 * - No SDK connection drops and no request fails; a new handshake gets the new certificate with
 *   a good staple.
 * - The old CP client certificate is refused once the grace period after the ack ends, and the
 *   retire job revokes the old certificates.
 * - A node restarted afterwards comes up on the new credentials (the old ones are refused by then).
 * - A second rotation while one waits is refused and changes nothing.
 */
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { Agent, request } from "undici";
import { nodePaths } from "../../src/shared/node-protocol/index.js";
import { splitPemBundle } from "../../src/shared/pki/index.js";
import { dbVariants } from "../helpers/databases.js";
import { type ClientMaterial, type DeployedNode, type Deployment, startDeployment, type TestApplication } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { connectProbe, expectCode, type Probe } from "../helpers/sdk-clients.js";

const CLIENTS = 200;
const LOGGED_IN = 20;
const PASSWORD = "rotate-horse-1";
const GRACE_SECONDS = 2;
/** Every client comes from 127.0.0.1: the per-IP limits must leave room for all of them. */
const SETTINGS = { login_attempts_per_minute: 100_000, max_connections_per_ip: 1000 };

const spkiPinOf = (pem: string) =>
  createHash("sha256")
    .update(new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" }))
    .digest("base64");
const sha256 = (pem: string) => createHash("sha256").update(new X509Certificate(pem).raw).digest("hex");

interface Load {
  requests: number;
  failures: string[];
  stop(): Promise<void>;
}

/** Every client sends a request in turn (heartbeats; the logged-in ones also read variables) until stopped. */
function keepBusy(probes: Probe[]): Load {
  const load: Load = { requests: 0, failures: [], stop: async () => {} };
  let running = true;
  const loops = probes.map(async (probe, index) => {
    while (running) {
      try {
        if (probe.session && index % 2 === 0) await probe.client.variables();
        else await probe.client.heartbeat();
        load.requests += 1;
      } catch (error) {
        load.failures.push(`${probe.name}: ${(error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });
  load.stop = async () => {
    running = false;
    await Promise.all(loops);
  };
  return load;
}

/** The certificate and staple a fresh TLS handshake with the node sees. */
async function handshake(node: DeployedNode, material: ClientMaterial): Promise<{ sha256: string; stapled: boolean }> {
  // requestOCSP is missing from @types/node's ConnectionOptions.
  const options: tls.ConnectionOptions & { requestOCSP: boolean } = {
    host: node.address.host,
    port: node.address.port,
    ca: splitPemBundle(material.serverCaPem),
    cert: material.certPem,
    key: material.keyPem,
    requestOCSP: true,
    minVersion: "TLSv1.2",
  };
  const socket = tls.connect(options);
  let stapled = false;
  socket.on("OCSPResponse", (response: Buffer) => {
    stapled = response.length > 0;
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", () => resolve());
    socket.once("error", reject);
  });
  const fingerprint = createHash("sha256")
    .update(socket.getPeerX509Certificate()?.raw ?? Buffer.alloc(0))
    .digest("hex");
  socket.destroy();
  return { sha256: fingerprint, stapled };
}

for (const variant of dbVariants()) {
  describe(`rotating a node's certificates under load (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let node: DeployedNode;
    let app: TestApplication;
    let material: ClientMaterial;
    const probes: Probe[] = [];

    before(async () => {
      d = await startDeployment(variant, { label: `rotation_${variant.name}`, cpFlags: { "cert-rotation-grace": String(GRACE_SECONDS) } });
      node = await d.addNode("rotating-1");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: SETTINGS });
      app = await d.createApp("Rotation", { max_devices_per_user: LOGGED_IN + 5 });
      material = await d.issueClient(app.appId);
      await d.waitForApp(app.appId);
      await d.createUser(app.appId, "rotation-user", PASSWORD);
      await waitFor(
        "the node applies the settings and the policy",
        () =>
          node.server.agent.store.appPolicy(app.appId).max_devices_per_user === LOGGED_IN + 5 &&
          node.server.agent.store.serverRuntimeSettings().max_connections_per_ip === SETTINGS.max_connections_per_ip,
      );
    });

    after(async () => {
      await Promise.all(probes.splice(0).map((p) => p.client.close()));
      await d?.stop();
    });

    const probeBase = () => ({ appId: app.appId, appSecret: app.secret, material, node: node.address });
    const rotation = (id: string) => d.admin("GET", `/nodes/${node.nodeId}/certs/rotations/${id}`);

    test("200 connected clients see no drop and no failed request; new handshakes get the new certificate with a good staple; the old client certificate is refused after the grace; a restart uses the new credentials", async (t) => {
      for (let i = 0; i < CLIENTS; i += 10) {
        const batch = await Promise.all(
          Array.from({ length: 10 }, (_, k) =>
            connectProbe({ appId: app.appId, appSecret: app.secret, material, node: node.address, deviceId: `rot-${i + k}` }),
          ),
        );
        probes.push(...batch);
      }
      for (const probe of probes.slice(0, LOGGED_IN)) probe.session = await probe.client.loginPassword("rotation-user", PASSWORD);

      const manifestBefore = JSON.parse(await fs.readFile(node.agentFile as string, "utf8"));
      const dir = path.dirname(node.agentFile as string);
      const oldClient = {
        cert: await fs.readFile(path.join(dir, manifestBefore.files.client_cert), "utf8"),
        key: await fs.readFile(path.join(dir, manifestBefore.files.client_key), "utf8"),
        ca: await fs.readFile(path.join(dir, manifestBefore.files.cp_ca), "utf8"),
      };
      const before = await handshake(node, material);
      const oldNodePin = spkiPinOf(
        (await d.admin("GET", `/pki/certs/${(await d.admin("GET", `/nodes/${node.nodeId}`)).certificates.server.id}`)).certificate_pem,
      );
      const oldPinned = await connectProbe({ ...probeBase(), deviceId: "rot-old-pinned", spkiPins: [oldNodePin] });
      probes.push(oldPinned);
      const oldPackages = (await d.admin("GET", `/nodes/${node.nodeId}/deploy-packages`)).items.length;

      const load = keepBusy(probes);
      t.after(() => load.stop());
      const started = performance.now();
      const answer = await d.adminRaw("POST", `/nodes/${node.nodeId}/certs/rotate`);
      assert.equal(answer.status, 202, answer.text);
      const rotationId = answer.json.id as string;
      assert.equal(answer.json.rotation_url, `/admin/v1/nodes/${node.nodeId}/certs/rotations/${rotationId}`);
      assert.equal(answer.json.jobs[0].kind, "node_cert_rotate");

      // A second request while the first waits: refused, nothing queued.
      const second = await d.adminRaw("POST", `/nodes/${node.nodeId}/certs/rotate`);
      assert.equal(second.status, 409, second.text);
      assert.equal(second.json.error, "NODE_ROTATION_IN_PROGRESS");
      assert.equal(second.json.details.rotation_id, rotationId);

      const applied = await waitFor(
        "the node applies the rotation",
        async () => {
          const view = await rotation(rotationId);
          return view.status === "applied" || view.status === "completed" ? view : null;
        },
        30_000,
      );
      t.diagnostic(`[${variant.name}] rotate → node acked: ${(performance.now() - started).toFixed(0)} ms`);
      const newServer = await d.admin("GET", `/pki/certs/${applied.new_server_cert_id}`);
      const newClient = await d.admin("GET", `/pki/certs/${applied.new_client_cert_id}`);
      assert.equal(newServer.profile, "node_server");
      assert.equal(newClient.profile, "node_client");
      assert.equal((await d.admin("GET", `/nodes/${node.nodeId}/deploy-packages`)).items.length, oldPackages + 1);

      // New handshakes: the new certificate, stapled; a new SDK client (must-staple) connects.
      const pin = createHash("sha256")
        .update(new X509Certificate(newServer.certificate_pem).publicKey.export({ type: "spki", format: "der" }))
        .digest("base64");
      assert.equal(applied.new_server_spki_pin, pin, "the view names the new certificate's SPKI pin");
      const after = await handshake(node, material);
      assert.notEqual(after.sha256, before.sha256);
      assert.equal(after.sha256, sha256(newServer.certificate_pem));
      assert.equal(after.stapled, true);
      assert.equal(node.server.agent.stapler.status().status, "good");
      const fresh = await connectProbe({ appId: app.appId, appSecret: app.secret, material, node: node.address, deviceId: "rot-fresh" });
      probes.push(fresh);
      // A program pinning the tcp_server_ca key connects across the rotation; one pinning the old node key does not.
      const caPin = spkiPinOf(splitPemBundle(material.serverCaPem)[0] as string);
      const pinned = await connectProbe({ ...probeBase(), deviceId: "rot-ca-pin", spkiPins: [caPin] });
      probes.push(pinned);
      await expectCode(connectProbe({ ...probeBase(), deviceId: "rot-old-pin", spkiPins: [oldNodePin] }), "NODE_CERT_REFUSED");
      assert.equal(fresh.client.node?.staple, "verified");

      // Through the grace period and the retire job, still under load.
      const completed = await waitFor(
        "the retire job completes the rotation",
        async () => {
          const view = await rotation(rotationId);
          return view.status === "completed" ? view : null;
        },
        30_000,
      );
      assert.deepEqual(
        completed.jobs.map((j: { kind: string; status: string }) => [j.kind, j.status]),
        [
          ["node_cert_rotate", "succeeded"],
          ["node_cert_retire", "succeeded"],
        ],
      );
      await load.stop();
      assert.deepEqual(load.failures, [], "no request failed");
      assert.ok(load.requests > CLIENTS, `requests made during the rotation: ${load.requests}`);
      const dropped = probes.filter((p) => p.count("disconnected") > 0).map((p) => p.name);
      assert.deepEqual(dropped, [], "no SDK connection dropped");
      t.diagnostic(`[${variant.name}] ${load.requests} requests from ${CLIENTS} clients during the rotation, 0 failed, 0 dropped`);

      // Every step is in the PKI audit log, once.
      for (const event of ["rotation.requested", "rotation.issued", "rotation.delivered", "rotation.applied", "rotation.completed"]) {
        const rows = (await d.admin("GET", `/pki/audit-logs?event=${event}`)).items as { detail: { rotation_id?: string } | string }[];
        const ours = rows.filter((r) => JSON.stringify(r.detail).includes(rotationId));
        assert.equal(ours.length, 1, `${event} audited once`);
      }

      for (const id of [applied.old_server_cert_id, applied.old_client_cert_id]) {
        const old = await d.admin("GET", `/pki/certs/${id}`);
        assert.equal(old.status, "revoked");
        assert.equal(old.revocation_reason, "superseded");
      }

      // The old CP client certificate: refused on the node API.
      const cpPort = d.cp.cpAddress()?.port;
      const oldAgent = new Agent({ connect: { ca: oldClient.ca, cert: oldClient.cert, key: oldClient.key, servername: "localhost" } });
      try {
        const res = await request(`https://127.0.0.1:${cpPort}${nodePaths.checkin(node.nodeId)}`, {
          method: "POST",
          dispatcher: oldAgent,
          headers: { "content-type": "application/json" },
          body: "{}",
        });
        const body = (await res.body.json()) as { error: string };
        assert.equal(res.statusCode, 403);
        assert.equal(body.error, "NODE_CERT_REVOKED");
      } finally {
        await oldAgent.close();
      }

      // The new credentials were persisted: the manifest names them and the old files are gone.
      const manifestAfter = JSON.parse(await fs.readFile(node.agentFile as string, "utf8"));
      assert.equal(sha256(await fs.readFile(path.join(dir, manifestAfter.files.server_cert), "utf8")), sha256(newServer.certificate_pem));
      assert.equal(sha256(await fs.readFile(path.join(dir, manifestAfter.files.client_cert), "utf8")), sha256(newClient.certificate_pem));
      await assert.rejects(fs.access(path.join(dir, manifestBefore.files.client_key)));
      const keyMode = (await fs.stat(path.join(dir, manifestAfter.files.client_key))).mode & 0o777;
      assert.equal(keyMode, 0o600);

      // A restart comes up on them (the old client certificate would be refused by now).
      await Promise.all(probes.splice(0).map((p) => p.client.close()));
      await node.restart?.();
      assert.equal(node.server.agent.status().last_checkin?.ok, true);
      assert.equal((await handshake(node, material)).sha256, sha256(newServer.certificate_pem));
    });

    test("a rotation of an unknown node is a 404 and queues nothing", async () => {
      const jobsBefore = (await d.admin("GET", "/pki/jobs?limit=200")).items.length;
      const answer = await d.adminRaw("POST", "/nodes/nod_missing/certs/rotate");
      assert.equal(answer.status, 404, answer.text);
      assert.equal((await d.admin("GET", "/pki/jobs?limit=200")).items.length, jobsBefore);
      const bad = await d.adminRaw("POST", `/nodes/${node.nodeId}/certs/rotate`, { reason: "x" });
      assert.equal(bad.status, 400, bad.text);
      const missing = await d.adminRaw("GET", `/nodes/${node.nodeId}/certs/rotations/rot_missing`);
      assert.equal(missing.status, 404, missing.text);
    });

    test("a node whose client certificate is revoked cannot be rotated (it could never receive them): 409 naming the reissue, nothing queued", async () => {
      const detail = await d.admin("GET", `/nodes/${node.nodeId}`);
      const clientCertId = detail.certificates.client.id as string;
      await d.admin("POST", `/pki/certs/${clientCertId}/revoke`, { reason: "keyCompromise" });
      const jobsBefore = (await d.admin("GET", "/pki/jobs?limit=200")).items.length;
      const answer = await d.adminRaw("POST", `/nodes/${node.nodeId}/certs/rotate`);
      assert.equal(answer.status, 409, answer.text);
      assert.equal(answer.json.error, "CONFLICT");
      assert.match(answer.json.message, /reissue-package/);
      assert.equal((await d.admin("GET", "/pki/jobs?limit=200")).items.length, jobsBefore);
    });
  });
}
