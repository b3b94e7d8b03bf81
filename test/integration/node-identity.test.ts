/**
 * Channel 1's first line of defence, over a real mTLS socket: every /cp/v2/nodes/:id call is
 * bound to the caller's certificate. Attacks: a node certificate calling another node's paths,
 * a certificate the CP never issued (same CA), a revoked certificate, the certificate of a
 * deleted node, a certificate from another CA, no certificate at all. All refused and recorded.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { revokeCertificate } from "../../src/cp/services/pki/inventory.js";
import { dbVariants } from "../helpers/databases.js";
import { mintForeignCert, type NodeIdentity, startTestNodeApi, type TestNodeApi } from "../helpers/node-api.js";

// No route answers this path: a 404 proves the call got past the identity check, a 403 that it did not.
const probe = (nodeId: string) => `/cp/v2/nodes/${nodeId}/identity-probe`;

for (const variant of dbVariants()) {
  describe(`node API identity binding on ${variant.name}`, { skip: variant.skip }, () => {
    let api: TestNodeApi;
    let alpha: NodeIdentity;
    let beta: NodeIdentity;
    before(async () => {
      api = await startTestNodeApi(variant, "identity");
      alpha = await api.mintNode({ name: "alpha" });
      beta = await api.mintNode({ name: "beta" });
    });
    after(async () => {
      await api.close();
      await variant.cleanup();
    });

    const authEvents = async () => api.cp.ctx.controlDb.selectFrom("node_auth_events").selectAll().orderBy("created_at").execute();

    it("a node's own path passes the identity check (unknown sub-route → 404, not 403)", async () => {
      const res = await api.client(alpha).request("POST", probe(alpha.nodeId), {});
      assert.equal(res.status, 404, res.text);
      assert.equal((res.json as { error: string }).error, "ROUTE_NOT_FOUND");
    });

    it("a node certificate calling another node's path → 403 NODE_IDENTITY_MISMATCH, recorded", async () => {
      const before = (await authEvents()).length;
      const res = await api.client(alpha).request("POST", probe(beta.nodeId), {});
      assert.equal(res.status, 403);
      assert.equal((res.json as { error: string }).error, "NODE_IDENTITY_MISMATCH");
      const events = await authEvents();
      assert.equal(events.length, before + 1);
      assert.equal(events.at(-1)?.event, "node_identity_mismatch");
      assert.equal(events.at(-1)?.node_id, alpha.nodeId);
      assert.notEqual(events.at(-1)?.chain_id, null, "the refusal is hash-chained like every audit row");
      assert.match(String(events.at(-1)?.chain_hash), /^[0-9a-f]{64}$/);
      assert.ok(api.cp.logLines.some((l) => l.includes("node.auth_refused") && l.includes("NODE_IDENTITY_MISMATCH")));
    });

    it("a certificate from the right CA that the CP never recorded for the node → 403 NODE_CERT_NOT_RECOGNISED", async () => {
      const forged = await mintForeignCert(api.cp.ctx, alpha.nodeId);
      const res = await api.client(forged).request("POST", probe(alpha.nodeId), {});
      assert.equal(res.status, 403);
      assert.equal((res.json as { error: string }).error, "NODE_CERT_NOT_RECOGNISED");
    });

    it("a revoked client certificate → 403 NODE_CERT_REVOKED on the next request, even on a kept-alive connection", async () => {
      const gamma = await api.mintNode({ name: "gamma" });
      const client = api.client(gamma);
      assert.equal((await client.request("POST", probe(gamma.nodeId), {})).status, 404);
      await revokeCertificate(api.cp.ctx, gamma.certificateId, "keyCompromise", "test");
      const res = await client.request("POST", probe(gamma.nodeId), {});
      assert.equal(res.status, 403);
      assert.equal((res.json as { error: string }).error, "NODE_CERT_REVOKED");
    });

    it("the certificate of a deleted node → 403 NODE_UNKNOWN", async () => {
      const delta = await api.mintNode({ name: "delta" });
      await api.cp.ctx.controlDb.deleteFrom("nodes").where("id", "=", delta.nodeId).execute();
      const res = await api.client(delta).request("POST", probe(delta.nodeId), {});
      assert.equal(res.status, 403);
      assert.equal((res.json as { error: string }).error, "NODE_UNKNOWN");
    });

    it("a certificate from another CA or no certificate at all never completes the handshake", async () => {
      const port = Number(new URL(api.url).port);
      const foreign = await mintForeignCert(api.cp.ctx, alpha.nodeId, "app_client_ca");
      for (const identity of [foreign, null]) {
        const outcome = await new Promise<string>((resolve) => {
          const socket = tls.connect(
            {
              host: "127.0.0.1",
              port,
              servername: "localhost",
              ca: api.cpCaPem,
              ...(identity ? { cert: identity.certPem, key: identity.keyPem } : {}),
            },
            () => {
              socket.write(`POST ${probe(alpha.nodeId)} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}`);
            },
          );
          socket.on("data", (d) => resolve(`data:${d.toString().split("\r\n")[0]}`));
          socket.on("error", (e) => resolve(`error:${(e as NodeJS.ErrnoException).code ?? e.message}`));
          socket.on("close", () => resolve("closed"));
        });
        assert.ok(!outcome.startsWith("data:"), `${identity ? "foreign-CA" : "no"} certificate got an HTTP answer: ${outcome}`);
      }
    });
  });
}
