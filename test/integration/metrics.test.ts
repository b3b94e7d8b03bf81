/**
 * Prometheus metrics of a real CP and a real node (a whole deployment in this process), on
 * SQLite and PostgreSQL: GET /metrics on the CP's admin listener (no token) and on the node's
 * health listener answer Prometheus' text format, and the numbers move with what happened —
 * admin and node API requests counted under their route templates (never a raw path with
 * ids), handshakes refused by layer, logins by method and result, PKI jobs by kind and state,
 * the event stream gauges, the OCSP staple's age and status.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import type { HostPort } from "../../src/shared/config/host-port.js";
import { splitPemBundle } from "../../src/shared/pki/index.js";
import { dbVariants } from "../helpers/databases.js";
import { type DeployedNode, type Deployment, startDeployment } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { connectProbe, expectCode } from "../helpers/sdk-clients.js";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text exposition format (0.0.4): samples only, comments and blank lines skipped. */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1] as string] = (pair[2] as string).replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}

async function scrape(address: HostPort): Promise<Sample[]> {
  const res = await fetch(`http://127.0.0.1:${address.port}/metrics`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  return parseExposition(await res.text());
}

/** The sum of the samples named `name` whose labels include `labels`. */
function total(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

function has(samples: Sample[], name: string, labels: Record<string, string> = {}): boolean {
  return samples.some((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** A TLS connection to the business port without a client certificate: refused by layer 1. */
async function connectWithoutCertificate(node: HostPort, serverCaPem: string): Promise<void> {
  await new Promise<void>((resolve) => {
    const socket = tls.connect({ host: node.host, port: node.port, ca: splitPemBundle(serverCaPem), minVersion: "TLSv1.3" });
    socket.on("error", () => resolve());
    socket.on("close", () => resolve());
  });
}

for (const variant of dbVariants()) {
  describe(`metrics (${variant.name})`, () => {
    let deployment: Deployment;
    let node: DeployedNode;

    before(async () => {
      deployment = await startDeployment(variant, { label: "metrics" });
      node = await deployment.addNode();
    });
    after(async () => {
      await deployment?.stop();
    });

    test("CP and node answer /metrics in Prometheus' text format; the numbers move with admin calls, checkins and logins", async () => {
      const app = await deployment.createApp("Metrics App");
      await deployment.createUser(app.appId, "alice", "correct horse 42");
      const material = await deployment.issueClient(app.appId);
      await deployment.waitForApp(app.appId);
      const admin = deployment.cp.adminAddress;
      const cpBefore = await scrape(admin);
      await deployment.admin("GET", `/applications/${app.appId}`);
      await deployment.admin("GET", `/nodes/${node.nodeId}`);
      await deployment.adminRaw("GET", "/applications/app_doesnotexist0000000000");
      await deployment.adminRaw("GET", "/no-such-route");

      // Logins: one success, one wrong password, then a hello with a wrong secret (layer 4).
      const probe = await connectProbe({ appId: app.appId, appSecret: app.secret, material, node: node.address, deviceId: "metrics-1" });
      try {
        await probe.client.loginPassword("alice", "correct horse 42");
        await expectCode(probe.client.loginPassword("alice", "wrong horse"), "LOGIN_FAILED");
      } finally {
        await probe.client.close();
      }
      await expectCode(
        connectProbe({ appId: app.appId, appSecret: "x".repeat(43), material, node: node.address, deviceId: "metrics-2" }),
        "APP_CREDENTIALS_INVALID",
      );
      await connectWithoutCertificate(node.address, material.serverCaPem);

      // CP: request counters by route template, status class; no ids anywhere in a route label.
      const cp = await scrape(admin);
      const requests = "authnexus_cp_http_requests_total";
      const moved = (labels: Record<string, string>) => total(cp, requests, labels) - total(cpBefore, requests, labels);
      assert.equal(moved({ listener: "admin", method: "GET", route: "/admin/v1/applications/:id", status_class: "2xx" }), 1);
      assert.equal(moved({ listener: "admin", method: "GET", route: "/admin/v1/applications/:id", status_class: "4xx" }), 1);
      assert.ok(moved({ listener: "admin", method: "GET", route: "/admin/v1/nodes/:id", status_class: "2xx" }) >= 1);
      assert.ok(moved({ listener: "admin", route: "unmatched", status_class: "4xx" }) >= 1);
      assert.ok(total(cp, requests, { listener: "node_api", status_class: "2xx" }) > 0, "node API calls (checkins, pulls) are counted");
      assert.ok(
        cp.some((s) => s.name === requests && s.labels.listener === "node_api" && s.labels.route?.endsWith("/checkin")),
        "checkins under their route template",
      );
      for (const s of cp.filter((s) => s.name === requests || s.name.startsWith("authnexus_cp_http_request_duration_seconds"))) {
        assert.doesNotMatch(s.labels.route ?? "", /(app|nod|agt)_[A-Za-z0-9_-]{6,}|doesnotexist|no-such-route/, "an id in a route label");
      }
      assert.ok(total(cp, "authnexus_cp_http_request_duration_seconds_count", { listener: "admin" }) > 0);
      // PKI jobs from the Control DB: the node's onboarding finished.
      assert.ok(total(cp, "authnexus_cp_pki_jobs") >= 1, "PKI jobs by kind and state");
      assert.ok(cp.some((s) => s.name === "authnexus_cp_pki_jobs" && s.labels.kind && s.labels.state === "succeeded" && s.value >= 1));
      for (const state of ["SYNCED", "PENDING", "ERROR", "NOT_SENT"]) assert.ok(has(cp, "authnexus_cp_config_items", { state }), state);
      assert.ok(total(cp, "authnexus_cp_config_items", { state: "SYNCED" }) >= 1);
      assert.equal(total(cp, "authnexus_cp_sse_streams_open"), 1);
      await waitFor(
        "the CP records the node's stream",
        async () => {
          const again = await scrape(admin);
          return total(again, "authnexus_cp_nodes_sse", { state: "connected" }) === 1 || null;
        },
        10_000,
      );
      assert.ok(total(cp, "authnexus_cp_ocsp_responses_total", { status: "good" }) >= 1, "the node's staple fetches");
      assert.ok(has(cp, "process_cpu_user_seconds_total"), "process metrics");
      if (variant.name === "postgres") assert.ok(total(cp, "authnexus_db_pool_connections", { db: "control", state: "total" }) >= 1);
      else assert.equal(total(cp, "authnexus_db_sqlite_busy_errors", { db: "control" }), 0);

      // Node: handshakes by layer, logins by method and result, requests, SSE, staple.
      const n = await scrape(node.server.healthAddress);
      assert.ok(total(n, "authnexus_node_business_handshakes_accepted_total") >= 1);
      assert.equal(total(n, "authnexus_node_business_handshakes_refused_total", { layer: "4" }), 1);
      await waitFor("the layer-1 refusal counted", async () => {
        const again = await scrape(node.server.healthAddress);
        return total(again, "authnexus_node_business_handshakes_refused_total", { layer: "1" }) >= 1 || null;
      });
      assert.equal(total(n, "authnexus_node_logins_total", { method: "password", result: "success" }), 1);
      assert.equal(total(n, "authnexus_node_logins_total", { method: "password", result: "LOGIN_FAILED" }), 1);
      assert.equal(total(n, "authnexus_node_business_requests_total", { type: "login_password" }), 2);
      assert.equal(total(n, "authnexus_node_business_requests_total", { type: "hello", result: "APP_CREDENTIALS_INVALID" }), 1);
      assert.equal(total(n, "authnexus_node_business_request_duration_seconds_count", { type: "login_password" }), 2);
      assert.equal(total(n, "authnexus_node_business_request_duration_seconds_bucket", { type: "login_password", le: "+Inf" }), 2);
      assert.equal(total(n, "authnexus_node_sse_connected"), 1);
      assert.equal(total(n, "authnexus_node_ocsp_staple_status", { status: "good" }), 1);
      const age = n.find((s) => s.name === "authnexus_node_ocsp_staple_age_seconds");
      assert.ok(age && age.value >= 0 && age.value < 3600, `staple age ${age?.value}`);
      for (const stream of ["commands", "auth-epochs", "blacklist"]) assert.ok(has(n, "authnexus_node_delta_lag", { stream }), stream);
      assert.ok(total(n, "authnexus_node_config_applies_total", { result: "applied" }) >= 1);
      assert.ok(has(n, "authnexus_node_business_connections"));
      if (variant.name !== "postgres") assert.ok(total(n, "authnexus_node_group_commit_batch_units_count", { db: "runtime" }) >= 1);
    });

    test("a CP and a node in one process keep registries of their own", async () => {
      const second = await deployment.addNode("node-2");
      const [first, other] = await Promise.all([scrape(node.server.healthAddress), scrape(second.server.healthAddress)]);
      assert.ok(total(first, "authnexus_node_logins_total") >= 2);
      assert.equal(total(other, "authnexus_node_logins_total"), 0);
      assert.notEqual(node.server.metrics.registry, second.server.metrics.registry);
    });
  });
}
