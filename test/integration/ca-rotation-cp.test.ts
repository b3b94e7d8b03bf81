/**
 * Rotating the two CP CAs in phases, with a real CP and two real nodes in process, on SQLite and
 * PostgreSQL. Neither rotation may cut a node off the CP at any step.
 *
 * cp_node_client_ca (the CA of the nodes' CP client certificates):
 * - publish: the CP's node API trusts both CAs;
 * - switch: every node is rotated onto a client certificate of the new CA;
 * - retire: refused while a node is not there yet (unless forced); then the node API trusts only
 *   the new CA, and the old CA's certificates fail the TLS handshake;
 * - rollback after the switch is refused.
 *
 * cp_server_ca (the CA of the CP's node API certificate, which nodes trust via files.cp_ca):
 * - publish: every node is rotated with a CP trust bundle holding both CAs; the switch waits for it;
 * - switch: the CP serves a certificate of the new CA; a restarted node still reaches it;
 * - rollback after the switch: the CP serves a certificate of the old CA again;
 * - a second rotation through retire: the nodes get a bundle holding only the new CA.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { Agent, request } from "undici";
import { nodePaths } from "../../src/shared/node-protocol/index.js";
import { splitPemBundle } from "../../src/shared/pki/index.js";
import { dbVariants } from "../helpers/databases.js";
import { type DeployedNode, type Deployment, startDeployment } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";

type Obj = Record<string, any>;
const BASE = "/pki/ca-rotations";

/** The certificate the CP's node API presents to a fresh handshake. */
async function cpCertificate(port: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false, servername: "localhost" });
    socket.once("secureConnect", () => {
      const cert = socket.getPeerX509Certificate();
      socket.destroy();
      if (cert) resolve(cert);
      else reject(new Error("no certificate"));
    });
    socket.once("error", reject);
  });
}

for (const variant of dbVariants()) {
  describe(`rotating the CP CAs (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let n1: DeployedNode;
    let n2: DeployedNode;

    before(async () => {
      d = await startDeployment(variant, { label: `ca_rotation_cp_${variant.name}`, cpFlags: { "cert-rotation-grace": "1" } });
      n1 = await d.addNode("cp-ca-1");
      n2 = await d.addNode("cp-ca-2");
    });
    after(async () => {
      await d?.stop();
    });

    const caOf = async (profile: string, status: string): Promise<Obj> =>
      (await d.admin("GET", "/pki/cas")).items.find((c: Obj) => c.profile === profile && c.status === status);
    const rotation = (id: string): Promise<Obj> => d.admin("GET", `${BASE}/${id}`);
    const ready = (id: string, what: string) =>
      waitFor(
        what,
        async () => {
          const view = await rotation(id);
          return view.progress?.ready ? view : null;
        },
        30_000,
      );
    /** Each running node checks in successfully after now (the CP still accepts it). */
    const everyNodeChecksIn = async (nodes: DeployedNode[]) => {
      const since = Date.now();
      for (const node of nodes) node.server.agent.wake("checkin");
      await waitFor("every node checks in", () =>
        nodes.every((node) => {
          const last = node.server.agent.status().last_checkin;
          return last?.ok && last.at >= since;
        }),
      );
    };
    const cpCaFile = async (node: DeployedNode): Promise<string[]> => {
      const file = node.agentFile as string;
      const manifest = JSON.parse(await fs.readFile(file, "utf8"));
      return splitPemBundle(await fs.readFile(path.join(path.dirname(file), manifest.files.cp_ca), "utf8"));
    };

    test("cp_node_client_ca: publish → switch (nodes rotated) → retire gated on them → old-CA certificates fail the handshake; no rollback after the switch", async () => {
      const dir = path.dirname(n1.agentFile as string);
      const manifest = JSON.parse(await fs.readFile(n1.agentFile as string, "utf8"));
      const old = {
        cert: await fs.readFile(path.join(dir, manifest.files.client_cert), "utf8"),
        key: await fs.readFile(path.join(dir, manifest.files.client_key), "utf8"),
        ca: await fs.readFile(path.join(dir, manifest.files.cp_ca), "utf8"),
      };
      const oldCa = await caOf("cp_node_client_ca", "active");

      const prepared = await d.admin("POST", BASE, { ca: "cp_node_client_ca" });
      const id = prepared.id as string;
      await d.admin("POST", `${BASE}/${id}/publish`);
      await waitFor("the node API trusts both client CAs", () =>
        d.cpLogs().some((e) => e.msg === "identity.reloaded" && e.node_client_cas === 2),
      );
      await everyNodeChecksIn([n1, n2]);

      // Other CP processes reload their trust within a minute of the publish: the switch waits for that, or is forced.
      const early = await d.adminRaw("POST", `${BASE}/${id}/switch`, {});
      assert.equal(early.status, 409, early.text);
      assert.equal(early.json.error, "CA_ROTATION_NODES_PENDING");
      assert.equal(typeof early.json.details.not_before, "number");
      assert.equal((await rotation(id)).phase, "published");
      const switched = await d.admin("POST", `${BASE}/${id}/switch`, { force: true });
      assert.deepEqual(
        switched.detail.switched.node_rotations.map((r: Obj) => r.outcome),
        ["requested", "requested"],
      );
      const done = await ready(id, "both nodes present new-CA client certificates");
      assert.ok(done.progress.nodes.every((n: Obj) => n.on_new_ca && n.client_ca_id === prepared.new_ca.id));
      await everyNodeChecksIn([n1, n2]);

      const rollback = await d.adminRaw("POST", `${BASE}/${id}/rollback`);
      assert.equal(rollback.status, 409, rollback.text);
      assert.equal(rollback.json.error, "CA_ROTATION_WRONG_PHASE");

      await d.admin("POST", `${BASE}/${id}/retire`, { revoke_leaves: true });
      await waitFor("the node API trusts only the new client CA", () =>
        d.cpLogs().some((e) => e.msg === "identity.reloaded" && e.node_client_cas === 1),
      );
      assert.equal((await caOf("cp_node_client_ca", "retired"))?.id, oldCa.id);
      await everyNodeChecksIn([n1, n2]);

      // The old CA's certificate no longer completes a handshake with the node API.
      const agent = new Agent({ connect: { ca: old.ca, cert: old.cert, key: old.key, servername: "localhost" } });
      try {
        await assert.rejects(
          request(`https://127.0.0.1:${d.cp.cpAddress()?.port}${nodePaths.checkin(n1.nodeId)}`, {
            method: "POST",
            dispatcher: agent,
            headers: { "content-type": "application/json" },
            body: "{}",
          }).then(async (res) => {
            await res.body.dump();
            return res.statusCode;
          }),
        );
      } finally {
        await agent.close();
      }
    });

    test("cp_server_ca: publish delivers a both-CA bundle, the switch waits for it, the CP then serves a new-CA certificate; rollback after the switch restores the old one; a second rotation retires the old CA from the nodes' bundles", async () => {
      const port = d.cp.cpAddress()?.port as number;
      const oldCa = await caOf("cp_server_ca", "active");
      const oldCaCert = new X509Certificate(oldCa.certificate_pem);
      assert.equal((await cpCertificate(port)).checkIssued(oldCaCert), true);

      const first = await d.admin("POST", BASE, { ca: "cp_server_ca" });
      const id = first.id as string;
      const published = await d.admin("POST", `${BASE}/${id}/publish`);
      assert.deepEqual(
        published.detail.published.node_rotations.map((r: Obj) => r.outcome),
        ["requested", "requested"],
      );
      const done = await ready(id, "both nodes applied the both-CA bundle");
      for (const n of done.progress.nodes) assert.ok(n.cp_ca_ids.includes(first.new_ca.id));
      for (const node of [n1, n2]) assert.equal((await cpCaFile(node)).length, 2);
      // Publish asked again: every node already holds the new trust, so no node is rotated again.
      const rotationsBefore = (await d.admin("GET", `/nodes/${n1.nodeId}/certs/rotations`)).items.length;
      const again = await d.admin("POST", `${BASE}/${id}/publish`);
      assert.equal(again.phase, "published");
      assert.deepEqual(again.detail.published.node_rotations, []);
      assert.equal((await d.admin("GET", `/nodes/${n1.nodeId}/certs/rotations`)).items.length, rotationsBefore);

      await d.admin("POST", `${BASE}/${id}/switch`);
      const newCaCert = new X509Certificate(first.new_ca.certificate_pem ?? (await caOf("cp_server_ca", "active")).certificate_pem);
      const served = await waitFor("the CP serves a new-CA certificate", async () => {
        const cert = await cpCertificate(port);
        return cert.checkIssued(newCaCert) ? cert : null;
      });
      assert.ok(served);
      // A restarted node opens new connections to the CP: its bundle trusts the new CA.
      await n1.restart?.();
      await everyNodeChecksIn([n1, n2]);

      await d.admin("POST", `${BASE}/${id}/rollback`);
      await waitFor("the CP serves an old-CA certificate again", async () => (await cpCertificate(port)).checkIssued(oldCaCert));
      await n2.restart?.();
      await everyNodeChecksIn([n1, n2]);

      // A second rotation, to the end.
      const second = await d.admin("POST", BASE, { ca: "cp_server_ca" });
      await d.admin("POST", `${BASE}/${second.id}/publish`);
      await ready(second.id, "both nodes applied the second both-CA bundle");
      await d.admin("POST", `${BASE}/${second.id}/switch`);
      const secondCa = new X509Certificate((await caOf("cp_server_ca", "active")).certificate_pem);
      await waitFor("the CP serves the second new CA's certificate", async () => (await cpCertificate(port)).checkIssued(secondCa));
      const retired = await d.admin("POST", `${BASE}/${second.id}/retire`);
      assert.equal(retired.phase, "retired");
      await ready(second.id, "both nodes applied the new-CA-only bundle");
      for (const node of [n1, n2]) {
        const bundle = await cpCaFile(node);
        assert.equal(bundle.length, 1);
        assert.equal(new X509Certificate(bundle[0] as string).fingerprint256, secondCa.fingerprint256);
      }
      await n1.restart?.();
      await everyNodeChecksIn([n1, n2]);
    });
  });
}
