/**
 * The CP's node API (9091) picks up a new TLS identity without a restart: a CP server
 * certificate that was revoked is replaced and served on new handshakes, while the node's
 * channels keep working (on SQLite and PostgreSQL, a real CP and a real node in process).
 */
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { dbVariants } from "../helpers/databases.js";
import { type DeployedNode, type Deployment, startDeployment } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";

/** SHA-256 of the certificate the node API presents to a fresh handshake (no client certificate: the handshake fails after it). */
async function presented(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false, servername: "localhost" });
    socket.once("secureConnect", () => {
      const raw = socket.getPeerX509Certificate()?.raw ?? Buffer.alloc(0);
      socket.destroy();
      resolve(createHash("sha256").update(raw).digest("hex"));
    });
    socket.once("error", reject);
  });
}

for (const variant of dbVariants()) {
  describe(`reloading the node API's TLS identity (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let node: DeployedNode;

    before(async () => {
      d = await startDeployment(variant, { label: `cp_tls_${variant.name}` });
      node = await d.addNode("tls-reload-1");
    });
    after(async () => {
      await d?.stop();
    });

    test("a revoked CP server certificate is replaced and served on new handshakes; the node keeps checking in", async () => {
      const port = d.cp.cpAddress()?.port as number;
      const before = await presented(port);
      const certs = (await d.admin("GET", "/pki/certs?profile=cp_server&status=valid")).items as { id: string; certificate_pem?: string }[];
      assert.equal(certs.length, 1);
      const old = await d.admin("GET", `/pki/certs/${certs[0]?.id}`);
      assert.equal(createHash("sha256").update(new X509Certificate(old.certificate_pem).raw).digest("hex"), before);
      await d.admin("POST", `/pki/certs/${old.id}/revoke`, { reason: "keyCompromise" });

      d.cp.context.events.tlsIdentityChanged();
      const after = await waitFor("a new certificate on 9091", async () => {
        const now = await presented(port);
        return now !== before ? now : null;
      });
      const current = (await d.admin("GET", "/pki/certs?profile=cp_server&status=valid")).items as { id: string }[];
      assert.equal(current.length, 1);
      const renewed = await d.admin("GET", `/pki/certs/${current[0]?.id}`);
      assert.equal(createHash("sha256").update(new X509Certificate(renewed.certificate_pem).raw).digest("hex"), after);
      assert.ok(d.cpLogs().some((e) => e.msg === "identity.reloaded"));

      const since = Date.now();
      node.server.agent.wake("checkin");
      await waitFor("the node checks in over the new certificate", () => {
        const last = node.server.agent.status().last_checkin;
        return last?.ok && last.at >= since;
      });
    });
  });
}
