/**
 * Disabling and enabling a node, as SDK clients see it. A real CP and two real nodes in process
 * (test/helpers/deployment.ts), on SQLite and PostgreSQL; SDK clients are pinned to one node each
 * and require a good OCSP staple (must-staple).
 *
 * The attack a disable answers: an operator withdraws a node (compromised host, decommissioning)
 * and clients must stop trusting it now, not when its staple next refreshes 15 minutes later.
 *
 * - Disable: the CP hints the node (`ocsp.refresh`), the node fetches and staples the revoked
 *   (certificateHold) response at once, its connected clients get a force_logout push saying the
 *   node was disabled and are disconnected, and a new SDK connection to it is refused
 *   (NODE_STAPLE_REFUSED). Clients of the other node are untouched, the ended session still logs
 *   in by token on the other node, and the disabled node's CP channels stay up: it checks in and
 *   is told `disabled`, its event stream stays connected, a config change still reaches it.
 * - Enable: the node staples `good` again within seconds and accepts new SDK connections,
 *   without a restart.
 * - A node that missed the hint (its event stream down) follows the change from its next checkin.
 *
 * Disable → push and disable → refusal, enable → accepted are measured and printed; only a
 * generous bound is asserted.
 */
import assert from "node:assert/strict";
import { after, afterEach, before, describe, type TestContext, test } from "node:test";
import { NODE_DISABLED_MESSAGE } from "../../src/node/agent/agent.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { dbVariants } from "../helpers/databases.js";
import { type ClientMaterial, type DeployedNode, type Deployment, startDeployment, type TestApplication } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { connectProbe, expectCode, type Probe } from "../helpers/sdk-clients.js";

/** A generous bound: the hint makes each step tens of milliseconds in practice. */
const PROPAGATION_LIMIT_MS = 5000;
const PASSWORD = "correct-horse-1";
/** Every client here comes from 127.0.0.1: refused attempts must not throttle the rest. */
const SETTINGS = { login_attempts_per_minute: 100_000 };
/** Each test logs the one user in from new devices. */
const POLICY = { max_devices_per_user: 50 };

for (const variant of dbVariants()) {
  describe(`disabling a node as SDK clients see it (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let n1: DeployedNode;
    let n2: DeployedNode;
    let app: TestApplication;
    let material: ClientMaterial;
    let username: string;
    const open: Probe[] = [];
    const timings: string[] = [];

    const record = (t: TestContext, what: string, ms: number) => {
      const line = `[${variant.name}] ${what}: ${ms.toFixed(1)} ms`;
      timings.push(line);
      t.diagnostic(line);
      assert.ok(ms < PROPAGATION_LIMIT_MS, `${what} took ${ms} ms`);
    };

    const connect = async (node: DeployedNode, deviceId: string): Promise<Probe> => {
      const probe = await connectProbe({ appId: app.appId, appSecret: app.secret, material, node: node.address, deviceId });
      open.push(probe);
      return probe;
    };

    const loggedIn = async (node: DeployedNode, deviceId: string): Promise<Probe> => {
      const probe = await connect(node, deviceId);
      probe.session = await probe.client.loginPassword(username, PASSWORD);
      return probe;
    };

    /** Tries a new SDK connection until the node accepts one; returns it. */
    const acceptedAgain = (node: DeployedNode, deviceId: string) =>
      waitFor(
        `${node.nodeId} accepts a new SDK connection`,
        async () => {
          try {
            return await connect(node, deviceId);
          } catch (error) {
            if (isAuthNexusError(error, "NODE_STAPLE_REFUSED")) return null;
            throw error;
          }
        },
        PROPAGATION_LIMIT_MS,
        20,
      );

    const stapled = (node: DeployedNode) => node.server.agent.stapler.status().status;

    /** The node checks in after `since` and is told `status`: Channel 1 works and the CP accepts it. */
    const checksInAs = async (node: DeployedNode, status: "active" | "disabled", since: number) => {
      node.server.agent.wake("checkin");
      await waitFor(`${node.nodeId} checks in as ${status}`, () => {
        const last = node.server.agent.status().last_checkin;
        return last?.ok && last.at > since && last.node_status === status;
      });
    };

    before(async () => {
      d = await startDeployment(variant, { label: `disable_${variant.name}` });
      n1 = await d.addNode("node-1");
      n2 = await d.addNode("node-2");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: SETTINGS });
      app = await d.createApp("Node Disable", POLICY);
      material = await d.issueClient(app.appId);
      await d.waitForApp(app.appId);
      username = "disable-user";
      await d.createUser(app.appId, username, PASSWORD);
      await waitFor("both nodes apply the settings and the policy", () =>
        d.nodes.every(
          (n) =>
            n.server.agent.store.serverRuntimeSettings().login_attempts_per_minute === SETTINGS.login_attempts_per_minute &&
            n.server.agent.store.appPolicy(app.appId).max_devices_per_user === POLICY.max_devices_per_user,
        ),
      );
    });

    afterEach(async () => {
      await Promise.all(open.splice(0).map((p) => p.client.close()));
      // Leave every node enabled for the next test.
      for (const node of d.nodes) await d.admin("POST", `/nodes/${node.nodeId}/enable`);
      await waitFor("every node staples good", () => d.nodes.every((n) => stapled(n) === "good"));
    });

    after(async () => {
      await d?.stop();
      if (timings.length > 0) process.stderr.write(`\n[node-disable-sdk] timings:\n  ${timings.join("\n  ")}\n`);
    });

    test("disable ends the node's SDK connections with the reason and refuses new ones while its CP channels stay up; enable lets clients back without a restart", async (t) => {
      const target = await loggedIn(n1, "dis-a");
      const bystander = await loggedIn(n2, "dis-b");
      const server = n1.server;
      const disabledAt = Date.now();

      const started = performance.now();
      const detail = await d.admin("POST", `/nodes/${n1.nodeId}/disable`);
      assert.equal(detail.status, "disabled");
      const push = await target.push("force_logout", PROPAGATION_LIMIT_MS);
      assert.equal(push.message, NODE_DISABLED_MESSAGE);
      assert.equal(push.reason, NODE_DISABLED_MESSAGE);
      await target.next("disconnected");
      assert.equal(target.client.connected, false);
      record(t, "disable → force_logout on the node's client", push.at - started);

      const refused = await expectCode(connect(n1, "dis-c"), "NODE_STAPLE_REFUSED", "a new connection to the disabled node");
      assert.match(refused.message, /revoked/);
      record(t, "disable → new SDK handshake refused", performance.now() - started);
      assert.equal(stapled(n1), "revoked");
      const ended = n1.events().find((e) => e.msg === "connections.ended");
      assert.ok(ended, "the node logs the connections it ended");
      assert.equal(ended.category, "Server");
      assert.equal(ended.reason, NODE_DISABLED_MESSAGE);
      const refreshed = n1.events().find((e) => e.msg === "ocsp.refresh_requested");
      assert.equal(refreshed?.trigger, "hint", "the hint, not the timer, fetched the revoked response");

      // The other node and its clients are untouched.
      assert.equal(bystander.client.connected, true);
      assert.equal(bystander.count("force_logout") + bystander.count("disconnected"), 0);
      await bystander.client.heartbeat();
      assert.equal(stapled(n2), "good");
      // Withdrawing the node revoked no session: the token still logs in on the other node.
      const elsewhere = await connect(n2, "dis-a");
      assert.equal((await elsewhere.client.loginToken(target.token)).userId, target.session?.userId);

      // The disabled node's management channels stay up.
      await checksInAs(n1, "disabled", disabledAt);
      assert.equal(server.agent.status().sse.state, "connected");
      const onCp = await d.admin("GET", `/nodes/${n1.nodeId}`);
      assert.equal(onCp.status, "disabled");
      assert.equal(onCp.sse_connected, true);
      assert.ok(onCp.last_checkin_at >= disabledAt, "the CP recorded a checkin after the disable");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: { ...SETTINGS, login_attempts_per_minute: 99_999 } });
      await waitFor(
        "the disabled node applies a new config",
        () => server.agent.store.serverRuntimeSettings().login_attempts_per_minute === 99_999,
      );
      await d.admin("PUT", "/configs/server_runtime_settings", { content: SETTINGS });
      assert.equal(
        d.cpLogs().filter((e) => e.msg === "node.auth_refused" && e.cert_node_id === n1.nodeId).length,
        0,
        "the CP refused none of the disabled node's calls",
      );

      const enabling = performance.now();
      await d.admin("POST", `/nodes/${n1.nodeId}/enable`);
      const back = await acceptedAgain(n1, "dis-d");
      record(t, "enable → new SDK connection accepted", performance.now() - enabling);
      assert.equal(n1.server, server, "the same node process, never restarted");
      assert.equal(stapled(n1), "good");
      const session = await back.client.loginPassword(username, PASSWORD);
      assert.ok(session.userId);
      await checksInAs(n1, "active", disabledAt);
    });

    test("a node whose event stream is down follows a disable and an enable from its next checkin", async (t) => {
      const target = await loggedIn(n1, "missed-a");
      const agent = n1.server.agent;
      const reconnects = agent.status().sse.reconnects;
      const checkinRefreshes = () => n1.events().filter((e) => e.msg === "ocsp.refresh_requested" && e.trigger === "checkin").length;
      const refreshesBefore = checkinRefreshes();
      await agent.sse.stop();
      try {
        const since = Date.now();
        const started = performance.now();
        await d.admin("POST", `/nodes/${n1.nodeId}/disable`);
        await checksInAs(n1, "disabled", since);
        const push = await target.push("force_logout", PROPAGATION_LIMIT_MS);
        assert.equal(push.message, NODE_DISABLED_MESSAGE);
        record(t, "disable (no stream) → checkin → force_logout", push.at - started);
        await expectCode(connect(n1, "missed-b"), "NODE_STAPLE_REFUSED", "a new connection to the disabled node");
        assert.equal(checkinRefreshes(), refreshesBefore + 1, "the checkin, not a hint, fetched the revoked response");

        const enableSince = Date.now();
        await d.admin("POST", `/nodes/${n1.nodeId}/enable`);
        await checksInAs(n1, "active", enableSince);
        await acceptedAgain(n1, "missed-c");
      } finally {
        agent.sse.start();
      }
      await waitFor("the event stream reconnects", () => agent.status().sse.reconnects > reconnects);
    });
  });
}
