/**
 * The business plane across REAL processes: `authnexus serve-cp` and two `authnexus serve-node`
 * children (bin/authnexus → dist/, so run `npm run build` first) sharing one Runtime DB — on
 * SQLite the CP's runtime.db file, on PostgreSQL one database — with SDK clients in this process
 * pinned to one node each. What only separate processes show: a change made through the CP's
 * admin API reaches a session that lives in another process, and two nodes that share nothing
 * but the database agree on who activated a card key.
 *
 * - a password reset and a user blacklist entry end a live SDK session on node 2 (propagation
 *   time measured from the admin call to the SDK's force_logout event);
 * - a card key raced by two devices on the two nodes activates exactly once: one login succeeds,
 *   the other is LOGIN_FAILED, and the card is bound to the winner's device (20 rounds, a fresh
 *   card each);
 * - a token bound to device X is refused from device Y on the other node, and accepted there
 *   from device X;
 * - an announcement broadcast reaches a client on each node, each node reporting delivered 1.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import type { DbOptions } from "../../src/shared/config/db-options.js";
import { type CpProcess, startCpProcess } from "../helpers/cp-process.js";
import { dbFlags, dbVariants } from "../helpers/databases.js";
import { waitFor } from "../helpers/node-agent.js";
import { freePort, type NodeProcess, startNodeProcess } from "../helpers/node-process.js";
import { unpackPackage } from "../helpers/nodes.js";
import { type ClientTrustMaterial, connectProbe, expectCode, type Probe } from "../helpers/sdk-clients.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

/** Quick agent loops, so a missed hint would still be made up for within the test's patience. */
const AGENT_RUNTIME = {
  checkin_interval_ms: 2000,
  degraded_epoch_poll_ms: 200,
  degraded_blacklist_poll_ms: 200,
  backoff_base_ms: 50,
  backoff_max_ms: 500,
  request_timeout_ms: 3000,
};
/** Every client comes from 127.0.0.1, and half the card logins fail by design: no throttling here. */
const SETTINGS = { login_attempts_per_minute: 100_000 };
const PROPAGATION_LIMIT_MS = 5000;
const CARD_RACE_ROUNDS = 20;
const PASSWORD = "correct-horse-1";

interface BusinessNode {
  id: string;
  process: NodeProcess;
  address: { host: string; port: number };
}

for (const variant of dbVariants()) {
  describe(`business nodes as real processes (${variant.name})`, { skip: variant.skip }, () => {
    const rootPassword = `S3cure-${randomBytes(6).toString("hex")}-Pw!`;
    let dir: TempDir;
    let cp: CpProcess;
    let token = "";
    let nodeDbFlags: string[] = [];
    const nodes: BusinessNode[] = [];
    let appId = "";
    let appSecret = "";
    let material: ClientTrustMaterial;
    const probes: Probe[] = [];
    const timings: string[] = [];
    let userCounter = 0;
    const cleanups: Array<() => Promise<void>> = [];

    const admin = async (method: string, path: string, body?: unknown): Promise<any> => {
      const res = await cp.adminFetch(method, `/admin/v1${path}`, { token, ...(body === undefined ? {} : { body }) });
      assert.ok(res.status >= 200 && res.status < 300, `${method} ${path} → ${res.status} ${res.text}`);
      return res.json;
    };
    const record = (t: TestContext, what: string, ms: number) => {
      const line = `[${variant.name}] ${what}: ${ms.toFixed(1)} ms`;
      timings.push(line);
      t.diagnostic(line);
    };
    const node = (n: 1 | 2) => nodes[n - 1] as BusinessNode;
    const connect = async (n: 1 | 2, deviceId: string) => {
      const probe = await connectProbe({ appId, appSecret, material, node: node(n).address, deviceId, name: `${deviceId}@node-${n}` });
      probes.push(probe);
      return probe;
    };
    const newUser = async (tag: string) => {
      userCounter += 1;
      const username = `${tag}-${userCounter}`;
      const created = await admin("POST", `/applications/${appId}/users`, { username, password: PASSWORD });
      return { id: created.id as string, username };
    };
    const loggedIn = async (n: 1 | 2, user: { username: string }, deviceId: string) => {
      const probe = await connect(n, deviceId);
      probe.session = await probe.client.loginPassword(user.username, PASSWORD);
      return probe;
    };

    /** Creates a node on the CP, fetches and unpacks its package, and runs serve-node on it. */
    const startBusinessNode = async (name: string): Promise<BusinessNode> => {
      const businessPort = await freePort();
      const created = await admin("POST", "/nodes", { name, host: "127.0.0.1", business_port: businessPort });
      const pkg = await waitFor(
        `${name}: deploy package`,
        async () =>
          ((await admin("GET", `/nodes/${created.id}/deploy-packages`)).items as { id: string; current: boolean }[]).find((p) => p.current),
        20_000,
        100,
      );
      const archive = await fetch(new URL(`/admin/v1/nodes/${created.id}/deploy-packages/${pkg.id}/download`, cp.adminUrl), {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(archive.status, 200);
      const unpacked = await unpackPackage(Buffer.from(await archive.arrayBuffer()));
      cleanups.push(unpacked.cleanup);
      const nodeDir = join(dir.path, name);
      mkdirSync(nodeDir);
      const proc = await startNodeProcess({
        agentFile: unpacked.agentJsonPath,
        dataDir: nodeDir,
        healthPort: await freePort(),
        extraArgs: ["--listen", `127.0.0.1:${businessPort}`, ...nodeDbFlags],
      });
      await waitFor(`${name}: /readyz 200`, async () => (await proc.health("/readyz")).status === 200, 30_000, 50);
      return { id: created.id as string, process: proc, address: { host: "127.0.0.1", port: businessPort } };
    };

    before(async () => {
      dir = await makeTempDir(`authnexus-e2e-business-${variant.name}`);
      const cpPort = await freePort();
      const ocspPort = await freePort();
      let cpDbFlags: string[] = [];
      if (variant.name === "sqlite") {
        // One host: the nodes open the CP's own Runtime DB file.
        nodeDbFlags = dbFlags("", { type: "sqlite", path: join(dir.path, "cp", "runtime.db"), busyTimeoutMs: 5000 });
      } else {
        const control: DbOptions = await variant.fresh("e2e_business_control");
        const runtime: DbOptions = await variant.fresh("e2e_business_runtime");
        cpDbFlags = [...dbFlags("", control), ...dbFlags("runtime-", runtime)];
        nodeDbFlags = dbFlags("", runtime);
      }
      mkdirSync(join(dir.path, "cp"));
      cp = await startCpProcess({
        dataDir: join(dir.path, "cp"),
        extraArgs: [
          "--cp-listen",
          `127.0.0.1:${cpPort}`,
          "--public-cp-url",
          `https://localhost:${cpPort}`,
          "--ocsp-listen",
          `127.0.0.1:${ocspPort}`,
          "--public-ocsp-url",
          `http://127.0.0.1:${ocspPort}/ocsp/`,
          ...cpDbFlags,
        ],
        env: { AUTHNEXUS_MASTER_KEY: randomBytes(32).toString("hex") },
      });
      const banner = await cp.waitForStderr(/Console token: (\S+)/);
      const init = await cp.adminFetch("POST", "/admin/v1/setup/initialize", {
        body: { console_token: banner[1], admin_username: "root", admin_password: rootPassword },
      });
      assert.equal(init.status, 201, init.text);
      await cp.waitForListener("node-api");
      await cp.waitForListener("ocsp");
      const login = await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: rootPassword } });
      token = login.json.access_token as string;
      await admin("PUT", "/configs/cp_agent_runtime", { content: AGENT_RUNTIME });
      await admin("PUT", "/configs/server_runtime_settings", { content: SETTINGS });

      nodes.push(...(await Promise.all([startBusinessNode("node-1"), startBusinessNode("node-2")])));

      const created = await admin("POST", "/applications", { name: "Business E2E" });
      appId = created.app_id as string;
      appSecret = created.app_secret as string;
      await admin("PUT", `/applications/${appId}/configs/app_policy`, { content: { max_devices_per_user: 50 } });
      const issued = await admin("POST", `/applications/${appId}/client-certs`, {});
      material = {
        certPem: issued.certificate_pem,
        keyPem: issued.private_key_pem,
        serverCaPem: issued.server_ca_pem,
        ocspSignerCaPem: issued.ocsp_signer_ca_pem,
      };
      // Both nodes serve the application once its configs have reached them: a hello succeeds.
      for (const n of [1, 2] as const) {
        await waitFor(`node ${n} serves the application`, async () => {
          const probe = await connectProbe({ appId, appSecret, material, node: node(n).address, deviceId: "warm-up" });
          await probe.client.close();
          return true;
        });
      }
      await waitFor("both nodes apply the settings", async () => {
        const statuses = await Promise.all(nodes.map(async (n) => (await n.process.health("/status")).json));
        return statuses.every((s) =>
          (s.configs as { type: string; version: number }[]).some((c) => c.type === "server_runtime_settings" && c.version >= 1),
        );
      });
    });

    after(async () => {
      await Promise.all(probes.splice(0).map((p) => p.client.close()));
      await Promise.all([...nodes.map((n) => n.process.stop("SIGTERM")), cp?.stop("SIGTERM")]);
      await Promise.all(cleanups.splice(0).map((c) => c()));
      await dir?.cleanup();
      await variant.cleanup();
      if (timings.length > 0) process.stderr.write(`\n[business-nodes] measured:\n  ${timings.join("\n  ")}\n`);
    });

    test("a password reset ends a live SDK session on node 2; its token is refused on both nodes", async (t) => {
      const user = await newUser("e2e-reset");
      const target = await loggedIn(2, user, "e2e-reset-a");
      const bystander = await loggedIn(2, await newUser("e2e-bystander"), "e2e-reset-b");
      const started = performance.now();
      await admin("POST", `/applications/${appId}/users/${user.id}/password`, { password: "another-password-2" });
      const push = await target.push("force_logout");
      record(t, "password reset → force_logout on node 2 (process)", push.at - started);
      assert.ok(push.at - started < PROPAGATION_LIMIT_MS);
      await target.next("disconnected");
      assert.equal(bystander.client.connected, true);
      await bystander.client.heartbeat();
      await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", "the token on node 2");
      const onNode1 = await connect(1, "e2e-reset-a");
      await expectCode(onNode1.client.loginToken(target.token), "LOGIN_FAILED", "the token on node 1");
      await onNode1.client.loginPassword(user.username, "another-password-2");
    });

    test("a user blacklist entry ends a live SDK session on node 2; removed, the token works again", async (t) => {
      const user = await newUser("e2e-blk");
      const target = await loggedIn(2, user, "e2e-blk-a");
      const started = performance.now();
      const entry = await admin("POST", "/security/blacklist", { kind: "user", value: user.id, reason: "e2e" });
      const push = await target.push("force_logout");
      record(t, "user blacklist → force_logout on node 2 (process)", push.at - started);
      assert.ok(push.at - started < PROPAGATION_LIMIT_MS);
      await target.next("disconnected");
      await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", "a blacklisted user's token");

      await admin("DELETE", `/security/blacklist/${entry.id}`);
      // The removal travels like the entry did; until it has arrived the token is still refused.
      const back = await waitFor("the token logs in again", async () => {
        const probe = await connect(2, "e2e-blk-a");
        try {
          return await probe.client.loginToken(target.token);
        } catch {
          await probe.client.close();
          return null;
        }
      });
      assert.equal(back.userId, user.id);
    });

    test(`a card key raced by two devices on the two nodes activates exactly once (${CARD_RACE_ROUNDS} rounds)`, async (t) => {
      const batch = await admin("POST", `/applications/${appId}/card-keys`, { count: CARD_RACE_ROUNDS, duration_seconds: 3600 });
      const cards = batch.cards as { id: string; code: string }[];
      const wins = { "node-1": 0, "node-2": 0 };
      for (const [round, card] of cards.entries()) {
        const x = await connect(1, `race-${round}-x`);
        const y = await connect(2, `race-${round}-y`);
        // Both requests leave in the same tick; which one is sent first alternates.
        const [first, second] = round % 2 === 0 ? [x, y] : [y, x];
        const attempts = [first.client.loginCard(card.code), second.client.loginCard(card.code)];
        const settled = await Promise.allSettled(round % 2 === 0 ? attempts : [attempts[1], attempts[0]]);
        const outcomes = settled as [PromiseSettledResult<unknown>, PromiseSettledResult<unknown>];
        const won = outcomes.flatMap((o, i) => (o.status === "fulfilled" ? [i] : []));
        assert.equal(won.length, 1, `round ${round}: exactly one login wins: ${JSON.stringify(outcomes.map((o) => o.status))}`);
        const winnerIndex = won[0] as number;
        const winner = winnerIndex === 0 ? x : y;
        const loser = outcomes[1 - winnerIndex] as PromiseRejectedResult;
        assert.equal((loser.reason as { code?: string }).code, "LOGIN_FAILED", String(loser.reason));
        wins[winnerIndex === 0 ? "node-1" : "node-2"] += 1;

        const view = (
          (await admin("GET", `/applications/${appId}/card-keys?batch_id=${batch.batch_id}`)).items as {
            id: string;
            status: string;
            bound_device_id: string | null;
          }[]
        ).find((c) => c.id === card.id);
        assert.equal(view?.status, "active");
        assert.equal(view?.bound_device_id, winner.deviceId, `round ${round}: bound to the winner's device`);
        const sessions = (await admin("GET", `/applications/${appId}/sessions?page_size=200`)).items as { card_key_id: string | null }[];
        assert.equal(sessions.filter((x) => x.card_key_id === card.id).length, 1, `round ${round}: one session for the card`);
        // The loser's device never gets in with it.
        const loserProbe = winnerIndex === 0 ? y : x;
        await expectCode(loserProbe.client.loginCard(card.code), "LOGIN_FAILED", `round ${round}: the loser again`);
        await Promise.all([x.client.close(), y.client.close()]);
      }
      t.diagnostic(`winners: ${JSON.stringify(wins)}`);
      timings.push(`[${variant.name}] card race winners over ${CARD_RACE_ROUNDS} rounds: ${JSON.stringify(wins)}`);
    });

    test("a token bound to device X is refused from device Y on the other node and accepted there from X", async () => {
      const user = await newUser("e2e-device");
      const onNode1 = await loggedIn(1, user, "device-x");
      await expectCode((await connect(2, "device-y")).client.loginToken(onNode1.token), "LOGIN_FAILED", "device Y on node 2");
      const sameDevice = await connect(2, "device-x");
      const session = await sameDevice.client.loginToken(onNode1.token);
      assert.equal(session.userId, user.id);
      assert.equal(session.method, "token");
    });

    test("an announcement broadcast reaches a client on each node process; each node reports delivered 1", async (t) => {
      const user = await newUser("e2e-notice");
      const a = await loggedIn(1, user, "notice-a");
      const b = await loggedIn(2, user, "notice-b");
      const started = performance.now();
      const command = await admin("POST", "/commands", {
        kind: "announcement",
        payload: { app_id: appId, user_id: user.id, message: "maintenance at 02:00", level: "critical" },
      });
      for (const probe of [a, b]) {
        const push = await probe.push("announcement");
        assert.equal(push.message, "maintenance at 02:00");
        assert.equal(push.level, "critical");
        record(t, `announcement → ${probe.name}`, push.at - started);
      }
      const results = await waitFor("both nodes report", async () => {
        const detail = await admin("GET", `/commands/${command.id}`);
        const rows = detail.results as { node_id: string; status: string; output: { delivered?: number } | null }[];
        return rows.length === 2 && rows.every((r) => r.status === "succeeded") ? rows : null;
      });
      assert.deepEqual(
        results.map((r) => r.output?.delivered),
        [1, 1],
      );
    });

    test("no node logged an internal error", () => {
      for (const n of nodes) {
        const failures = n.process.events.filter((e) => e.level === "error");
        assert.deepEqual(failures, [], `${n.id} logged errors`);
      }
    });
  });
}
