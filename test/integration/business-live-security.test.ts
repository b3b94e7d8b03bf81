/**
 * Live security on the business plane: what an operator does on the CP reaches SDK clients that
 * are connected right now, on every node, and only those it concerns. A real CP and two real
 * nodes in process (test/helpers/deployment.ts) share one Runtime DB, on SQLite and PostgreSQL;
 * SDK clients are pinned to one node each, most of them to node 2, so every change has to cross
 * from the CP to a node over the four channels before a client notices it.
 *
 * - Security changes (docs/admin-api.md): a password reset, a ban, an auth-epoch bump, a user /
 *   device / IP blacklist entry and a disabled application each end the live connections they
 *   concern with a force_logout push, within the propagation time, and their tokens are refused
 *   afterwards; new hellos are refused (ACCESS_DENIED for a blacklisted IP or device,
 *   APP_DISABLED for a disabled application). Clients not concerned stay connected (a client
 *   from 127.0.0.2 survives the entry for 127.0.0.1). Removing a blacklist entry, or its expiry,
 *   lets its clients back in; a deleted application is ended like a disabled one.
 * - Business administration that ends sessions: delete a user, revoke a user's sessions, kick a
 *   session, disable a card key, remove a device binding.
 * - Logins racing a change (PostgreSQL, the login held open by a table lock): an epoch bump, a
 *   user blacklist entry or a card key disabled while the login is being written leaves no live
 *   session; a force_logout ends its connections even while the session rows are locked.
 * - Commands: force_logout, announcement and kill_process aimed at an application, a user, a
 *   session, a card key or a device reach exactly the matching connections, and each node's
 *   result on the CP says how many it `delivered`.
 * - A node listening on "::" (IPv4 clients seen as ::ffff:a.b.c.d) enforces IPv4 entries.
 * - Fail-closed (PRODUCT.md §6): with --blacklist-fail-closed a node whose blacklist cache is no
 *   longer current (the CP is gone and the node's clock has moved past
 *   SECURITY_STATE_STALE_AFTER_MS) refuses every request with SECURITY_STATE_UNAVAILABLE; without
 *   the flag it keeps serving, and while its epoch cache is not current it accepts only tokens
 *   younger than STALE_EPOCH_TOKEN_MAX_AGE_MS.
 *
 * Propagation latency (admin call → the SDK's force_logout event) is measured for every case and
 * printed at the end; only a generous bound is asserted.
 */
import assert from "node:assert/strict";
import { after, afterEach, before, describe, type TestContext, test } from "node:test";
import { sql } from "kysely";
import { SECURITY_STATE_STALE_AFTER_MS, STALE_EPOCH_TOKEN_MAX_AGE_MS } from "../../src/shared/config/defaults.js";
import type { Clock } from "../../src/shared/time/index.js";
import { dbVariants } from "../helpers/databases.js";
import {
  type ClientMaterial,
  type DeployedNode,
  type Deployment,
  type DeploymentOptions,
  FAST_AGENT_RUNTIME,
  startDeployment,
  type TestApplication,
} from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";
import { connectProbe, connectRawFrom, expectCode, type Probe, type RawClient } from "../helpers/sdk-clients.js";

/** A generous bound on admin call → SDK event: hints make it tens of milliseconds in practice. */
const PROPAGATION_LIMIT_MS = 5000;
const PASSWORD = "correct-horse-1";
/** Every client in these tests comes from 127.0.0.1: failed logins must not throttle the rest. */
const SETTINGS = { login_attempts_per_minute: 100_000 };
const POLICY = { max_devices_per_user: 50 };

interface TestUser {
  id: string;
  username: string;
  password: string;
}

let userCounter = 0;

for (const variant of dbVariants()) {
  describe(`live security on the business plane (${variant.name})`, { skip: variant.skip }, () => {
    let d: Deployment;
    let n1: DeployedNode;
    let n2: DeployedNode;
    let app: TestApplication;
    let bystanderApp: TestApplication;
    let material: ClientMaterial;
    let bystanderMaterial: ClientMaterial;
    const open: Probe[] = [];
    const raws: RawClient[] = [];
    const latencies: string[] = [];

    const record = (t: TestContext, what: string, ms: number) => {
      const line = `[${variant.name}] ${what}: ${ms.toFixed(1)} ms`;
      latencies.push(line);
      t.diagnostic(line);
      assert.ok(ms < PROPAGATION_LIMIT_MS, `${what} took ${ms} ms`);
    };

    const newUser = async (tag: string, application = app): Promise<TestUser> => {
      userCounter += 1;
      const username = `${tag}-${userCounter}`;
      const id = await d.createUser(application.appId, username, PASSWORD);
      return { id, username, password: PASSWORD };
    };

    const connect = async (node: DeployedNode, deviceId: string, application = app, trust = material): Promise<Probe> => {
      const probe = await connectProbe({
        appId: application.appId,
        appSecret: application.secret,
        material: trust,
        node: node.address,
        deviceId,
        name: `${deviceId}@${node === n1 ? "node-1" : node === n2 ? "node-2" : node.nodeId}`,
      });
      open.push(probe);
      return probe;
    };

    /** A client on `node` logged in as `user` from `deviceId`. */
    const loggedIn = async (node: DeployedNode, user: TestUser, deviceId: string, application = app, trust = material) => {
      const probe = await connect(node, deviceId, application, trust);
      probe.session = await probe.client.loginPassword(user.username, user.password);
      return probe;
    };

    /** The target got a force_logout push and lost its connection; returns ms since `started`. */
    const forcedOut = async (probe: Probe, started: number): Promise<number> => {
      const push = await probe.push("force_logout");
      assert.equal(push.kind, "force_logout");
      assert.ok(push.message.length > 0, "the push says why");
      await probe.next("disconnected");
      assert.equal(probe.client.connected, false, `${probe.name} is disconnected`);
      assert.equal(probe.client.session, null, `${probe.name} has no session left`);
      return push.at - started;
    };

    /** Untouched: still connected, no push, and the node still answers its heartbeat. */
    const undisturbed = async (...probes: Probe[]) => {
      for (const probe of probes) {
        assert.equal(probe.client.connected, true, `${probe.name} must still be connected`);
        assert.equal(probe.count("force_logout") + probe.count("kill_process") + probe.count("disconnected"), 0, `${probe.name} untouched`);
        await probe.client.heartbeat();
      }
    };

    const blacklist = async (kind: "ip" | "device" | "user", value: string) =>
      (await d.admin("POST", "/security/blacklist", { kind, value, reason: "live security test" })) as { id: string };

    /** Removes the entry and waits until no node blocks `value` any more. */
    const unblacklist = async (entry: { id: string }, kind: "ip" | "device" | "user", value: string) => {
      await d.admin("DELETE", `/security/blacklist/${entry.id}`);
      await waitFor(`every node lifts the ${kind} entry`, () =>
        d.nodes.every((n) => !n.server.agent.blacklist.isBlocked(kind, value, Date.now())),
      );
    };

    before(async () => {
      d = await startDeployment(variant, { label: `live_${variant.name}` });
      n1 = await d.addNode("node-1");
      n2 = await d.addNode("node-2");
      await d.admin("PUT", "/configs/server_runtime_settings", { content: SETTINGS });
      app = await d.createApp("Live Security", POLICY);
      bystanderApp = await d.createApp("Bystander", POLICY);
      material = await d.issueClient(app.appId);
      bystanderMaterial = await d.issueClient(bystanderApp.appId);
      await d.waitForApp(app.appId);
      await d.waitForApp(bystanderApp.appId);
      await waitFor("both nodes apply the settings and policies", () =>
        d.nodes.every(
          (n) =>
            n.server.agent.store.serverRuntimeSettings().login_attempts_per_minute === SETTINGS.login_attempts_per_minute &&
            n.server.agent.store.appPolicy(app.appId).max_devices_per_user === POLICY.max_devices_per_user &&
            n.server.agent.store.appPolicy(bystanderApp.appId).max_devices_per_user === POLICY.max_devices_per_user,
        ),
      );
    });

    afterEach(async () => {
      await Promise.all(open.splice(0).map((p) => p.client.close()));
      await Promise.all(raws.splice(0).map((r) => r.close()));
    });

    after(async () => {
      await d?.stop();
      if (latencies.length > 0) process.stderr.write(`\n[business-live-security] propagation:\n  ${latencies.join("\n  ")}\n`);
    });

    test("a password reset logs the user out on every node within the propagation time; others stay; the token and the old password are refused", async (t) => {
      const user = await newUser("reset");
      const other = await newUser("bystander");
      const target = await loggedIn(n2, user, "reset-a");
      const sameUserNode1 = await loggedIn(n1, user, "reset-b");
      const bystanders = [await loggedIn(n2, other, "reset-c"), await loggedIn(n1, other, "reset-d")];

      const started = performance.now();
      const answer = await d.admin("POST", `/applications/${app.appId}/users/${user.id}/password`, { password: "a-new-password-2" });
      assert.equal(answer.revoked_sessions, 2);
      record(t, "password reset → force_logout (node 2)", await forcedOut(target, started));
      record(t, "password reset → force_logout (node 1)", await forcedOut(sameUserNode1, started));
      await undisturbed(...bystanders);

      await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", "the old token");
      await expectCode(target.client.loginPassword(user.username, user.password), "LOGIN_FAILED", "the old password");
      const fresh = await target.client.loginPassword(user.username, "a-new-password-2");
      assert.equal(fresh.userId, user.id);
    });

    test("a ban logs the user out; the token and the password are refused until unbanned", async (t) => {
      const user = await newUser("ban");
      const other = await newUser("bystander");
      const target = await loggedIn(n2, user, "ban-a");
      const bystander = await loggedIn(n2, other, "ban-b");

      const started = performance.now();
      await d.admin("POST", `/applications/${app.appId}/users/${user.id}/ban`, { reason: "test ban" });
      record(t, "ban → force_logout", await forcedOut(target, started));
      await undisturbed(bystander);

      await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", "the token of a banned user");
      await expectCode(target.client.loginPassword(user.username, user.password), "LOGIN_FAILED", "a banned user's password");
      await d.admin("POST", `/applications/${app.appId}/users/${user.id}/unban`);
      await target.client.loginPassword(user.username, user.password);
    });

    test("an auth-epoch bump logs the user out everywhere; older tokens are refused, a new login works", async (t) => {
      const user = await newUser("epoch");
      const other = await newUser("bystander");
      const target = await loggedIn(n2, user, "epoch-a");
      const sameUserNode1 = await loggedIn(n1, user, "epoch-b");
      const bystander = await loggedIn(n2, other, "epoch-c");

      const started = performance.now();
      const bump = await d.admin("POST", "/security/auth-epochs", { user_id: user.id, app_id: app.appId, reason: "log out everywhere" });
      assert.equal(bump.runtime_user_updated, true);
      record(t, "auth-epoch bump → force_logout (node 2)", await forcedOut(target, started));
      record(t, "auth-epoch bump → force_logout (node 1)", await forcedOut(sameUserNode1, started));
      await undisturbed(bystander);

      await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", "a token older than the epoch");
      await expectCode(sameUserNode1.client.loginToken(sameUserNode1.token), "LOGIN_FAILED", "a token older than the epoch (node 1)");
      // A new login is minted under the new epoch: its token works on the other node (from its own device).
      const fresh = await target.client.loginPassword(user.username, user.password);
      const again = await connect(n1, "epoch-a");
      assert.equal((await again.client.loginToken(fresh.token)).userId, user.id);
    });

    test("a user blacklist entry logs the user out on both nodes and refuses the token and password; removing it lets the token back in", async (t) => {
      const user = await newUser("blk-user");
      const other = await newUser("bystander");
      const target = await loggedIn(n2, user, "blu-a");
      const sameUserNode1 = await loggedIn(n1, user, "blu-b");
      const bystander = await loggedIn(n2, other, "blu-c");

      const started = performance.now();
      const entry = await blacklist("user", user.id);
      record(t, "user blacklist → force_logout (node 2)", await forcedOut(target, started));
      record(t, "user blacklist → force_logout (node 1)", await forcedOut(sameUserNode1, started));
      await undisturbed(bystander);

      await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", "a blacklisted user's token");
      await expectCode(target.client.loginPassword(user.username, user.password), "LOGIN_FAILED", "a blacklisted user's password");

      await unblacklist(entry, "user", user.id);
      const back = await target.client.loginToken(target.token);
      assert.equal(back.userId, user.id);
      await sameUserNode1.client.loginToken(sameUserNode1.token);
    });

    test("a device blacklist entry ends that device's connections only; its hello is refused ACCESS_DENIED until the entry is removed", async (t) => {
      const user = await newUser("blk-dev");
      const target = await loggedIn(n2, user, "bld-a");
      const sameUserOtherDevice = await loggedIn(n2, user, "bld-b");
      const notLoggedIn = await connect(n1, "bld-a");

      const started = performance.now();
      const entry = await blacklist("device", "bld-a");
      record(t, "device blacklist → force_logout", await forcedOut(target, started));
      // A connection of the device that never logged in is ended too.
      await notLoggedIn.next("disconnected");
      await undisturbed(sameUserOtherDevice);

      await expectCode(connect(n2, "bld-a"), "ACCESS_DENIED", "a hello from the blacklisted device");
      await expectCode(connect(n1, "bld-a"), "ACCESS_DENIED", "a hello from the blacklisted device (node 1)");
      await expectCode(target.client.loginToken(target.token), "ACCESS_DENIED", "the blacklisted device reconnecting");

      await unblacklist(entry, "device", "bld-a");
      const back = await connect(n2, "bld-a");
      assert.equal((await back.client.loginToken(target.token)).userId, user.id);
    });

    test("an IP blacklist entry (127.0.0.1) ends every connection from it on both nodes, refuses new hellos ACCESS_DENIED, spares 127.0.0.2; removal lets them back", async (t) => {
      const user = await newUser("blk-ip");
      const target = await loggedIn(n2, user, "bli-a");
      const onNode1 = await loggedIn(n1, user, "bli-b");
      const raw = await connectRawFrom("127.0.0.2", {
        appId: app.appId,
        appSecret: app.secret,
        material,
        node: n2.address,
        deviceId: "bli-raw",
        username: user.username,
        password: user.password,
      });
      raws.push(raw);

      const started = performance.now();
      const entry = await blacklist("ip", "127.0.0.1");
      try {
        record(t, "IP blacklist → force_logout (node 2)", await forcedOut(target, started));
        record(t, "IP blacklist → force_logout (node 1)", await forcedOut(onNode1, started));
        // The other address is not concerned: same node, same user, still served.
        assert.equal(raw.connection.closed, false, "the 127.0.0.2 connection stays");
        assert.equal(raw.pushes.length, 0);
        await raw.connection.request("heartbeat", {}, 5000);

        await expectCode(connect(n2, "bli-c"), "ACCESS_DENIED", "a hello from the blacklisted IP");
        await expectCode(connect(n1, "bli-c"), "ACCESS_DENIED", "a hello from the blacklisted IP (node 1)");
      } finally {
        await unblacklist(entry, "ip", "127.0.0.1");
      }
      const back = await connect(n2, "bli-a");
      assert.equal((await back.client.loginToken(target.token)).userId, user.id);
    });

    test("disabling an application ends its connections on both nodes and refuses hellos APP_DISABLED; other applications stay; enabling it again lets them back", async (t) => {
      const disposable = await d.createApp("Disposable", POLICY);
      const disposableMaterial = await d.issueClient(disposable.appId);
      await d.waitForApp(disposable.appId);
      const user = await newUser("disp", disposable);
      const bystanderUser = await newUser("bystander");
      const target = await loggedIn(n2, user, "dis-a", disposable, disposableMaterial);
      const onNode1 = await loggedIn(n1, user, "dis-b", disposable, disposableMaterial);
      const bystander = await loggedIn(n2, bystanderUser, "dis-c");

      const started = performance.now();
      await d.admin("PATCH", `/applications/${disposable.appId}`, { status: "disabled" });
      record(t, "application disabled → force_logout (node 2)", await forcedOut(target, started));
      record(t, "application disabled → force_logout (node 1)", await forcedOut(onNode1, started));
      await undisturbed(bystander);
      await d.waitForApp(disposable.appId, "disabled");
      await expectCode(connect(n2, "dis-d", disposable, disposableMaterial), "APP_DISABLED", "a hello of the disabled application");

      await d.admin("PATCH", `/applications/${disposable.appId}`, { status: "active" });
      await d.waitForApp(disposable.appId, "active");
      const back = await connect(n2, "dis-a", disposable, disposableMaterial);
      assert.equal((await back.client.loginToken(target.token)).userId, user.id);

      // Deleted (to the recycle bin): the same, with its own reason; restored, it serves again.
      const deletedAt = performance.now();
      await d.admin("DELETE", `/applications/${disposable.appId}`);
      const push = await back.push("force_logout");
      assert.match(push.message, /removed/);
      record(t, "application deleted → force_logout", push.at - deletedAt);
      await undisturbed(bystander);
      await d.waitForApp(disposable.appId, "gone");
      await expectCode(connect(n2, "dis-e", disposable, disposableMaterial), "APP_CREDENTIALS_INVALID", "a hello of a deleted application");
      await d.admin("POST", `/applications/${disposable.appId}/restore`);
      await d.waitForApp(disposable.appId, "active");
      await (await connect(n1, "dis-a", disposable, disposableMaterial)).client.loginToken(target.token);
    });

    test("a blacklist entry that expires lets its user back in at its expiry, without a removal", async (t) => {
      const user = await newUser("blk-exp");
      const target = await loggedIn(n2, user, "ble-a");
      const started = performance.now();
      const expiresAt = Date.now() + 1500;
      await d.admin("POST", "/security/blacklist", { kind: "user", value: user.id, expires_at: expiresAt });
      record(t, "expiring user blacklist → force_logout", await forcedOut(target, started));
      await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", "the token while the entry is live");
      // The expiry itself is the event: no removal is sent, so nothing else could be waited on.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt - Date.now() + 50)));
      assert.equal((await target.client.loginToken(target.token)).userId, user.id);
    });

    test("business administration ends exactly the sessions it names: delete user, revoke sessions, kick a session, remove a device, disable a card key", async (t) => {
      const cases: Array<{ what: string; run: (ctx: { user: TestUser; target: Probe; spared: Probe }) => Promise<unknown> }> = [
        {
          what: "user deleted",
          run: ({ user }) => d.admin("DELETE", `/applications/${app.appId}/users/${user.id}`),
        },
        {
          what: "sessions revoked",
          run: ({ user }) => d.admin("POST", `/applications/${app.appId}/users/${user.id}/sessions/revoke`),
        },
        {
          what: "session kicked",
          run: async ({ target }) => {
            const sessions = await d.admin("GET", `/applications/${app.appId}/sessions?online=true`);
            const mine = (sessions.items as { id: string; device_id: string }[]).find((s) => s.device_id === target.deviceId);
            assert.ok(mine, "the target's session is listed");
            return d.admin("DELETE", `/applications/${app.appId}/sessions/${mine.id}`);
          },
        },
        {
          what: "device removed",
          run: ({ user, target }) =>
            d.admin("DELETE", `/applications/${app.appId}/users/${user.id}/devices/${encodeURIComponent(target.deviceId)}`),
        },
      ];
      for (const [i, c] of cases.entries()) {
        const user = await newUser(`admin${i}`);
        const target = await loggedIn(n2, user, `adm${i}-a`);
        // Same user, other device: spared by the session kick and the device removal only.
        const spared = await loggedIn(n1, user, `adm${i}-b`);
        const bystander = await loggedIn(n2, await newUser("bystander"), `adm${i}-c`);
        const started = performance.now();
        await c.run({ user, target, spared });
        record(t, `${c.what} → force_logout`, await forcedOut(target, started));
        if (c.what === "session kicked" || c.what === "device removed") await undisturbed(spared);
        else await forcedOut(spared, started);
        await undisturbed(bystander);
        await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", `the token after ${c.what}`);
      }

      // A card key: its session ends when the card is disabled, and the card no longer logs in.
      const batch = await d.admin("POST", `/applications/${app.appId}/card-keys`, { count: 1, duration_seconds: 3600 });
      const card = batch.cards[0] as { id: string; code: string };
      const cardClient = await connect(n2, "adm-card");
      cardClient.session = await cardClient.client.loginCard(card.code);
      const bystander = await loggedIn(n2, await newUser("bystander"), "adm-card-c");
      const started = performance.now();
      const disabled = await d.admin("POST", `/applications/${app.appId}/card-keys/${card.id}/disable`);
      assert.ok(disabled.command_id);
      record(t, "card key disabled → force_logout", await forcedOut(cardClient, started));
      await undisturbed(bystander);
      await expectCode(cardClient.client.loginToken(cardClient.token), "LOGIN_FAILED", "a disabled card's token");
      await expectCode(cardClient.client.loginCard(card.code), "LOGIN_FAILED", "a disabled card");
    });

    /**
     * A login whose database writes are still in flight when a security change reaches the node:
     * the change finds no session on the connection yet, so the login itself must notice it
     * before it answers. The window is held open by locking the login log (the last write of
     * every login) from the CP's own Runtime DB pool; PostgreSQL only, since SQLite's database
     * lock would hold the CP's writes back too.
     */
    /** Locks `table` (EXCLUSIVE: reads pass, writes wait) from the CP's own Runtime DB pool until released. */
    const lockTable = async (table: "login_logs" | "sessions"): Promise<() => Promise<void>> => {
      const db = d.cp.context.runtimeDb;
      let release!: () => void;
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      let locked!: () => void;
      const isLocked = new Promise<void>((resolve) => {
        locked = resolve;
      });
      const holder = db.transaction().execute(async (trx) => {
        await sql`lock table ${sql.table(table)} in exclusive mode`.execute(trx);
        locked();
        await released;
      });
      await Promise.race([isLocked, holder]);
      return async () => {
        release();
        await holder;
      };
    };
    const someoneWaitsOnALock = async () => {
      const waiting = await sql<{ n: number }>`select count(*)::int as n from pg_locks where not granted`.execute(d.cp.context.runtimeDb);
      return (waiting.rows[0]?.n ?? 0) > 0;
    };

    const duringBlockedLogin = async <T>(login: () => Promise<T>, change: () => Promise<void>): Promise<PromiseSettledResult<T>> => {
      const unlock = await lockTable("login_logs");
      const attempt = login().then(
        (value): PromiseSettledResult<T> => ({ status: "fulfilled", value }),
        (reason: unknown): PromiseSettledResult<T> => ({ status: "rejected", reason }),
      );
      try {
        await waitFor("the login waits on the login log", someoneWaitsOnALock);
        await change();
      } finally {
        await unlock();
      }
      return attempt;
    };

    const racing = { skip: variant.name === "postgres" ? false : "needs PostgreSQL row-level locking to hold a login open" } as const;

    test("an auth-epoch bump applied while a token login is writing: the login does not leave a stale session live", racing, async () => {
      const user = await newUser("race-epoch");
      const first = await loggedIn(n2, user, "race-e");
      const client = await connect(n2, "race-e");
      const result = await duringBlockedLogin(
        () => client.client.loginToken(first.token),
        async () => {
          const bump = await d.admin("POST", "/security/auth-epochs", { user_id: user.id, app_id: app.appId });
          await waitFor("node 2 applied the bump", () => n2.server.agent.epochs.epochOf(user.id) === bump.epoch);
        },
      );
      await first.next("force_logout");
      await assertNoLiveSession(client, result);
    });

    test("a user blacklisted while a password login is writing: the login does not leave the user logged in", racing, async () => {
      const user = await newUser("race-blk");
      const client = await connect(n2, "race-b");
      let entry: { id: string } | null = null;
      const result = await duringBlockedLogin(
        () => client.client.loginPassword(user.username, user.password),
        async () => {
          entry = await blacklist("user", user.id);
          await waitFor("node 2 applied the entry", () => n2.server.agent.blacklist.isBlocked("user", user.id, Date.now()));
        },
      );
      try {
        await assertNoLiveSession(client, result);
      } finally {
        if (entry) await unblacklist(entry, "user", user.id);
      }
    });

    test(
      "a card key disabled while its first login is writing: the login does not leave a session on a disabled card",
      racing,
      async () => {
        const batch = await d.admin("POST", `/applications/${app.appId}/card-keys`, { count: 1, duration_seconds: 3600 });
        const card = batch.cards[0] as { id: string; code: string };
        const client = await connect(n2, "race-c");
        const result = await duringBlockedLogin(
          () => client.client.loginCard(card.code),
          async () => {
            const disabled = await d.admin("POST", `/applications/${app.appId}/card-keys/${card.id}/disable`);
            // The force_logout the CP queued has been run by node 2 (and found nobody to log out).
            await waitFor("node 2 ran the card's force_logout", async () => {
              const detail = await d.admin("GET", `/commands/${disabled.command_id}`);
              return (detail.results as { node_id: string; status: string }[]).some(
                (r) => r.node_id === n2.nodeId && r.status !== "pending",
              );
            });
          },
        );
        await assertNoLiveSession(client, result);
      },
    );

    test("a force_logout command ends the connection at once even while the session cannot be revoked yet", racing, async (t) => {
      const user = await newUser("race-revoke");
      const target = await loggedIn(n2, user, "race-r");
      const unlock = await lockTable("sessions");
      let command: { id: string };
      try {
        const started = performance.now();
        command = await d.admin("POST", "/commands", { kind: "force_logout", payload: { user_id: user.id, reason: "db slow" } });
        record(t, "force_logout command while sessions are locked", await forcedOut(target, started));
      } finally {
        await unlock();
      }
      // Once the table is free the revocation completes: the command succeeded and the token is dead.
      const result = await waitFor("node 2 reports the command", async () => {
        const detail = await d.admin("GET", `/commands/${command.id}`);
        return (detail.results as { node_id: string; status: string; output: unknown }[]).find(
          (r) => r.node_id === n2.nodeId && r.status !== "pending",
        );
      });
      assert.equal(result.status, "succeeded", JSON.stringify(result));
      await expectCode(target.client.loginToken(target.token), "LOGIN_FAILED", "the token after the logout");
    });

    /**
     * The login fails (the change was applied before it answered), the connection stays usable,
     * and the session the login had written is revoked.
     */
    const assertNoLiveSession = async (probe: Probe, result: PromiseSettledResult<unknown>) => {
      assert.equal(result.status, "rejected", "the login must not succeed with a session the node already knows is ended");
      assert.equal((result.reason as { code?: string }).code, "LOGIN_FAILED", String(result.reason));
      assert.equal(probe.client.connected, true);
      await probe.client.heartbeat();
      const sessions = await d.admin("GET", `/applications/${app.appId}/sessions`);
      const mine = (sessions.items as { device_id: string; created_at: number; revoked_at: number | null }[])
        .filter((s) => s.device_id === probe.deviceId)
        .sort((x, y) => y.created_at - x.created_at)[0];
      assert.ok(mine?.revoked_at, `the session written by the login is revoked: ${JSON.stringify(mine)}`);
    };

    /**
     * The population every command is aimed at (fresh for each command, since a logout or kill
     * ends its targets):
     *   node 2: a (user u1, device A), b (u1, device B), c (u2, device C), k (card key, device K),
     *           g (another application's user, device C — the same device id as c);
     *   node 1: e (u1, device E), f (u3, device F).
     */
    const population = async (tag: string) => {
      const [u1, u2, u3] = [await newUser("cmd-u1"), await newUser("cmd-u2"), await newUser("cmd-u3")];
      const ub = await newUser("cmd-ub", bystanderApp);
      const batch = await d.admin("POST", `/applications/${app.appId}/card-keys`, { count: 1, duration_seconds: 3600 });
      const card = batch.cards[0] as { id: string; code: string };
      const a = await loggedIn(n2, u1, `${tag}-A`);
      const b = await loggedIn(n2, u1, `${tag}-B`);
      const c = await loggedIn(n2, u2, `${tag}-C`);
      const k = await connect(n2, `${tag}-K`);
      k.session = await k.client.loginCard(card.code);
      const g = await loggedIn(n2, ub, `${tag}-C`, bystanderApp, bystanderMaterial);
      const e = await loggedIn(n1, u1, `${tag}-E`);
      const f = await loggedIn(n1, u3, `${tag}-F`);
      const sessions = await d.admin("GET", `/applications/${app.appId}/sessions?user_id=${u1.id}&online=true`);
      const sessionOfA = (sessions.items as { id: string; device_id: string }[]).find((s) => s.device_id === a.deviceId);
      assert.ok(sessionOfA);
      return { all: { a, b, c, k, g, e, f }, u1, cardId: card.id, sessionOfA: sessionOfA.id, deviceC: c.deviceId };
    };
    type Population = Awaited<ReturnType<typeof population>>;
    type Member = keyof Population["all"];

    /** Each target: its payload and the members it must reach. */
    const TARGETS = ["application", "user", "session", "card key", "device", "device in one application"] as const;
    const plan = (p: Population, target: (typeof TARGETS)[number]): { payload: Record<string, string>; reach: Member[] } => {
      switch (target) {
        case "application":
          return { payload: { app_id: app.appId }, reach: ["a", "b", "c", "k", "e", "f"] };
        case "user":
          return { payload: { user_id: p.u1.id }, reach: ["a", "b", "e"] };
        case "session":
          return { payload: { session_id: p.sessionOfA }, reach: ["a"] };
        case "card key":
          return { payload: { card_key_id: p.cardId }, reach: ["k"] };
        case "device":
          return { payload: { device_id: p.deviceC }, reach: ["c", "g"] };
        case "device in one application":
          return { payload: { app_id: app.appId, device_id: p.deviceC }, reach: ["c"] };
      }
    };

    /** The command's results on the CP, once both nodes reported: delivered per node. */
    const deliveredPerNode = async (commandId: string): Promise<{ node1: number; node2: number }> => {
      const results = await waitFor(`both nodes report command ${commandId}`, async () => {
        const detail = await d.admin("GET", `/commands/${commandId}`);
        const rows = detail.results as { node_id: string; status: string; output: { delivered?: number } | null }[];
        return rows.length === 2 && rows.every((r) => r.status !== "pending") ? rows : null;
      });
      for (const r of results) assert.equal(r.status, "succeeded", JSON.stringify(r));
      const of = (node: DeployedNode) => Number(results.find((r) => r.node_id === node.nodeId)?.output?.delivered);
      return { node1: of(n1), node2: of(n2) };
    };

    for (const kind of ["announcement", "force_logout", "kill_process"] as const) {
      test(`${kind} reaches exactly the matching connections for each target, and the CP reports delivered per node`, async (t) => {
        if (kind === "force_logout") {
          // A logout must name whom it logs out: the whole application alone is refused at the CP.
          const refused = await d.adminRaw("POST", "/commands", { kind, payload: { app_id: app.appId } });
          assert.equal(refused.status, 400, refused.text);
        }
        const cases = TARGETS.filter((target) => kind !== "force_logout" || target !== "application");
        for (const [i, target] of cases.entries()) {
          const pop = await population(`${kind.slice(0, 4)}${i}`);
          const { payload, reach } = plan(pop, target);
          const body =
            kind === "announcement"
              ? { ...payload, message: `notice ${i}`, level: "warning" }
              : { ...payload, reason: `test ${kind} ${i}` };
          const started = performance.now();
          const command = await d.admin("POST", "/commands", { kind, payload: body });
          const reached = reach.map((m) => pop.all[m]);
          for (const member of reached) {
            const push = await member.push(kind);
            if (kind === "announcement") {
              assert.equal(push.message, `notice ${i}`);
              assert.equal(push.level, "warning");
              continue;
            }
            assert.equal(push.reason, `test ${kind} ${i}`);
            // force_logout: the node closes the connection; kill_process: the SDK closes the client for good.
            if (kind === "force_logout") await member.next("disconnected");
            else await waitFor(`${member.name} closed`, () => member.client.closed && !member.client.connected);
          }
          const first = Math.min(...reached.map((m) => m.seen.find((s) => s.kind === kind)?.at ?? Number.POSITIVE_INFINITY));
          record(t, `${kind} → ${target} (first of ${reached.length})`, first - started);

          const onNode1 = reach.filter((m) => m === "e" || m === "f").length;
          assert.deepEqual(await deliveredPerNode(command.id), { node1: onNode1, node2: reach.length - onNode1 }, `${target}: delivered`);
          for (const [name, member] of Object.entries(pop.all) as [Member, Probe][]) {
            if (reach.includes(name)) {
              if (kind === "announcement") await undisturbed(member);
              continue;
            }
            assert.equal(member.count(kind), 0, `${target}: ${name} must not get the ${kind}`);
            await undisturbed(member);
          }
          if (kind === "force_logout" && target === "session") {
            await expectCode(pop.all.a.client.loginToken(pop.all.a.token), "LOGIN_FAILED", "a session force-logged-out by command");
          }
          await Promise.all(open.splice(0).map((p) => p.client.close()));
        }
      });
    }
  });

  /**
   * Node switches, on a deployment of its own: node "open" listens on "::" (dual stack: IPv4
   * clients arrive as ::ffff:a.b.c.d) without --blacklist-fail-closed, node "closed" listens on
   * 127.0.0.1 with it. The clock every node reads is real time plus an offset the test moves
   * (timers still run on real time); the idle timeout is an hour so that moving the clock does
   * not end the connections. The fail-closed test stops the CP, so it runs last.
   */
  describe(`node switches: dual-stack listener, fail-closed (${variant.name})`, { skip: variant.skip }, () => {
    const clock = new (class implements Clock {
      offset = 0;
      now(): number {
        return Date.now() + this.offset;
      }
    })();
    let d: Deployment;
    let openNode: DeployedNode;
    let closedNode: DeployedNode;
    let app: TestApplication;
    let material: ClientMaterial;
    let user: TestUser;
    let cpStopped = false;
    const probes: Probe[] = [];

    const connect = async (node: DeployedNode, deviceId: string) => {
      // The business certificate names 127.0.0.1: a node bound to "::" is reached there too.
      const address = { host: "127.0.0.1", port: node.address.port };
      const probe = await connectProbe({ appId: app.appId, appSecret: app.secret, material, node: address, deviceId });
      probes.push(probe);
      return probe;
    };
    const loggedIn = async (node: DeployedNode, deviceId: string) => {
      const probe = await connect(node, deviceId);
      probe.session = await probe.client.loginPassword(user.username, user.password);
      return probe;
    };
    const fresh = (node: DeployedNode) => {
      const f = node.server.agent.securityFreshness();
      const now = clock.now();
      const current = (at: number | null) => at !== null && now - at <= SECURITY_STATE_STALE_AFTER_MS;
      return { blacklist: current(f.blacklistAt), epochs: current(f.epochsAt) };
    };

    before(async () => {
      // addNode reads the flags as it starts each node: each node gets its own.
      const options: DeploymentOptions = { label: `switches_${variant.name}`, clock, nodeFlags: { listen: "[::]:0" } };
      d = await startDeployment(variant, options);
      openNode = await d.addNode("open");
      options.nodeFlags = { "blacklist-fail-closed": "true" };
      closedNode = await d.addNode("closed");
      assert.equal(openNode.address.host, "::");
      assert.equal(openNode.server.status().business.blacklist_fail_closed, false);
      assert.equal(closedNode.server.status().business.blacklist_fail_closed, true);
      await d.admin("PUT", "/configs/server_runtime_settings", { content: { ...SETTINGS, heartbeat_timeout_seconds: 3600 } });
      app = await d.createApp("Stale", POLICY);
      material = await d.issueClient(app.appId);
      await d.waitForApp(app.appId);
      await waitFor("both nodes apply the settings", () =>
        d.nodes.every((n) => n.server.agent.store.serverRuntimeSettings().heartbeat_timeout_seconds === 3600),
      );
      const id = await d.createUser(app.appId, "stale-user", PASSWORD);
      user = { id, username: "stale-user", password: PASSWORD };
    });

    after(async () => {
      await Promise.all(probes.splice(0).map((p) => p.client.close()));
      // The CP was stopped by the test: the deployment must not stop it twice.
      if (cpStopped) d.cp.stop = async () => {};
      await d?.stop();
    });

    test("a node listening on '::' sees IPv4 clients as ::ffff:127.0.0.1 and still enforces an IP blacklist entry for 127.0.0.1", async (t) => {
      const client = await loggedIn(openNode, "dual-a");
      const started = performance.now();
      const entry = await d.admin("POST", "/security/blacklist", { kind: "ip", value: "127.0.0.1" });
      try {
        const push = await client.push("force_logout");
        t.diagnostic(`IP blacklist → force_logout on the dual-stack node: ${(push.at - started).toFixed(1)} ms`);
        await client.next("disconnected");
        await expectCode(connect(openNode, "dual-b"), "ACCESS_DENIED", "a hello from the blacklisted IPv4 address");
      } finally {
        await d.admin("DELETE", `/security/blacklist/${entry.id}`);
        await waitFor("the entry is lifted", () =>
          d.nodes.every((n) => !n.server.agent.blacklist.isBlocked("ip", "127.0.0.1", Date.now())),
        );
      }
      await (await connect(openNode, "dual-a")).client.loginToken(client.token);
    });

    test("with the event stream up, caches stay current however long the poll intervals: a healthy fail-closed node keeps serving", async () => {
      await d.admin("PUT", "/configs/cp_agent_runtime", {
        content: { ...FAST_AGENT_RUNTIME, blacklist_poll_ms: 600_000, epoch_poll_ms: 600_000 },
      });
      await waitFor("both nodes poll every 10 minutes", () =>
        d.nodes.every((n) => n.server.agent.store.cpAgentRuntime().blacklist_poll_ms === 600_000 && n.server.agent.sse.connected),
      );
      const live = await loggedIn(closedNode, "dev-long-poll");
      // 150 s pass with no security change, so no pull; the stream's frames (pings, hints) confirm the caches.
      clock.offset += SECURITY_STATE_STALE_AFTER_MS + 30_000;
      const marker = 3000 + Math.floor(Math.random() * 500); // within the 3600 s ceiling, unlike the 3600 in force
      await d.admin("PUT", "/configs/server_runtime_settings", { content: { ...SETTINGS, heartbeat_timeout_seconds: marker } });
      await waitFor("a hint frame reached both nodes", () =>
        d.nodes.every((n) => n.server.agent.store.serverRuntimeSettings().heartbeat_timeout_seconds === marker),
      );
      assert.deepEqual(fresh(closedNode), { blacklist: true, epochs: true });
      await live.client.heartbeat();
      await (await connect(closedNode, "dev-long-poll")).client.loginToken(live.token);
      await d.admin("PUT", "/configs/cp_agent_runtime", { content: FAST_AGENT_RUNTIME });
      await d.admin("PUT", "/configs/server_runtime_settings", { content: { ...SETTINGS, heartbeat_timeout_seconds: 3600 } });
      await waitFor("the fast polls and settings are back", () =>
        d.nodes.every(
          (n) =>
            n.server.agent.store.cpAgentRuntime().blacklist_poll_ms !== 600_000 &&
            n.server.agent.store.serverRuntimeSettings().heartbeat_timeout_seconds === 3600,
        ),
      );
    });

    test("fail-closed refuses every request with SECURITY_STATE_UNAVAILABLE once the blacklist is stale; without the flag the node serves, accepting only young tokens", async (t) => {
      // Current caches: both nodes serve.
      const oldToken = (await loggedIn(openNode, "dev-old")).token;
      await loggedIn(closedNode, "dev-closed-0");

      // Past the token age limit with the CP up: once the caches are pulled again, an old token is fine.
      clock.offset += STALE_EPOCH_TOKEN_MAX_AGE_MS + 60_000;
      for (const node of d.nodes) {
        node.server.agent.wake("blacklist");
        node.server.agent.wake("auth-epochs");
      }
      await waitFor("the caches are current again at the new time", () => d.nodes.every((n) => fresh(n).blacklist && fresh(n).epochs));
      const youngToken = (await loggedIn(openNode, "dev-young")).token;
      await (await connect(openNode, "dev-old")).client.loginToken(oldToken);
      await (await connect(closedNode, "dev-old")).client.loginToken(oldToken);
      const closedLive = await loggedIn(closedNode, "dev-closed-1");
      const closedIdle = [await connect(closedNode, "dev-closed-2"), await connect(closedNode, "dev-closed-3")];
      const openLive = await loggedIn(openNode, "dev-open-1");

      // The CP goes away: pulls fail. Then the clock passes the staleness limit.
      await d.cp.stop();
      cpStopped = true;
      clock.offset += SECURITY_STATE_STALE_AFTER_MS + 10_000;
      assert.deepEqual(fresh(closedNode), { blacklist: false, epochs: false });
      assert.deepEqual(fresh(openNode), { blacklist: false, epochs: false });

      // --blacklist-fail-closed: a live connection's next request is refused and the connection ends …
      await expectCode(closedLive.client.heartbeat(), "SECURITY_STATE_UNAVAILABLE", "a heartbeat on the fail-closed node");
      const [idlePassword, idleToken] = closedIdle as [Probe, Probe];
      await expectCode(idlePassword.client.loginPassword(user.username, user.password), "SECURITY_STATE_UNAVAILABLE", "a password login");
      await expectCode(idleToken.client.loginToken(youngToken), "SECURITY_STATE_UNAVAILABLE", "a token login");
      await closedLive.next("disconnected");
      // … and so is every new hello.
      const refused = await expectCode(
        connect(closedNode, "dev-closed-4"),
        "SECURITY_STATE_UNAVAILABLE",
        "a hello on the fail-closed node",
      );
      assert.equal(refused.retryable, true);
      t.diagnostic(`fail-closed refusal: ${refused.message}`);

      // Without the flag the node keeps serving: heartbeats, password logins …
      await openLive.client.heartbeat();
      const later = await loggedIn(openNode, "dev-open-2");
      await later.client.heartbeat();
      // … and token logins, but only of tokens younger than STALE_EPOCH_TOKEN_MAX_AGE_MS.
      await expectCode((await connect(openNode, "dev-old")).client.loginToken(oldToken), "LOGIN_FAILED", "a token older than the limit");
      await (await connect(openNode, "dev-young")).client.loginToken(youngToken);
      await (await connect(openNode, "dev-open-2")).client.loginToken(later.token);
    });
  });
}
