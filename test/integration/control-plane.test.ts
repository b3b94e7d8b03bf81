/**
 * Two Control Plane processes on one Control DB (run in process here, with real listeners):
 * when one completes setup, the other leaves setup-only mode on its next request and binds its
 * node and OCSP listeners, instead of refusing everything until restarted.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { resolveCpConfig } from "../../src/cp/config.js";
import { type ControlPlane, startControlPlane } from "../../src/cp/control-plane.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { systemScheduler } from "../../src/shared/time/index.js";
import { canConnect } from "../helpers/authnexus-process.js";
import { ROOT_PASSWORD } from "../helpers/cp-context.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

describe("control plane lifecycle", () => {
  let dataDir: TempDir;
  const planes: ControlPlane[] = [];
  const start = async () => {
    const config = resolveCpConfig(
      {
        "data-dir": dataDir.path,
        "admin-listen": "127.0.0.1:0",
        "cp-listen": "127.0.0.1:0",
        "ocsp-listen": "127.0.0.1:0",
        "public-cp-url": "https://localhost:9091",
      },
      {},
    );
    const plane = await startControlPlane(config, {
      scheduler: systemScheduler,
      log: createMemoryLogger("Server").logger,
      shutdownGraceMs: 1000,
    });
    planes.push(plane);
    return plane;
  };
  const url = (plane: ControlPlane, path: string) => `http://127.0.0.1:${plane.adminAddress.port}${path}`;

  before(async () => {
    dataDir = await makeTempDir("authnexus-two-cps");
  });
  after(async () => {
    await Promise.all(planes.map((p) => p.stop()));
    await dataDir.cleanup();
  });

  test("a second CP notices setup completed by the first", async () => {
    const a = await start();
    const b = await start();
    assert.ok(a.consoleToken, "the first start mints the token");
    assert.equal(b.consoleToken, null, "the second keeps it: one token, still valid");
    assert.equal(b.cpAddress(), null);

    const init = await fetch(url(a, "/admin/v1/setup/initialize"), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ console_token: a.consoleToken, admin_username: "root", admin_password: ROOT_PASSWORD }),
    });
    assert.equal(init.status, 201);

    const login = await fetch(url(b, "/admin/v1/auth/login"), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "root", password: ROOT_PASSWORD }),
    });
    assert.equal(login.status, 200, await login.clone().text());
    assert.ok(b.cpAddress(), "b bound its node API");
    assert.ok(b.ocspAddress(), "b bound its OCSP responder");
  });

  test("stop closes every listener", async () => {
    const plane = planes[1];
    assert.ok(plane);
    const ports = [plane.adminAddress, plane.cpAddress(), plane.ocspAddress()].map((a) => a?.port ?? 0);
    assert.ok(
      ports.every((p) => p > 0),
      "all three listeners were bound",
    );
    await plane.stop();
    planes.splice(1, 1);
    for (const port of ports) assert.equal(await canConnect(port), false, `port ${port} still accepts connections`);
  });
});
