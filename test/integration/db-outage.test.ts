/**
 * A database outage, on a PostgreSQL this suite starts and kills for itself. While it is down
 * every listener says "not now" rather than "broken": the admin and node APIs answer 503
 * DB_UNAVAILABLE with Retry-After (not 500 INTERNAL), the OCSP responder answers tryLater (not
 * internalError), and a node's CP client files the answer as retryable. Once PostgreSQL is back
 * the same CP answers again, with no restart.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createOcspAnswerer, createOcspListener } from "../../src/cp/ocsp/index.js";
import { createInventoryResolver, loadOcspIssuers } from "../../src/cp/services/pki/ocsp-status.js";
import { httpError } from "../../src/node/agent/cp-call-error.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { nodePaths } from "../../src/shared/node-protocol/index.js";
import { buildOcspRequest, verifyOcspResponse } from "../../src/shared/pki/ocsp/index.js";
import { type AdminApp, buildAdminApp, call, loginAs } from "../helpers/admin-app.js";
import { ROOT_PASSWORD, ROOT_USERNAME } from "../helpers/cp-context.js";
import { postgresVariant } from "../helpers/databases.js";
import { type NodeIdentity, startTestNodeApi, type TestNodeApi } from "../helpers/node-api.js";
import { findPostgresBinDir, type PostgresServer, startPostgres } from "../helpers/postgres.js";

const pem2der = (pem: string) => Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, ""), "base64");

function postgresAvailable(): string | false {
  if (process.env.AUTHNEXUS_TEST_SKIP_POSTGRES === "1") return "AUTHNEXUS_TEST_SKIP_POSTGRES=1";
  try {
    findPostgresBinDir();
    return false;
  } catch (error) {
    return (error as Error).message;
  }
}

describe("a database outage", { skip: postgresAvailable() }, () => {
  let pg: PostgresServer;
  let api: TestNodeApi;
  let admin: AdminApp;
  let token = "";
  let node: NodeIdentity;
  let ocsp: http.Server;
  let ocspUrl = "";
  const variant = () =>
    postgresVariant({ url: (db) => pg.url(db), createDatabase: (db) => pg.createDatabase(db), dropDatabase: (db) => pg.dropDatabase(db) });

  before(async () => {
    pg = await startPostgres();
    api = await startTestNodeApi(variant(), "outage");
    admin = (await buildAdminApp(api.cp)).app;
    token = (await loginAs(admin, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
    node = await api.mintNode({ name: "outage-node" });
    const ctx = api.cp.ctx;
    const answer = createOcspAnswerer({ resolve: createInventoryResolver(ctx, await loadOcspIssuers(ctx)), clock: ctx.clock });
    ocsp = http.createServer(createOcspListener({ answer }));
    await new Promise<void>((resolve) => ocsp.listen(0, "127.0.0.1", resolve));
    ocspUrl = `http://127.0.0.1:${(ocsp.address() as AddressInfo).port}/ocsp/`;
  });

  after(async () => {
    await new Promise<void>((resolve) => ocsp?.close(() => resolve()));
    await api?.close();
    await pg?.stop();
  });

  const listApplications = () => call(admin, "GET", "/admin/v1/applications", { token });
  const checkin = () =>
    api.client(node).request("POST", nodePaths.checkin(node.nodeId), {
      software_version: "test",
      node_metadata: { hostname: "h", os: "linux", uptime_s: 1, started_at: 1 },
      metrics: { connections: 0, online_users: 0, requests_per_s: 0, errors_per_s: 0, rss_bytes: 0, cpu_percent: 0 },
      app_versions: [],
      cursors: { commands: 0, "auth-epochs": 0, blacklist: 0 },
      sse_connected: false,
    });
  let caDer = Buffer.alloc(0);
  const askOcsp = async () => {
    const built = buildOcspRequest(pem2der(node.certPem), caDer);
    const res = await fetch(ocspUrl, { method: "POST", headers: { "content-type": "application/ocsp-request" }, body: built.der });
    return { built, der: Buffer.from(await res.arrayBuffer()), status: res.status };
  };

  it("while PostgreSQL is down: 503 DB_UNAVAILABLE with Retry-After on both APIs, tryLater on OCSP; all answer again once it is back", async () => {
    caDer = pem2der(
      (
        await api.cp.ctx.controlDb
          .selectFrom("certificate_authorities")
          .select("cert_pem")
          .where("profile", "=", "cp_node_client_ca")
          .executeTakeFirstOrThrow()
      ).cert_pem,
    );
    assert.equal((await listApplications()).status, 200, "the admin API works before the outage");
    assert.equal((await checkin()).status, 200, "the node API works before the outage");
    const before = await askOcsp();
    assert.deepEqual(
      verifyOcspResponse(before.der, {
        issuerDer: caDer,
        certId: before.built.certId,
        nonce: before.built.nonce,
        now: api.cp.clock.now(),
        clockSkewMs: 600_000,
      }).status,
      { kind: "good" },
    );

    await pg.pause();

    const down = await listApplications();
    assert.equal(down.status, 503, down.text);
    assert.equal((down.json as { error: string }).error, "DB_UNAVAILABLE");
    assert.equal(down.headers.get("retry-after"), "5");

    const nodeDown = await checkin();
    assert.equal(nodeDown.status, 503, nodeDown.text);
    assert.equal((nodeDown.json as { error: string }).error, "DB_UNAVAILABLE");
    assert.equal(nodeDown.headers.get("retry-after"), "5");
    const filed = httpError(nodeDown.status, nodeDown.text);
    assert.equal(filed.code, "DB_UNAVAILABLE");
    assert.equal(filed.retryable, true, "the node's CP client retries it with backoff");

    const ocspDown = await askOcsp();
    assert.equal(ocspDown.status, 200);
    assert.deepEqual([...ocspDown.der], [0x30, 0x03, 0x0a, 0x01, 0x03], "OCSP tryLater (3), not internalError (2)");
    assert.throws(
      () =>
        verifyOcspResponse(ocspDown.der, {
          issuerDer: caDer,
          certId: ocspDown.built.certId,
          nonce: null,
          now: api.cp.clock.now(),
          clockSkewMs: 0,
        }),
      (error) => isAuthNexusError(error, "OCSP_RESPONSE_INVALID") && error.detail?.responder_status === "tryLater",
      "the stapler keeps its cached response and asks again",
    );

    await pg.resume();

    const recovered = await listApplications();
    assert.equal(recovered.status, 200, `the admin API recovers without a restart: ${recovered.text}`);
    assert.equal((await checkin()).status, 200, "the node API recovers without a restart");
    const back = await askOcsp();
    assert.equal(
      verifyOcspResponse(back.der, {
        issuerDer: caDer,
        certId: back.built.certId,
        nonce: back.built.nonce,
        now: api.cp.clock.now(),
        clockSkewMs: 600_000,
      }).status.kind,
      "good",
    );
  });
});
