/**
 * Online user presence (GET /admin/v1/presence) from real nodes: SDK clients log in on two nodes
 * for two applications, the nodes report their logged-in connections per application in their
 * checkins, and the CP shows them per application and per node with the time each node
 * reported. A node that stops is listed as stale and drops out of every total.
 *
 * The deployment's CP runs on the system clock, so instead of waiting out the two-minute online
 * window, the test stops the node and then moves its last checkin back past the window in the
 * Control DB: what the CP would see two minutes later.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { NODE_ONLINE_WINDOW_MS } from "../../src/shared/config/defaults.js";
import { dbVariants } from "../helpers/databases.js";
import { type ClientMaterial, type DeployedNode, type Deployment, startDeployment, type TestApplication } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { connectProbe, type Probe } from "../helpers/sdk-clients.js";

const PASSWORD = "correct-horse-1";
/** Checkins come every 5 s in these deployments (FAST_AGENT_RUNTIME). */
const CHECKIN_PATIENCE_MS = 20_000;

interface PresenceAnswer {
  online_users: number;
  apps: Array<{ app_id: string; online_users: number; nodes: Array<{ node_id: string; online_users: number; reported_at: number }> }>;
  nodes: Array<{
    node_id: string;
    status: string;
    stale: boolean;
    reported_at: number;
    online_users: number;
    apps: Record<string, number>;
  }>;
  online_window_ms: number;
  generated_at: number;
}

for (const variant of dbVariants()) {
  describe(`online user presence from node checkins (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let n1: DeployedNode;
    let n2: DeployedNode;
    let appA: TestApplication;
    let appB: TestApplication;
    const material = new Map<string, ClientMaterial>();
    const open: Probe[] = [];

    const login = async (app: TestApplication, node: DeployedNode, username: string, deviceId: string) => {
      const probe = await connectProbe({
        appId: app.appId,
        appSecret: app.secret,
        material: material.get(app.appId) as ClientMaterial,
        node: node.address,
        deviceId,
      });
      open.push(probe);
      probe.session = await probe.client.loginPassword(username, PASSWORD);
    };

    before(async () => {
      d = await startDeployment(variant, { label: `presence_${variant.name}` });
      n1 = await d.addNode("node-1");
      n2 = await d.addNode("node-2");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: { login_attempts_per_minute: 100_000 } });
      appA = await d.createApp("Presence A", { max_devices_per_user: 50 });
      appB = await d.createApp("Presence B", { max_devices_per_user: 50 });
      for (const app of [appA, appB]) {
        material.set(app.appId, await d.issueClient(app.appId));
        await d.waitForApp(app.appId);
      }
      await d.createUser(appA.appId, "alice", PASSWORD);
      await d.createUser(appA.appId, "bob", PASSWORD);
      await d.createUser(appB.appId, "carol", PASSWORD);
    });

    after(async () => {
      await Promise.all(open.splice(0).map((p) => p.client.close().catch(() => undefined)));
      await d?.stop();
    });

    test("counts per application and node after checkins; a stopped node is stale and not counted", async () => {
      await login(appA, n1, "alice", "dev-a1");
      await login(appA, n1, "bob", "dev-b1");
      await login(appA, n2, "alice", "dev-a2");
      await login(appB, n2, "carol", "dev-c1");

      const loggedInAt = Date.now();
      const seen = await waitFor(
        "both nodes report their logged-in users",
        async () => {
          const p = (await d.admin("GET", "/presence")) as PresenceAnswer;
          return p.online_users === 4 && p.nodes.every((n) => n.reported_at >= loggedInAt) ? p : null;
        },
        CHECKIN_PATIENCE_MS,
        200,
      );
      assert.equal(seen.online_window_ms, NODE_ONLINE_WINDOW_MS);
      const a = seen.apps.find((x) => x.app_id === appA.appId);
      const b = seen.apps.find((x) => x.app_id === appB.appId);
      assert.equal(a?.online_users, 3);
      assert.equal(b?.online_users, 1);
      assert.deepEqual(
        a?.nodes.map((n) => [n.node_id, n.online_users]).sort(),
        [
          [n1.nodeId, 2],
          [n2.nodeId, 1],
        ].sort(),
      );
      assert.deepEqual(
        b?.nodes.map((n) => [n.node_id, n.online_users]),
        [[n2.nodeId, 1]],
      );
      const node2 = seen.nodes.find((n) => n.node_id === n2.nodeId);
      assert.deepEqual(node2?.apps, { [appA.appId]: 1, [appB.appId]: 1 });
      assert.equal(node2?.stale, false);
      assert.equal(node2?.status, "online");
      assert.equal(a?.nodes.find((n) => n.node_id === n2.nodeId)?.reported_at, node2?.reported_at, "each count carries its report time");

      await n2.stop();
      const stoppedAt = Date.now();
      // What the CP sees once the online window has passed without a checkin from node-2.
      await d.cp.context.controlDb
        .updateTable("nodes")
        .set({ last_checkin_at: stoppedAt - NODE_ONLINE_WINDOW_MS - 1000 })
        .where("id", "=", n2.nodeId)
        .execute();
      const after = (await d.admin("GET", "/presence")) as PresenceAnswer;
      const stale = after.nodes.find((n) => n.node_id === n2.nodeId);
      assert.equal(stale?.stale, true);
      assert.equal(stale?.status, "offline");
      assert.deepEqual(stale?.apps, { [appA.appId]: 1, [appB.appId]: 1 }, "its last report is still shown");
      assert.equal(after.online_users, 2, "only node-1's users count");
      assert.deepEqual(
        after.apps.map((x) => [x.app_id, x.online_users, x.nodes.map((n) => n.node_id)]),
        [[appA.appId, 2, [n1.nodeId]]],
      );
      assert.equal(after.nodes.find((n) => n.node_id === n1.nodeId)?.stale, false);
    });
  });
}
