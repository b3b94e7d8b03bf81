/**
 * Staged startup when things are wrong, on SQLite and PostgreSQL Runtime DBs: a node that
 * cannot reach its CP stays in "connect_cp" (503 on /readyz, never ready, retrying with
 * backoff) and stops cleanly; a CP whose certificate the package does not trust is a [TLS]
 * failure, retried the same way; a bad package fails the start at once and leaves nothing
 * listening.
 */
import assert from "node:assert/strict";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { resolveNodeConfig } from "../../src/node/config.js";
import { startServerNode } from "../../src/node/server-node.js";
import type { DbOptions } from "../../src/shared/config/db-options.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { issueLeafCertificate } from "../../src/shared/pki/index.js";
import { systemClock } from "../../src/shared/time/index.js";
import { canConnect, freePort } from "../helpers/authnexus-process.js";
import { dbFlagRecord, dbVariants } from "../helpers/databases.js";
import { mintNodePki, type NodePki, type WrittenPackage, waitFor, writeAgentPackage } from "../helpers/node-agent.js";

const NODE_ID = "nod_startup";

for (const variant of dbVariants()) {
  describe(`serve-node staged startup on ${variant.name}`, { skip: variant.skip }, () => {
    let pki: NodePki;
    let runtimeDb: DbOptions;
    const packages: WrittenPackage[] = [];
    const config = (pkg: WrittenPackage, healthPort = 0) =>
      resolveNodeConfig(
        { agent: pkg.agentFile, "data-dir": pkg.dir.path, "health-listen": `127.0.0.1:${healthPort}`, ...dbFlagRecord("", runtimeDb) },
        {},
      );

    before(async () => {
      pki = await mintNodePki(NODE_ID, systemClock);
      runtimeDb = await variant.fresh("node_startup");
    });
    after(async () => {
      await Promise.all(packages.map((p) => p.dir.cleanup()));
      await variant.cleanup();
    });

    test("no CP: stays in connect_cp, /readyz 503, retries with backoff, never ready; stop() ends it cleanly", async () => {
      const pkg = await writeAgentPackage(pki, NODE_ID, { manifest: { cp_url: `https://127.0.0.1:${await freePort()}` } });
      packages.push(pkg);
      const memory = createMemoryLogger("Server");
      const node = await startServerNode(config(pkg), { log: memory.logger, clock: systemClock, shutdownGraceMs: 100 });
      const base = `http://127.0.0.1:${node.healthAddress.port}`;
      await waitFor("two failed checkins", () => memory.events().filter((e) => e.msg === "checkin.failed").length >= 2, 5000);
      const failures = memory.events().filter((e) => e.msg === "checkin.failed");
      assert.equal(failures[0]?.category, "CP Agent");
      assert.equal(failures[0]?.kind, "network");
      assert.equal(failures[1]?.attempt, 2);
      assert.ok((failures[0]?.retry_in_ms as number) >= 500, "jittered backoff from cp_agent_runtime's default base");
      const ready = await fetch(`${base}/readyz`);
      assert.equal(ready.status, 503);
      assert.deepEqual(await ready.json(), { ready: false, stage: "connect_cp" });
      assert.equal((await fetch(`${base}/healthz`)).status, 200);
      const status = (await (await fetch(`${base}/status`)).json()) as Record<string, any>;
      assert.equal(status.node_id, NODE_ID);
      assert.equal(status.stage, "connect_cp");
      assert.equal(status.ready, false);
      assert.equal(status.last_checkin.ok, false);
      assert.match(status.last_checkin.error, /ECONNREFUSED|connect/);
      assert.equal(status.sse.state, "degraded");
      assert.equal(status.ocsp.status, "none");
      assert.equal(JSON.stringify(status).includes("PRIVATE KEY"), false);
      await node.stop();
      assert.equal(await node.ready, false, "a node that never reached its CP never became ready");
      assert.equal(node.stage(), "stopped");
      assert.equal(await canConnect(node.healthAddress.port), false);
      assert.ok(!memory.events().some((e) => e.msg === "node.ready"));
    });

    test("a CP certificate the package does not trust: [TLS] handshake.failed, retried, never ready", async () => {
      const other = await mintNodePki("nod_elsewhere", systemClock);
      const ca = other.cas.cp_server_ca;
      const cert = await issueLeafCertificate({
        profile: "cp_server",
        issuer: { certPem: ca.certPem, keyPem: ca.keyPem ?? "" },
        commonName: "impostor",
        sans: { ip: ["127.0.0.1"] },
        clock: systemClock,
      });
      const impostor = https.createServer({ key: cert.keyPem ?? "", cert: cert.certPem }, (_req, res) => res.end("{}"));
      await new Promise<void>((resolve) => impostor.listen(0, "127.0.0.1", resolve));
      const pkg = await writeAgentPackage(pki, NODE_ID, {
        manifest: { cp_url: `https://127.0.0.1:${(impostor.address() as AddressInfo).port}` },
      });
      packages.push(pkg);
      const memory = createMemoryLogger("Server");
      const node = await startServerNode(config(pkg), { log: memory.logger, clock: systemClock, shutdownGraceMs: 100 });
      try {
        const tls = await waitFor(
          "[TLS] handshake failure",
          () => memory.events().find((e) => e.category === "TLS" && e.msg === "handshake.failed"),
          5000,
        );
        assert.equal(tls.kind, "tls");
        assert.equal(tls.peer, "control-plane");
        assert.match(String(tls.socket_code), /SIGNATURE|UNABLE_TO|CERT/);
        assert.equal(node.stage(), "connect_cp");
      } finally {
        await node.stop();
        impostor.closeAllConnections();
        await new Promise<void>((resolve) => impostor.close(() => resolve()));
      }
    });

    test("a bad package fails the start at once and leaves no listener behind", async () => {
      const pkg = await writeAgentPackage(pki, "nod_not_this_one");
      packages.push(pkg);
      const port = await freePort();
      await assert.rejects(
        startServerNode(config(pkg, port), { log: createMemoryLogger("Server").logger, clock: systemClock }),
        (error: unknown) => {
          assert.ok(isAuthNexusError(error, "CONFIG_INVALID"));
          assert.match(error.message, /URI SAN must be exactly urn:authnexus:node:nod_not_this_one/);
          return true;
        },
      );
      assert.equal(await canConnect(port), false);
    });
  });
}
