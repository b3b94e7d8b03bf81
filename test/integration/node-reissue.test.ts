/**
 * Reissuing a node's deploy package (POST /admin/v1/nodes/:nid/reissue-package), with a real CP
 * and real nodes in process (test/helpers/deployment.ts), on SQLite and PostgreSQL.
 *
 * The attack a reissue answers: a node's private keys leaked (a copied disk, a stolen backup).
 * Whoever holds the old package must lose both its way into the CP (the client certificate) and
 * the trust of SDK clients (the server certificate), and the operator must get a node running
 * again from a new package.
 *
 * - Reissue revokes both certificates at once (inventory and OCSP say revoked), queues the
 *   NodeOnboard job, and the job builds a new current package.
 * - The node still running with the old package is refused on its next CP call
 *   (NODE_CERT_REVOKED) and logs why and what to do: remove the old certificate files and
 *   enroll with the new package.
 * - A node started from the new package reaches the CP and becomes ready.
 * - A disabled node can be reissued and stays disabled; an unknown or deleted node is a 404 that
 *   changes nothing; the action is audited, failures included.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { REVOKED_CREDENTIALS_ACTION } from "../../src/node/agent/agent.js";
import { resolveNodeConfig } from "../../src/node/config.js";
import { startServerNode } from "../../src/node/server-node.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { REVOCATION_REASON_CODES } from "../../src/shared/pki/index.js";
import { buildOcspRequest, verifyOcspResponse } from "../../src/shared/pki/ocsp/index.js";
import { systemClock } from "../../src/shared/time/index.js";
import { ROOT_PASSWORD, ROOT_USERNAME } from "../helpers/cp-context.js";
import { dbFlagRecord, dbVariants } from "../helpers/databases.js";
import { type DeployedNode, type Deployment, startDeployment } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { unpackPackage } from "../helpers/nodes.js";

const pem2der = (pem: string) => Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, ""), "base64");

interface CertView {
  id: string;
  profile: string;
  status: string;
  revocation_reason: string | null;
  certificate_pem: string;
}

for (const variant of dbVariants()) {
  describe(`reissuing a node's deploy package (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let oldNode: DeployedNode;

    before(async () => {
      d = await startDeployment(variant, { label: "node_reissue" });
      oldNode = await d.addNode("reissue-1");
    });
    after(async () => {
      await d?.stop();
    });

    const validCerts = async (nodeId: string): Promise<CertView[]> =>
      (await d.admin("GET", `/pki/certs?owner_type=node&owner_id=${nodeId}&status=valid`)).items;
    const certificate = (id: string): Promise<CertView> => d.admin("GET", `/pki/certs/${id}`);
    const currentPackage = async (nodeId: string): Promise<string | undefined> =>
      ((await d.admin("GET", `/nodes/${nodeId}/deploy-packages`)).items as { id: string; current: boolean }[]).find((p) => p.current)?.id;
    const finishedJob = (jobId: string) =>
      waitFor(
        `job ${jobId} finished`,
        async () => {
          const job = await d.admin("GET", `/pki/jobs/${jobId}`);
          return job.status === "succeeded" || job.status === "failed" ? job : null;
        },
        20_000,
      );
    const countRows = async () => {
      const db = d.cp.context.controlDb;
      const jobs = await db
        .selectFrom("pki_jobs")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .executeTakeFirstOrThrow();
      const revoked = await db
        .selectFrom("certificates")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("status", "=", "revoked")
        .executeTakeFirstOrThrow();
      return { jobs: Number(jobs.n), revoked: Number(revoked.n) };
    };

    const ocspStatus = async (cert: CertView) => {
      const caProfile = cert.profile === "node_server" ? "tcp_server_ca" : "cp_node_client_ca";
      const cas = (await d.admin("GET", "/pki/cas")).items as { profile: string; status: string; certificate_pem: string }[];
      const caDer = pem2der(cas.find((c) => c.profile === caProfile && c.status === "active")?.certificate_pem ?? "");
      const built = buildOcspRequest(pem2der(cert.certificate_pem), caDer);
      const res = await fetch(`http://127.0.0.1:${d.cp.ocspAddress()?.port}/ocsp/`, {
        method: "POST",
        headers: { "content-type": "application/ocsp-request" },
        body: built.der,
      });
      assert.equal(res.status, 200);
      return verifyOcspResponse(Buffer.from(await res.arrayBuffer()), {
        issuerDer: caDer,
        certId: built.certId,
        nonce: built.nonce,
        now: Date.now(),
        clockSkewMs: 600_000,
      }).status;
    };

    /** What an operator does on the node's host: a fresh directory (no old certificate files) and the new package. */
    const enrollFromPackage = async (nodeId: string, packageId: string): Promise<DeployedNode> => {
      const { access_token: token } = await d.admin("POST", "/auth/login", { username: ROOT_USERNAME, password: ROOT_PASSWORD });
      const res = await fetch(`${d.adminUrl}/nodes/${nodeId}/deploy-packages/${packageId}/download`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 200);
      const unpacked = await unpackPackage(Buffer.from(await res.arrayBuffer()));
      const manifest = {
        ...unpacked.manifest,
        cp_url: `https://127.0.0.1:${d.cp.cpAddress()?.port}`,
        ocsp_url: `http://127.0.0.1:${d.cp.ocspAddress()?.port}/ocsp/`,
      };
      await fs.writeFile(unpacked.agentJsonPath, JSON.stringify(manifest, null, 2));
      const nodeDir = `${d.dataDir}/${nodeId}-reissued`;
      await fs.mkdir(nodeDir, { recursive: true });
      const logs = createMemoryLogger("Server");
      const runtimeDb = await variant.fresh("node_reissue_runtime2");
      const server = await startServerNode(
        resolveNodeConfig(
          {
            agent: unpacked.agentJsonPath,
            "data-dir": nodeDir,
            "health-listen": "127.0.0.1:0",
            listen: "127.0.0.1:0",
            ...dbFlagRecord("", runtimeDb),
          },
          {},
        ),
        { log: logs.logger, clock: systemClock, shutdownGraceMs: 200 },
      );
      const node: DeployedNode = {
        nodeId,
        server,
        address: server.businessAddress() ?? { host: "127.0.0.1", port: 0 },
        events: logs.events,
        stop: async () => {
          await server.stop();
          await unpacked.cleanup();
        },
      };
      // The deployment stops it with the others.
      d.nodes.push(node);
      assert.equal(await server.ready, true, `the new package's node became ready: ${JSON.stringify(logs.events().slice(-5))}`);
      return node;
    };

    test("reissue revokes the old certificates, builds a new package; the old node is refused and says why; the new package enrolls", async () => {
      const nodeId = oldNode.nodeId;
      const oldCerts = await validCerts(nodeId);
      assert.deepEqual(oldCerts.map((c) => c.profile).sort(), ["node_client", "node_server"]);
      const oldPackage = await currentPackage(nodeId);
      assert.ok(oldPackage);

      const answer = await d.adminRaw("POST", `/nodes/${nodeId}/reissue-package`);
      assert.equal(answer.status, 202, answer.text);
      assert.deepEqual([...answer.json.revoked_certificate_ids].sort(), oldCerts.map((c) => c.id).sort());
      assert.equal(answer.json.job_url, `/admin/v1/pki/jobs/${answer.json.job_id}`);
      assert.equal(answer.json.deploy_packages_url, `/admin/v1/nodes/${nodeId}/deploy-packages`);

      // Revoked at once, in the inventory and over OCSP, before the new package even exists.
      for (const old of oldCerts) {
        const now = await certificate(old.id);
        assert.equal(now.status, "revoked");
        assert.equal(now.revocation_reason, "superseded");
        const status = await ocspStatus(now);
        assert.equal(status.kind, "revoked", `${old.profile} over OCSP`);
        assert.equal(status.kind === "revoked" ? status.reason : undefined, REVOCATION_REASON_CODES.superseded);
      }

      const job = await finishedJob(answer.json.job_id);
      assert.equal(job.status, "succeeded", JSON.stringify(job));
      const newPackage = await currentPackage(nodeId);
      assert.equal(newPackage, job.result.package_id);
      assert.notEqual(newPackage, oldPackage);
      const newCerts = await validCerts(nodeId);
      assert.equal(newCerts.length, 2);
      assert.ok(newCerts.every((c) => !oldCerts.some((o) => o.id === c.id)));

      // The node still running with the old package: refused, and its log says why and what to do.
      const refusal = await waitFor("the old node logs its revoked credentials", () =>
        oldNode.events().find((e) => e.msg === "credentials.revoked"),
      );
      assert.equal(refusal.code, "NODE_CERT_REVOKED");
      assert.equal(refusal.level, "error");
      assert.equal(refusal.action, REVOKED_CREDENTIALS_ACTION);
      assert.match(String(refusal.action), /remove the old certificate files and enroll it with the new deploy package/);
      const authEvents = (await d.admin("GET", `/nodes/auth-events?node_id=${nodeId}&event=node_cert_revoked`)).items;
      assert.ok(authEvents.length >= 1, "the CP recorded the refusal");
      await oldNode.stop();

      // The operator enrolls the node again from the new package.
      const reissueTime = Date.now();
      const fresh = await enrollFromPackage(nodeId, newPackage as string);
      const node = await waitFor("the reissued node checks in", async () => {
        const detail = await d.admin("GET", `/nodes/${nodeId}`);
        return detail.last_checkin_at !== null && detail.last_checkin_at >= reissueTime ? detail : null;
      });
      assert.equal(node.status, "online");
      assert.equal(
        fresh.events().find((e) => e.msg === "credentials.revoked"),
        undefined,
      );

      // Audited: the admin action, the node trail and the PKI trail.
      const audit = (await d.admin("GET", "/agent-audit-logs?action=node.reissue_package")).items;
      assert.equal(audit.length, 1);
      assert.equal(audit[0].result, "success");
      assert.equal(audit[0].target_id, nodeId);
      const trail = (await d.admin("GET", `/nodes/audit-logs?node_id=${nodeId}&event=node.package_reissued`)).items;
      assert.equal(trail.length, 1);
    });

    test("a disabled node is reissued and stays disabled", async () => {
      const created = await d.admin("POST", "/nodes", { name: "reissue-disabled", host: "127.0.0.1", business_port: 8443 });
      assert.equal((await finishedJob(created.job_id)).status, "succeeded");
      await d.admin("POST", `/nodes/${created.id}/disable`, {});
      const answer = await d.adminRaw("POST", `/nodes/${created.id}/reissue-package`, {});
      assert.equal(answer.status, 202, answer.text);
      assert.equal((await finishedJob(answer.json.job_id)).status, "succeeded");
      const node = await d.admin("GET", `/nodes/${created.id}`);
      assert.equal(node.status, "disabled");
      assert.equal(node.lifecycle_status, "disabled");
    });

    test("an unknown node, a deleted node, a body, or a reissue already under way change nothing", async () => {
      const created = await d.admin("POST", "/nodes", { name: "reissue-deleted", host: "127.0.0.1", business_port: 8443 });
      assert.equal((await finishedJob(created.job_id)).status, "succeeded");
      const kept = await d.admin("POST", "/nodes", { name: "reissue-kept", host: "127.0.0.1", business_port: 8443 });
      assert.equal((await finishedJob(kept.job_id)).status, "succeeded");
      await d.admin("DELETE", `/nodes/${created.id}`, {});
      const before = await countRows();

      const unknown = await d.adminRaw("POST", "/nodes/nod_doesnotexist/reissue-package", {});
      assert.equal(unknown.status, 404, unknown.text);
      assert.equal(unknown.json.error, "NOT_FOUND");
      const deleted = await d.adminRaw("POST", `/nodes/${created.id}/reissue-package`, {});
      assert.equal(deleted.status, 404, deleted.text);
      const withBody = await d.adminRaw("POST", `/nodes/${kept.id}/reissue-package`, { reason: "x" });
      assert.equal(withBody.status, 400, withBody.text);
      assert.deepEqual(await countRows(), before);

      // A job still open for the node would attach certificates this reissue could not revoke.
      await d.cp.context.controlDb
        .updateTable("pki_jobs")
        .set({ status: "pending", run_after: Date.now() + 3_600_000 })
        .where("id", "=", kept.job_id)
        .execute();
      const busy = await d.adminRaw("POST", `/nodes/${kept.id}/reissue-package`, {});
      assert.equal(busy.status, 409, busy.text);
      assert.equal(busy.json.error, "NODE_NOT_PROVISIONED");
      assert.deepEqual(await countRows(), before);
      assert.equal((await validCerts(kept.id)).length, 2);

      const failures = (await d.admin("GET", "/agent-audit-logs?action=node.reissue_package&result=failure")).items;
      assert.ok(failures.length >= 4, "refusals are audited too");
    });
  });
}
