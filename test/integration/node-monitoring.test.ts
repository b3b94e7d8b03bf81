/**
 * What the operations manual tells operators to watch, as the admin API shows it: the fleet
 * overview (status counts, SSE connected and degraded, config sync health, software versions)
 * and one node's detail (the "key fields to watch" as health checks with their actions, config
 * status per type). A real CP and a real node in process, on SQLite and PostgreSQL.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { softwareVersion } from "../../src/shared/version.js";
import { dbVariants } from "../helpers/databases.js";
import { type DeployedNode, type Deployment, startDeployment } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";

type Obj = Record<string, any>;

for (const variant of dbVariants()) {
  describe(`node monitoring (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let node: DeployedNode;

    before(async () => {
      d = await startDeployment(variant, { label: `monitoring_${variant.name}` });
      node = await d.addNode("watched-1");
    });
    after(async () => {
      await d?.stop();
    });

    const overview = (): Promise<Obj> => d.admin("GET", "/nodes/overview");
    const detail = (): Promise<Obj> => d.admin("GET", `/nodes/${node.nodeId}`);
    const check = (view: Obj, field: string): Obj => view.health.find((h: Obj) => h.field === field);

    test("a healthy node: every key field healthy, configs synced per type, the fleet in sync on one version", async () => {
      const synced = await waitFor("the node is in sync and reported its stream", async () => {
        const o = await overview();
        return o.config_sync.in_sync === 1 && o.sse_connected === 1 ? o : null;
      });
      assert.equal(synced.by_status.online, 1);
      assert.equal(synced.sse_degraded, 0);
      assert.deepEqual(synced.config_sync, { in_sync: 1, pending: 0, error: 0 });
      assert.deepEqual(synced.software_versions, [{ version: softwareVersion(), nodes: 1 }]);

      const view = await waitFor("the node's OCSP freshness is reported", async () => {
        const v = await detail();
        return v.ocsp_last_applied_at !== null ? v : null;
      });
      assert.deepEqual(
        view.health.map((h: Obj) => [h.field, h.healthy, h.action]),
        [
          ["status", true, null],
          ["last_checkin", true, null],
          ["sse_connected", true, null],
          ["ocsp_last_applied", true, null],
          ["config_sync", true, null],
        ],
      );
      const runtime = view.config_status.cp_agent_runtime;
      assert.deepEqual(runtime, { total: 1, synced: 1, error: 0, pending: 0, not_sent: 0 });
    });

    test("a node whose stream dropped and that missed a config: degraded SSE and pending configs, each with what to check", async () => {
      await node.stop();
      await d.admin("PUT", "/configs/server_runtime_settings", { content: { login_attempts_per_minute: 77 } });
      const o = await waitFor("the CP sees the stream gone", async () => {
        const now = await overview();
        return now.sse_degraded === 1 ? now : null;
      });
      // Its last checkin is recent: still "online" until the online window passes.
      assert.equal(o.by_status.online, 1);
      assert.deepEqual(o.config_sync, { in_sync: 0, pending: 1, error: 0 });

      const view = await detail();
      const sse = check(view, "sse_connected");
      assert.equal(sse.healthy, false);
      assert.match(sse.action, /Channel 2/);
      const configs = check(view, "config_sync");
      assert.equal(configs.healthy, false);
      assert.deepEqual(configs.value, { error: 0, behind: 1 });
      assert.match(configs.action, /Channel 1/);
      assert.equal(view.config_status.server_runtime_settings.not_sent, 1);

      // A disabled node is not meant to serve: nothing about it is "unhealthy".
      await d.admin("POST", `/nodes/${node.nodeId}/disable`);
      assert.ok((await detail()).health.every((h: Obj) => h.healthy && h.action === null));
    });
  });
}
