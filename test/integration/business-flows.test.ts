/**
 * Every end-user auth flow through the real SDK against real nodes: a whole deployment in this
 * process (a Control Plane and two server nodes sharing one Runtime DB), on SQLite and on
 * PostgreSQL. Each flow is checked twice: by what the SDK is answered, and by what it leaves
 * behind — users, sessions, device bindings, card keys and invite codes in the Runtime DB, the
 * login log row of every attempt, and node logs that never hold a password, token, card key or
 * application secret.
 *
 * Every client reaches its node through a small TCP relay that leaves from an address of its own
 * in 127.0.0.0/8, so the node sees one client address per test (the login throttle counts per
 * address) and the login log can be checked for it. The nodes run on a clock the tests move
 * forward to let sessions, cards, invite codes and throttle windows expire.
 */
import assert from "node:assert/strict";
import { randomBytes, X509Certificate } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { after, afterEach, before, describe, test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import {
  AuthNexusClient,
  type AuthNexusError,
  type ErrorCode,
  isAuthNexusError,
  type SdkConfig,
  type Session,
} from "../../src/sdk/index.js";
import { generateCode, hashPassword, INVITE_CODE_GROUPS, PASSWORD_HASH_PREFIX } from "../../src/shared/credentials/index.js";
import type { LoginLogsTable } from "../../src/shared/db/runtime-schema.js";
import { sha256Hex } from "../../src/shared/ids.js";
import { appPolicySchema, serverRuntimeSettingsSchema } from "../../src/shared/node-protocol/index.js";
import { splitPemBundle } from "../../src/shared/pki/index.js";
import type { Clock } from "../../src/shared/time/index.js";
import { dbVariants } from "../helpers/databases.js";
import { type DeployedNode, type Deployment, startDeployment } from "../helpers/deployment.js";
import { waitFor } from "../helpers/node-agent.js";

const SECOND = 1000;
const DAY = 86_400 * SECOND;
/** server_runtime_settings.session_ttl_seconds by default. */
const DEFAULT_SESSION_TTL_MS = 7 * DAY;
/** One throttle window and a bit: every failure counted before it has left the window. */
const PAST_THROTTLE_WINDOW_MS = 61 * SECOND;
/** A test that takes longer has hung (they take well under a second each). */
const TEST_TIMEOUT_MS = 30 * SECOND;
/** How long a push or an SDK event may take to arrive. */
const EVENT_TIMEOUT_MS = 10 * SECOND;

/** The nodes' clock: real time plus however far the tests have moved it. */
class TravellingClock implements Clock {
  private offsetMs = 0;

  now(): number {
    return Date.now() + this.offsetMs;
  }

  advance(ms: number): void {
    this.offsetMs += ms;
  }
}

/**
 * Relays TCP from 127.0.0.1:<port> to a node, leaving from `sourceIp`: the node sees the client
 * at that address, while the SDK still connects to 127.0.0.1 (the name in the node's certificate).
 */
class SourceAddressRelay {
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(target: { host: string; port: number }, sourceIp: string): Promise<SourceAddressRelay> {
    const server = net.createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const relay = new SourceAddressRelay(server, (server.address() as net.AddressInfo).port);
    server.on("connection", (inbound) => relay.pair(inbound, target, sourceIp));
    return relay;
  }

  private pair(inbound: net.Socket, target: { host: string; port: number }, sourceIp: string): void {
    const outbound = net.connect({ host: target.host, port: target.port, localAddress: sourceIp });
    for (const [a, b] of [
      [inbound, outbound],
      [outbound, inbound],
    ] as const) {
      this.sockets.add(a);
      a.on("error", () => b.destroy());
      a.on("close", () => {
        this.sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

interface TestApp {
  appId: string;
  secret: string;
  trust: SdkConfig["trust"];
  /** The client address this application's clients use unless a test picks another. */
  ip: string;
}

interface ConnectOptions {
  device?: string;
  ip?: string;
  /** Index into the deployment's nodes (default 0). */
  node?: number;
  secret?: string;
  appId?: string;
}

type LoginLogRow = Omit<LoginLogsTable, "id" | "created_at" | "chain_id" | "chain_seq" | "chain_hash">;

/** The call is refused with `code`; returns the error. */
async function refused(call: Promise<unknown>, code: ErrorCode, label: string = code): Promise<AuthNexusError> {
  try {
    await call;
  } catch (error) {
    assert.ok(isAuthNexusError(error), `${label}: not an AuthNexusError: ${String(error)}`);
    assert.equal(error.code, code, `${label}: ${error.code} ${error.message}`);
    return error;
  }
  assert.fail(`${label}: expected ${code}, but the call succeeded`);
}

/** What a client is told for a failed login, whatever the reason: the one outward answer. */
async function loginFailed(call: Promise<unknown>, label: string): Promise<void> {
  const error = await refused(call, "LOGIN_FAILED", label);
  assert.equal(error.message, "Login failed.", label);
  assert.equal(error.retryable, false, label);
}

/** The next `name` event of the client; fails after EVENT_TIMEOUT_MS instead of waiting for ever. */
function next(client: AuthNexusClient, name: "force_logout" | "session_ended"): Promise<unknown> {
  return once(client, name, { signal: AbortSignal.timeout(EVENT_TIMEOUT_MS) }).catch((error: unknown) => {
    throw new Error(`no ${name} event within ${EVENT_TIMEOUT_MS} ms`, { cause: error });
  });
}

const sorted = <T>(rows: T[]): T[] => [...rows].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

for (const variant of dbVariants()) {
  describe(`end-user auth flows through the SDK on ${variant.name}`, { skip: variant.skip }, () => {
    const clock = new TravellingClock();
    let d: Deployment;
    let nodes: DeployedNode[] = [];
    const relays = new Map<string, Promise<SourceAddressRelay>>();
    const clients: AuthNexusClient[] = [];
    /** Every password, token, card key, invite code and application secret handed out. */
    const secrets = new Set<string>();
    let apps = 0;
    let addresses = 0;

    const it = (name: string, fn: () => Promise<void>) => test(name, { timeout: TEST_TIMEOUT_MS }, fn);
    const db = () => d.cp.context.runtimeDb;
    const nextIp = () => {
      addresses += 1;
      return `127.0.${Math.floor(addresses / 250) + 1}.${(addresses % 250) + 2}`;
    };
    const keep = (value: string) => {
      secrets.add(value);
      return value;
    };
    const keepToken = (token: Buffer) => {
      for (const form of ["hex", "base64", "base64url"] as const) secrets.add(token.toString(form));
      return token;
    };
    const password = (label: string) => keep(`${label}-${randomBytes(6).toString("hex")}-Pw`);

    const relayPort = async (node: number, ip: string) => {
      const key = `${node}/${ip}`;
      let relay = relays.get(key);
      if (!relay) {
        const target = nodes[node];
        assert.ok(target, `no node ${node}`);
        // The promise is what is kept: clients connecting at once share one relay.
        relay = SourceAddressRelay.start({ host: "127.0.0.1", port: target.address.port }, ip);
        relays.set(key, relay);
      }
      return (await relay).port;
    };

    const connect = async (app: TestApp, options: ConnectOptions = {}) => {
      const port = await relayPort(options.node ?? 0, options.ip ?? app.ip);
      const client = await AuthNexusClient.connect({
        config: { appId: options.appId ?? app.appId, nodes: [{ host: "127.0.0.1", port }], trust: app.trust },
        appSecret: options.secret ?? app.secret,
        deviceId: options.device ?? "device-1",
        reconnect: false,
      });
      clients.push(client);
      return client;
    };

    const policyApplied = (appId: string, content: Record<string, unknown>) => {
      const expected = appPolicySchema.parse(content);
      return waitFor(`app_policy of ${appId} applied on every node`, () =>
        nodes.every((n) => isDeepStrictEqual(n.server.agent.store.appPolicy(appId), expected)),
      );
    };
    const setPolicy = async (app: TestApp, content: Record<string, unknown>) => {
      await d.admin("PUT", `/applications/${app.appId}/configs/app_policy`, { content });
      await policyApplied(app.appId, content);
    };
    const setSettings = async (content: Record<string, unknown>) => {
      await d.admin("PUT", "/configs/server_runtime_settings", { content });
      const expected = serverRuntimeSettingsSchema.parse(content);
      await waitFor("server_runtime_settings applied on every node", () =>
        nodes.every((n) => isDeepStrictEqual(n.server.agent.store.serverRuntimeSettings(), expected)),
      );
    };

    const newApp = async (policy?: Record<string, unknown>): Promise<TestApp> => {
      apps += 1;
      const created = await d.createApp(`flows-${apps}`, policy);
      keep(created.secret);
      const material = await d.issueClient(created.appId);
      await d.waitForApp(created.appId);
      if (policy) await policyApplied(created.appId, policy);
      return {
        ...created,
        ip: nextIp(),
        trust: {
          clientCertPem: material.certPem,
          clientKeyPem: material.keyPem,
          serverCaPems: splitPemBundle(material.serverCaPem),
          ocspSignerDers: splitPemBundle(material.ocspSignerCaPem).map((pem) => new X509Certificate(pem).raw),
          mustStaple: true,
          spkiPins: [],
        },
      };
    };
    const newUser = async (app: TestApp, username: string) => {
      const pw = password(username);
      return { id: await d.createUser(app.appId, username, pw), username, password: pw };
    };
    const newCards = async (app: TestApp, count: number, durationSeconds: number) => {
      const batch = await d.admin("POST", `/applications/${app.appId}/card-keys`, { count, duration_seconds: durationSeconds });
      const cards = batch.cards as { id: string; code: string; hint: string }[];
      for (const card of cards) {
        keep(card.code);
        keep(card.code.replaceAll("-", ""));
      }
      return cards;
    };
    const newInvites = async (app: TestApp, count: number, maxUses: number, expiresAt?: number) => {
      const body = { count, max_uses: maxUses, ...(expiresAt === undefined ? {} : { expires_at: expiresAt }) };
      const created = await d.admin("POST", `/applications/${app.appId}/invite-codes`, body);
      const codes = created.codes as { id: string; code: string }[];
      for (const invite of codes) {
        keep(invite.code);
        keep(invite.code.replaceAll("-", ""));
      }
      return codes;
    };

    const userRow = (id: string) => db().selectFrom("users").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const usersOf = (app: TestApp) => db().selectFrom("users").selectAll().where("app_id", "=", app.appId).execute();
    const sessionOf = (token: Buffer) =>
      db().selectFrom("sessions").selectAll().where("token_hash", "=", sha256Hex(token)).executeTakeFirstOrThrow();
    const sessionsOf = (app: TestApp) => db().selectFrom("sessions").selectAll().where("app_id", "=", app.appId).execute();
    const cardRow = (id: string) => db().selectFrom("card_keys").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const inviteRow = (id: string) => db().selectFrom("invite_codes").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const devicesOf = async (userId: string) =>
      (await db().selectFrom("device_bindings").select("device_id").where("user_id", "=", userId).execute()).map((r) => r.device_id).sort();
    const loginLogs = (app: TestApp) => db().selectFrom("login_logs").selectAll().where("app_id", "=", app.appId).execute();
    /** The login log of an application, without ids and times, in a fixed order. */
    const loginLogRows = async (app: TestApp): Promise<LoginLogRow[]> =>
      sorted(
        (await loginLogs(app)).map((r) => ({
          app_id: r.app_id,
          user_id: r.user_id,
          username: r.username,
          method: r.method,
          result: r.result,
          reason: r.reason,
          ip: r.ip,
          device_id: r.device_id,
          node_id: r.node_id,
        })),
      );
    /** A login log row as a node writes it for a client of `app` on node 0 from the app's address. */
    const logRow = (app: TestApp, row: Partial<LoginLogRow> & Pick<LoginLogRow, "method" | "result">): LoginLogRow => ({
      app_id: app.appId,
      user_id: null,
      username: null,
      reason: null,
      ip: app.ip,
      device_id: "device-1",
      node_id: nodes[0]?.nodeId ?? null,
      ...row,
    });

    before(
      async () => {
        d = await startDeployment(variant, { label: `flows_${variant.name}`, clock });
        await d.addNode("flows-node-1");
        await d.addNode("flows-node-2");
        nodes = d.nodes;
      },
      { timeout: 120 * SECOND },
    );

    afterEach(async () => {
      await Promise.all(clients.splice(0).map((c) => c.close()));
    });

    after(async () => {
      await Promise.all(clients.splice(0).map((c) => c.close()));
      await Promise.all([...relays.values()].map(async (r) => (await r).stop()));
      await d?.stop();
    });

    it("register: a new account is logged in at once, in the application of the client certificate", async () => {
      const app = await newApp();
      const other = await newApp();
      const client = await connect(app, { device: "reg-device" });
      const pw = password("zoe");
      const t0 = clock.now();
      const session = await client.register({ username: "Zoë.Reg", password: pw, email: "zoe@example.com" });
      const t1 = clock.now();
      keepToken(session.token);
      assert.equal(session.method, "register");
      assert.equal(session.username, "Zoë.Reg");
      assert.match(session.userId ?? "", /^usr_/);
      assert.equal(session.token.length, 32);
      assert.equal(session.cardExpiresAt, null);
      assert.ok(session.expiresAt >= t0 + DEFAULT_SESSION_TTL_MS && session.expiresAt <= t1 + DEFAULT_SESSION_TTL_MS);
      assert.deepEqual(client.session, session);

      const user = await userRow(session.userId as string);
      assert.equal(user.app_id, app.appId, "the account belongs to the certificate's application");
      assert.equal(user.username, "Zoë.Reg");
      assert.equal(user.username_normalized, "zoë.reg");
      assert.equal(user.email, "zoe@example.com");
      assert.equal(user.status, "active");
      assert.equal(Number(user.auth_epoch), 0);
      assert.equal(user.invite_code_id, null);
      assert.ok(user.password_hash.startsWith(PASSWORD_HASH_PREFIX), user.password_hash);
      assert.ok(!user.password_hash.includes(pw));
      assert.ok(user.created_at >= t0 && user.created_at <= t1);
      assert.ok(user.last_login_at !== null && user.last_login_at >= t0 && user.last_login_at <= t1);

      const row = await sessionOf(session.token);
      assert.deepEqual(
        { ...row, id: undefined, created_at: undefined, last_heartbeat_at: undefined },
        {
          id: undefined,
          token_hash: sha256Hex(session.token),
          app_id: app.appId,
          user_id: user.id,
          card_key_id: null,
          device_id: "reg-device",
          auth_epoch: 0,
          node_id: nodes[0]?.nodeId,
          ip: app.ip,
          created_at: undefined,
          expires_at: session.expiresAt,
          last_heartbeat_at: undefined,
          revoked_at: null,
          revoke_reason: null,
        },
      );
      assert.ok(row.created_at >= t0 && row.created_at <= t1);
      assert.deepEqual(await devicesOf(user.id), ["reg-device"]);
      const logs = await loginLogs(app);
      assert.equal(logs.length, 1);
      assert.ok((logs[0]?.created_at ?? 0) >= t0 && (logs[0]?.created_at ?? 0) <= t1);
      assert.deepEqual(await loginLogRows(app), [
        logRow(app, { method: "register", result: "success", user_id: user.id, username: "Zoë.Reg", device_id: "reg-device" }),
      ]);

      // The new password logs in, its name compared case-insensitively.
      const again = await connect(app, { device: "reg-device" });
      assert.equal((await again.loginPassword("ZOË.reg", pw)).userId, user.id);

      // The same name in another application is another account, in that application.
      const elsewhere = await connect(other, { device: "reg-device" });
      const otherSession = await elsewhere.register({ username: "Zoë.Reg", password: password("zoe2") });
      assert.notEqual(otherSession.userId, user.id);
      assert.equal((await userRow(otherSession.userId as string)).app_id, other.appId);

      // The hello must name the certificate's application and prove that application's secret.
      await refused(connect(app, { appId: other.appId, secret: other.secret }), "APP_CREDENTIALS_INVALID", "another app named");
      await refused(connect(app, { secret: other.secret }), "APP_CREDENTIALS_INVALID", "another app's secret");
      assert.equal((await usersOf(app)).length, 1);
    });

    it("register: usernames are 3-32 letters or digits, unique per application in NFKC lower case", async () => {
      const app = await newApp();
      const client = await connect(app);
      for (const bad of ["ab", "has space", "-leading", "trailing_", "x".repeat(33), " padded", "semi;colon", "a\u0000b", "dot..ok?"]) {
        const error = await refused(client.register({ username: bad, password: password("bad") }), "VALIDATION_FAILED", bad);
        assert.match(error.message, /username/, bad);
      }
      assert.equal((await usersOf(app)).length, 0, "no refused name made an account");
      const refusals = await loginLogs(app);
      assert.equal(refusals.length, 9);
      assert.ok(refusals.every((l) => l.method === "register" && l.result === "failure" && /username/.test(l.reason ?? "")));
      assert.ok(
        refusals.some((l) => l.username === "a\uFFFDb"),
        "a control character is not written as it came",
      );

      await newUser(app, "Taken.Name");
      await newUser(app, "kelvin");
      await newUser(app, "Finder");
      // Case, width and compatibility forms are one name: "ＴＡＫＥＮ" is "taken", "\u212A" (Kelvin sign) is "k", "ﬁ" is "fi".
      for (const same of ["taken.name", "TAKEN.NAME", "Ｔａｋｅｎ.Ｎａｍｅ", "\u212Aelvin", "\uFB01nder"]) {
        await refused(client.register({ username: same, password: password("dup") }), "USERNAME_TAKEN", same);
      }
      const first = await client.register({ username: "Ｗｉｄｅ.Name", password: password("wide") });
      keepToken(first.token);
      assert.equal(first.username, "Ｗｉｄｅ.Name", "the spelling given is kept for display");
      const stored = await userRow(first.userId as string);
      assert.equal(stored.username, "Ｗｉｄｅ.Name");
      assert.equal(stored.username_normalized, "wide.name");
      await refused((await connect(app)).register({ username: "WIDE.name", password: password("dup") }), "USERNAME_TAKEN");

      // Two registrations of one new name at once: the database lets exactly one through.
      const racers = await Promise.all([connect(app, { device: "race-1" }), connect(app, { device: "race-2" })]);
      const outcomes = await Promise.allSettled(racers.map((c, i) => c.register({ username: "Racer", password: password(`race${i}`) })));
      assert.deepEqual(outcomes.map((o) => o.status).sort(), ["fulfilled", "rejected"]);
      const lost = outcomes.find((o) => o.status === "rejected") as PromiseRejectedResult;
      assert.ok(isAuthNexusError(lost.reason, "USERNAME_TAKEN"), String(lost.reason));
      for (const o of outcomes) if (o.status === "fulfilled") keepToken(o.value.token);

      const names = (await usersOf(app)).map((u) => u.username_normalized).sort();
      assert.deepEqual(names, ["finder", "kelvin", "racer", "taken.name", "wide.name"]);
      assert.equal((await sessionsOf(app)).length, 2, "only the successful registrations opened sessions");
    });

    it("register: passwords are 8-256 characters (not UTF-16 units); an email must be an address", async () => {
      const app = await newApp();
      const client = await connect(app);
      for (const [label, pw] of [
        ["seven characters", "Short7!"],
        ["seven emoji (fourteen UTF-16 units)", "😀😀😀😀😀😀😀"],
        ["empty", ""],
      ] as const) {
        const error = await refused(client.register({ username: "pw.user", password: pw }), "VALIDATION_FAILED", label);
        assert.match(error.message, /password/, label);
      }
      for (const email of ["not-an-email", "a@b", "two@@example.com", "spa ce@example.com"]) {
        const error = await refused(
          client.register({ username: "mail.user", password: password("mail"), email }),
          "VALIDATION_FAILED",
          email,
        );
        assert.match(error.message, /email/, email);
      }
      assert.equal((await usersOf(app)).length, 0);

      const eight = keep("пароль12"); // 8 characters, 14 bytes
      const longest = keep(`${randomBytes(4).toString("hex")}${"p".repeat(248)}`); // 256 characters, the frame's limit
      await client.register({ username: "eight.chars", password: eight });
      await (await connect(app)).register({ username: "longest.pw", password: longest, email: "long@example.org" });
      assert.equal((await (await connect(app)).loginPassword("eight.chars", eight)).username, "eight.chars");
      assert.equal((await (await connect(app)).loginPassword("longest.pw", longest)).username, "longest.pw");
      const users = await usersOf(app);
      assert.deepEqual(users.map((u) => [u.username, u.email]).sort(), [
        ["eight.chars", null],
        ["longest.pw", "long@example.org"],
      ]);
    });

    it("register: an application that requires invite codes takes each use exactly once", async () => {
      const app = await newApp({ invite_code_required: true });
      const other = await newApp();
      const [single, forgiving] = await newInvites(app, 2, 1);
      const [shared] = await newInvites(app, 1, 2);
      const [expiring] = await newInvites(app, 1, 5);
      const [deleted] = await newInvites(app, 1, 5);
      const [foreign] = await newInvites(other, 1, 5);
      assert.ok(single && forgiving && shared && expiring && deleted && foreign);
      const client = await connect(app);
      const pw = password("invitee");

      const refusals: Array<[string, string | undefined]> = [
        ["missing", undefined],
        ["malformed", "not-a-code"],
        ["unknown", generateCode(INVITE_CODE_GROUPS)],
        ["another application's", foreign.code],
      ];
      for (const [label, inviteCode] of refusals) {
        const error = await refused(
          client.register({ username: "invitee", password: pw, ...(inviteCode === undefined ? {} : { inviteCode }) }),
          "INVITE_CODE_INVALID",
          label,
        );
        if (inviteCode === undefined) assert.equal(error.message, "An invite code is required.");
      }
      await db()
        .updateTable("invite_codes")
        .set({ expires_at: clock.now() - 1 })
        .where("id", "=", expiring.id)
        .execute();
      await refused(client.register({ username: "invitee", password: pw, inviteCode: expiring.code }), "INVITE_CODE_INVALID", "expired");
      await d.admin("DELETE", `/applications/${app.appId}/invite-codes/${deleted.id}`);
      await refused(client.register({ username: "invitee", password: pw, inviteCode: deleted.code }), "INVITE_CODE_INVALID", "deleted");
      assert.equal((await usersOf(app)).length, 0);
      assert.equal((await inviteRow(expiring.id)).used_count, 0);

      // A single-use code raced by two registrations: one account, one use.
      const racers = await Promise.all([connect(app, { device: "race-1" }), connect(app, { device: "race-2" })]);
      const outcomes = await Promise.allSettled(
        racers.map((c, i) => c.register({ username: `invited.${i}`, password: pw, inviteCode: single.code })),
      );
      assert.deepEqual(outcomes.map((o) => o.status).sort(), ["fulfilled", "rejected"]);
      const won = outcomes.find((o) => o.status === "fulfilled") as PromiseFulfilledResult<Session>;
      const lost = outcomes.find((o) => o.status === "rejected") as PromiseRejectedResult;
      keepToken(won.value.token);
      assert.ok(isAuthNexusError(lost.reason, "INVITE_CODE_INVALID"), String(lost.reason));
      assert.equal((await inviteRow(single.id)).used_count, 1);
      assert.equal((await userRow(won.value.userId as string)).invite_code_id, single.id);
      await refused(client.register({ username: "invited.late", password: pw, inviteCode: single.code }), "INVITE_CODE_INVALID", "used");

      // Typed loosely (lower case, no dashes) it is the same code; a refused registration does not spend it.
      const loose = forgiving.code.toLowerCase().replaceAll("-", "");
      const taken = `INVITED.${outcomes.indexOf(won)}`;
      await refused(client.register({ username: taken, password: pw, inviteCode: loose }), "USERNAME_TAKEN");
      assert.equal((await inviteRow(forgiving.id)).used_count, 0, "a refused registration leaves the code unspent");
      keepToken((await client.register({ username: "invited.loose", password: pw, inviteCode: loose })).token);
      assert.equal((await inviteRow(forgiving.id)).used_count, 1);

      // A two-use code admits two accounts, then no more.
      for (const name of ["shared.a", "shared.b"]) {
        keepToken((await (await connect(app)).register({ username: name, password: pw, inviteCode: shared.code })).token);
      }
      await refused(client.register({ username: "shared.c", password: pw, inviteCode: shared.code }), "INVITE_CODE_INVALID", "used up");
      assert.equal((await inviteRow(shared.id)).used_count, 2);

      const listed = (await d.admin("GET", `/applications/${app.appId}/invite-codes`)).items as { id: string; state: string }[];
      const state = (id: string) => listed.find((i) => i.id === id)?.state;
      assert.equal(state(single.id), "used_up");
      assert.equal(state(shared.id), "used_up");
      assert.equal(state(expiring.id), "expired");
      const users = await usersOf(app);
      assert.deepEqual(users.map((u) => [u.username, u.invite_code_id]).sort(), [
        [`invited.${outcomes.indexOf(won)}`, single.id],
        ["invited.loose", forgiving.id],
        ["shared.a", shared.id],
        ["shared.b", shared.id],
      ]);
      const spent = "invite code used up or expired";
      const failures = (await loginLogs(app)).filter((l) => l.result === "failure").map((l) => [l.username, l.reason]);
      assert.deepEqual(
        sorted(failures),
        sorted([
          ["invitee", "invite code required"],
          ["invitee", "not an invite code"],
          ["invitee", "unknown invite code"],
          ["invitee", "unknown invite code"],
          ["invitee", spent],
          ["invitee", "unknown invite code"],
          [`invited.${1 - outcomes.indexOf(won)}`, spent],
          ["invited.late", spent],
          [taken, "username taken"],
          ["shared.c", spent],
        ]),
      );
    });

    it("register: refused with REGISTRATION_DISABLED when the application's policy says so", async () => {
      const app = await newApp({ registration_enabled: false });
      const client = await connect(app);
      await refused(client.register({ username: "no.entry", password: password("closed") }), "REGISTRATION_DISABLED");
      assert.equal((await usersOf(app)).length, 0);
      // Existing accounts still log in.
      const user = await newUser(app, "existing");
      assert.equal((await client.loginPassword(user.username, user.password)).userId, user.id);
    });

    it("password login: right password in; wrong password, unknown and banned users all out the same way, each logged", async () => {
      const app = await newApp();
      const other = await newApp();
      const started = clock.now();
      const pat = await newUser(app, "Pat.User");
      const banned = await newUser(app, "banned.user");
      const elsewhere = await newUser(other, "only.there");
      await d.admin("POST", `/applications/${app.appId}/users/${banned.id}/ban`, { reason: "abuse" });
      const client = await connect(app, { device: "pat-laptop" });

      await loginFailed(client.loginPassword(pat.username, `${pat.password}x`), "wrong password");
      await loginFailed(client.loginPassword("nobody.here", pat.password), "unknown user");
      await loginFailed(client.loginPassword("nul\u0000name", pat.password), "a name no account can have");
      await loginFailed(client.loginPassword(banned.username, banned.password), "banned, right password");
      await loginFailed(client.loginPassword(banned.username, "wrong-password"), "banned, wrong password");
      await loginFailed(client.loginPassword(elsewhere.username, elsewhere.password), "another application's user");
      assert.equal(client.session, null);
      assert.equal((await sessionsOf(app)).length, 0, "no failure opened a session");
      await client.heartbeat(); // the connection stays usable

      const t0 = clock.now();
      const session = await client.loginPassword("PAT.user", pat.password);
      const t1 = clock.now();
      keepToken(session.token);
      assert.equal(session.method, "password");
      assert.equal(session.userId, pat.id);
      assert.equal(session.username, "Pat.User");
      assert.equal(session.cardExpiresAt, null);
      assert.ok(session.expiresAt >= t0 + DEFAULT_SESSION_TTL_MS && session.expiresAt <= t1 + DEFAULT_SESSION_TTL_MS);
      const row = await sessionOf(session.token);
      assert.equal(row.user_id, pat.id);
      assert.equal(row.device_id, "pat-laptop");
      assert.equal(row.node_id, nodes[0]?.nodeId);
      assert.equal(row.ip, app.ip);
      assert.equal(row.expires_at, session.expiresAt);
      const user = await userRow(pat.id);
      assert.ok(user.last_login_at !== null && user.last_login_at >= t0 && user.last_login_at <= t1);
      assert.deepEqual(await devicesOf(pat.id), ["pat-laptop"]);
      assert.equal((await userRow(banned.id)).last_login_at, null);

      const logs = await loginLogs(app);
      assert.ok(
        logs.every((l) => l.created_at >= started && l.created_at <= t1),
        "each row carries the node's time of the attempt",
      );
      const fail = (reason: string, user: { id: string | null; username: string }) =>
        logRow(app, { method: "password", result: "failure", reason, user_id: user.id, username: user.username, device_id: "pat-laptop" });
      assert.deepEqual(
        await loginLogRows(app),
        sorted([
          fail("wrong password", { id: pat.id, username: "Pat.User" }),
          fail("unknown user", { id: null, username: "nobody.here" }),
          fail("unknown user", { id: null, username: "nul\uFFFDname" }),
          fail("user banned", { id: banned.id, username: "banned.user" }),
          fail("wrong password", { id: banned.id, username: "banned.user" }),
          fail("unknown user", { id: null, username: "only.there" }),
          logRow(app, { method: "password", result: "success", user_id: pat.id, username: "Pat.User", device_id: "pat-laptop" }),
        ]),
      );
    });

    it("password login: a stored hash in any other format is refused, and left as it was", async () => {
      const app = await newApp();
      const user = await newUser(app, "legacy.user");
      const client = await connect(app);
      const foreignFormats = [
        "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
        "$scrypt-sha256$n=16384,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        sha256Hex(user.password),
        user.password,
        `$authnexus-fast-hmac-sha256$v=2$${"00".repeat(16)}$${"11".repeat(32)}`,
      ];
      for (const stored of foreignFormats) {
        await db().updateTable("users").set({ password_hash: stored }).where("id", "=", user.id).execute();
        await loginFailed(client.loginPassword(user.username, user.password), stored);
        assert.equal((await userRow(user.id)).password_hash, stored, "never migrated");
      }
      // The right format under another key: a wrong password, not a format problem.
      await db()
        .updateTable("users")
        .set({ password_hash: hashPassword(user.password, randomBytes(32)) })
        .where("id", "=", user.id)
        .execute();
      await loginFailed(client.loginPassword(user.username, user.password), "another key");
      const reasons = (await loginLogs(app)).map((l) => l.reason);
      assert.deepEqual(reasons.sort(), [...foreignFormats.map(() => "unsupported password hash format"), "wrong password"].sort());
      assert.equal((await sessionsOf(app)).length, 0);
    });

    it("card key login: first use activates and binds to the device; another device, disabled, deleted and unknown cards are refused", async () => {
      const app = await newApp();
      const other = await newApp();
      const [card, raced, unusedDisabled, deleted] = await newCards(app, 4, 3600);
      const [foreign] = await newCards(other, 1, 3600);
      assert.ok(card && raced && unusedDisabled && deleted && foreign);
      assert.match(card.code, /^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){4}$/);

      const owner = await connect(app, { device: "card-device-A" });
      const t0 = clock.now();
      const session = await owner.loginCard(card.code);
      const t1 = clock.now();
      keepToken(session.token);
      const activated = await cardRow(card.id);
      assert.equal(activated.status, "active");
      assert.equal(activated.bound_device_id, "card-device-A");
      assert.equal(activated.user_id, null);
      assert.ok(activated.activated_at !== null && activated.activated_at >= t0 && activated.activated_at <= t1);
      assert.equal(activated.expires_at, activated.activated_at + 3600 * SECOND);
      assert.equal(session.method, "card");
      assert.equal(session.userId, null);
      assert.equal(session.username, null);
      assert.equal(session.cardExpiresAt, activated.expires_at);
      assert.equal(session.expiresAt, activated.expires_at, "a session ends no later than its card");
      const row = await sessionOf(session.token);
      assert.equal(row.card_key_id, card.id);
      assert.equal(row.user_id, null);
      assert.equal(row.device_id, "card-device-A");
      assert.equal(row.expires_at, activated.expires_at);

      // Again from the same device, typed loosely: the same card, neither re-activated nor re-bound.
      const again = await (await connect(app, { device: "card-device-A" })).loginCard(card.code.toLowerCase().replaceAll("-", " "));
      keepToken(again.token);
      assert.equal(again.cardExpiresAt, activated.expires_at);
      assert.deepEqual(await cardRow(card.id), activated);
      // A token login of a card session reports the card's expiry too.
      const resumed = await (await connect(app, { device: "card-device-A", node: 1 })).loginToken(session.token);
      assert.equal(resumed.cardExpiresAt, activated.expires_at);

      const thief = await connect(app, { device: "card-device-B" });
      await loginFailed(thief.loginCard(card.code), "another device");
      assert.deepEqual(await cardRow(card.id), activated, "the binding stays");
      await loginFailed(thief.loginCard(foreign.code), "another application's card");
      await loginFailed(thief.loginCard("7KQ3M-XW2PD-9HF4N-C6RTA-JB8VE"), "unknown card");
      await loginFailed(thief.loginCard("not a card"), "not a card key");

      // Two devices race for an unused card: one activates it, the other is refused.
      const racers = await Promise.all([connect(app, { device: "racer-1" }), connect(app, { device: "racer-2" })]);
      const outcomes = await Promise.allSettled(racers.map((c) => c.loginCard(raced.code)));
      assert.deepEqual(outcomes.map((o) => o.status).sort(), ["fulfilled", "rejected"]);
      const winner = outcomes.findIndex((o) => o.status === "fulfilled");
      for (const o of outcomes) if (o.status === "fulfilled") keepToken(o.value.token);
      assert.equal((await cardRow(raced.id)).bound_device_id, `racer-${winner + 1}`);

      await d.admin("POST", `/applications/${app.appId}/card-keys/${unusedDisabled.id}/disable`);
      await loginFailed(thief.loginCard(unusedDisabled.code), "disabled before use");
      assert.equal((await cardRow(unusedDisabled.id)).status, "disabled");
      await d.admin("DELETE", `/applications/${app.appId}/card-keys/${deleted.id}`);
      await loginFailed(thief.loginCard(deleted.code), "deleted");

      // Disabling a card in use ends its live session with a push, and it logs in nowhere after.
      const pushed = next(owner, "force_logout");
      await d.admin("POST", `/applications/${app.appId}/card-keys/${card.id}/disable`);
      await pushed;
      const relogin = await connect(app, { device: "card-device-A" });
      await loginFailed(relogin.loginCard(card.code), "disabled in use");
      await loginFailed(relogin.loginToken(session.token), "token of a disabled card");

      const failures = (await loginLogs(app)).filter((l) => l.result === "failure");
      assert.deepEqual(failures.map((l) => [l.method, l.device_id, l.reason]).sort(), [
        ["card", "card-device-A", "card key disabled"],
        ["card", "card-device-B", "card key bound to another device"],
        ["card", "card-device-B", "card key disabled"],
        ["card", "card-device-B", "not a card key"],
        ["card", "card-device-B", "unknown card key"],
        ["card", "card-device-B", "unknown card key"],
        ["card", "card-device-B", "unknown card key"],
        ["card", `racer-${2 - winner}`, "card key bound to another device"],
        ["token", "card-device-A", "session revoked"],
      ]);
      const successes = (await loginLogs(app)).filter((l) => l.result === "success");
      assert.equal(successes.length, 4);
      assert.ok(successes.every((l) => l.user_id === null));
    });

    it("token login: works on a second node from the same device; refused from another device, after logout and after an epoch bump", async () => {
      const app = await newApp();
      const other = await newApp();
      const user = await newUser(app, "token.user");
      const first = await connect(app, { device: "token-device" });
      const session = await first.loginPassword(user.username, user.password);
      keepToken(session.token);

      const ip2 = nextIp();
      const onSecond = await connect(app, { device: "token-device", node: 1, ip: ip2 });
      assert.equal(onSecond.node?.nodeId, nodes[1]?.nodeId);
      const t0 = clock.now();
      const resumed = await onSecond.loginToken(session.token);
      assert.equal(resumed.method, "token");
      assert.equal(resumed.userId, user.id);
      assert.equal(resumed.username, user.username);
      assert.ok(resumed.token.equals(session.token));
      assert.equal(resumed.expiresAt, session.expiresAt, "a token login does not extend the session");
      const row = await sessionOf(session.token);
      assert.equal(row.node_id, nodes[1]?.nodeId, "the session now lives on the second node");
      assert.equal(row.ip, ip2);
      assert.ok(row.last_heartbeat_at >= t0);
      assert.equal((await sessionsOf(app)).length, 1, "no new session");
      // The token as base64, as a program saves it.
      assert.equal(
        (await (await connect(app, { device: "token-device", node: 1 })).loginToken(session.token.toString("base64"))).userId,
        user.id,
      );

      await loginFailed((await connect(app, { device: "other-device", node: 1 })).loginToken(session.token), "another device");
      await loginFailed((await connect(app, { device: "token-device" })).loginToken(randomBytes(32)), "unknown token");
      await loginFailed((await connect(other, { device: "token-device" })).loginToken(session.token), "another application");

      // An epoch bump ends every older session on every node, live connections first.
      const live = [await connect(app, { device: "token-device" }), await connect(app, { device: "token-device", node: 1 })];
      const fresh = await live[0]?.loginPassword(user.username, user.password);
      assert.ok(fresh);
      keepToken(fresh.token);
      await live[1]?.loginToken(fresh.token);
      const pushes = live.map((c) => next(c, "force_logout"));
      const bump = await d.admin("POST", "/security/auth-epochs", { user_id: user.id, app_id: app.appId, reason: "log out everywhere" });
      assert.equal(bump.epoch, 1);
      await Promise.all(pushes);
      assert.equal(Number((await userRow(user.id)).auth_epoch), 1);
      for (const node of [0, 1])
        await loginFailed((await connect(app, { device: "token-device", node })).loginToken(fresh.token), `bumped, node ${node}`);
      const relogged = await (await connect(app, { device: "token-device", node: 1 })).loginPassword(user.username, user.password);
      keepToken(relogged.token);
      assert.equal((await sessionOf(relogged.token)).auth_epoch, 1, "a new login carries the new epoch");

      const reasons = (await loginLogs(app)).filter((l) => l.method === "token").map((l) => [l.result, l.reason, l.node_id]);
      assert.deepEqual(
        sorted(reasons),
        sorted([
          ["success", null, nodes[1]?.nodeId],
          ["success", null, nodes[1]?.nodeId],
          ["success", null, nodes[1]?.nodeId],
          ["failure", "token bound to another device", nodes[1]?.nodeId],
          ["failure", "unknown token", nodes[0]?.nodeId],
          ["failure", "auth epoch bumped since login", nodes[0]?.nodeId],
          ["failure", "auth epoch bumped since login", nodes[1]?.nodeId],
        ]),
      );
      assert.deepEqual(
        (await loginLogs(other)).map((l) => [l.method, l.result, l.reason, l.user_id]),
        [["token", "failure", "unknown token", null]],
      );
    });

    it("heartbeat and logout: heartbeats with or without a session; NOT_LOGGED_IN; logout ends the token on every node", async () => {
      const app = await newApp();
      const user = await newUser(app, "beat.user");
      const client = await connect(app, { device: "beat-device" });
      const t0 = clock.now();
      const serverTime = await client.heartbeat();
      assert.ok(serverTime >= t0 && serverTime <= clock.now(), "heartbeat_ack carries the node's clock");
      await refused(client.logout(), "NOT_LOGGED_IN", "logout before any login");
      await loginFailed(client.loginPassword(user.username, "wrong-password"), "wrong password");
      await refused(client.logout(), "NOT_LOGGED_IN", "logout after a failed login");

      const session = await client.loginPassword(user.username, user.password);
      keepToken(session.token);
      await client.heartbeat();
      // The same session, also live on the second node.
      const elsewhere = await connect(app, { device: "beat-device", node: 1 });
      await elsewhere.loginToken(session.token);

      await client.logout();
      assert.equal(client.session, null);
      const row = await sessionOf(session.token);
      assert.ok(row.revoked_at !== null);
      assert.equal(row.revoke_reason, "logout");
      await refused(client.logout(), "NOT_LOGGED_IN", "second logout");
      await client.heartbeat(); // logged out, still connected
      for (const node of [0, 1])
        await loginFailed((await connect(app, { device: "beat-device", node })).loginToken(session.token), `after logout, node ${node}`);
      assert.deepEqual(
        (await loginLogs(app)).filter((l) => l.method === "token" && l.result === "failure").map((l) => l.reason),
        ["session revoked", "session revoked"],
      );
    });

    it("logout ends the same session live on another connection of the node; after a force_logout the next call connects again", async () => {
      const app = await newApp();
      const user = await newUser(app, "twin.user");
      const first = await connect(app, { device: "twin-device" });
      const session = await first.loginPassword(user.username, user.password);
      keepToken(session.token);
      const twin = await connect(app, { device: "twin-device" });
      await twin.loginToken(session.token);
      const pushed = next(twin, "force_logout");
      await first.logout();
      await pushed;
      assert.equal(twin.session, null, "the twin connection's session ended with the logout");
      // The next call is not sent on the connection the node is closing: the client connects again.
      await twin.heartbeat();
      assert.equal(twin.connected, true);
      await loginFailed(twin.loginToken(session.token), "the logged-out token");
    });

    it("app_policy: each login method and registration can be switched off and on again", async () => {
      const app = await newApp();
      const user = await newUser(app, "policy.user");
      const [card] = await newCards(app, 1, 3600);
      assert.ok(card);
      const client = await connect(app, { device: "policy-device" });
      const token = keepToken((await client.loginPassword(user.username, user.password)).token);
      keepToken((await client.loginCard(card.code)).token);

      const attempts = async (c: AuthNexusClient) => ({
        password: await c.loginPassword(user.username, user.password).then(
          (s) => keepToken(s.token) && "ok",
          (e: AuthNexusError) => e.code,
        ),
        card: await c.loginCard(card.code).then(
          (s) => keepToken(s.token) && "ok",
          (e: AuthNexusError) => e.code,
        ),
        token: await c.loginToken(token).then(
          () => "ok",
          (e: AuthNexusError) => e.code,
        ),
      });
      const off = "LOGIN_METHOD_DISABLED";
      await setPolicy(app, { password_login_enabled: false });
      assert.deepEqual(await attempts(client), { password: off, card: "ok", token: "ok" });
      await setPolicy(app, { card_login_enabled: false });
      assert.deepEqual(await attempts(client), { password: "ok", card: off, token: "ok" });
      await setPolicy(app, { token_login_enabled: false });
      assert.deepEqual(await attempts(client), { password: "ok", card: "ok", token: off });
      await setPolicy(app, { password_login_enabled: false, card_login_enabled: false, token_login_enabled: false });
      assert.deepEqual(await attempts(client), { password: off, card: off, token: off });
      await setPolicy(app, { registration_enabled: false });
      await refused(client.register({ username: "late.comer", password: password("late") }), "REGISTRATION_DISABLED");
      await setPolicy(app, {});
      assert.deepEqual(await attempts(client), { password: "ok", card: "ok", token: "ok" });
      keepToken((await client.register({ username: "late.comer", password: password("late") })).token);

      const disabled = (await loginLogs(app)).filter((l) => l.result === "failure").map((l) => [l.method, l.reason]);
      assert.deepEqual(
        sorted(disabled),
        sorted([
          ["password", "login method disabled"],
          ["password", "login method disabled"],
          ["card", "login method disabled"],
          ["card", "login method disabled"],
          ["token", "login method disabled"],
          ["token", "login method disabled"],
          ["register", "registration disabled"],
        ]),
      );
    });

    it("app_policy: max_devices_per_user caps the devices an account logs in from", async () => {
      const app = await newApp({ max_devices_per_user: 2 });
      const user = await newUser(app, "device.user");
      const login = async (device: string, pw = user.password) =>
        keepToken((await (await connect(app, { device })).loginPassword(user.username, pw)).token);
      await login("dev-1");
      await login("dev-2");
      await refused(login("dev-3"), "DEVICE_LIMIT_REACHED");
      await loginFailed(login("dev-3", "wrong-password"), "a wrong password is a failed login first");
      await login("dev-1"); // a bound device is always welcome
      assert.deepEqual(await devicesOf(user.id), ["dev-1", "dev-2"]);
      assert.equal((await sessionsOf(app)).length, 3);

      await d.admin("DELETE", `/applications/${app.appId}/users/${user.id}/devices/dev-2`);
      await login("dev-3");
      assert.deepEqual(await devicesOf(user.id), ["dev-1", "dev-3"]);
      await setPolicy(app, { max_devices_per_user: 3 });
      await login("dev-4");
      assert.deepEqual(await devicesOf(user.id), ["dev-1", "dev-3", "dev-4"]);

      const failures = (await loginLogs(app)).filter((l) => l.result === "failure").map((l) => [l.device_id, l.reason, l.user_id]);
      assert.deepEqual(sorted(failures), [
        ["dev-3", "device limit reached", user.id],
        ["dev-3", "wrong password", user.id],
      ]);
    });

    it("session lifetime: server_runtime_settings sets it, an application's policy overrides it", async () => {
      const plain = await newApp();
      const short = await newApp({ session_ttl_seconds: 3600 });
      const users = { plain: await newUser(plain, "life.plain"), short: await newUser(short, "life.short") };
      const expiry = async (app: TestApp, user: { username: string; password: string }) => {
        const t0 = clock.now();
        const session = await (await connect(app)).loginPassword(user.username, user.password);
        keepToken(session.token);
        assert.equal((await sessionOf(session.token)).expires_at, session.expiresAt);
        return { from: session.expiresAt - clock.now(), to: session.expiresAt - t0 };
      };
      const within = (range: { from: number; to: number }, ttlMs: number, label: string) =>
        assert.ok(range.from <= ttlMs && ttlMs <= range.to, `${label}: ${JSON.stringify(range)} vs ${ttlMs}`);
      within(await expiry(plain, users.plain), DEFAULT_SESSION_TTL_MS, "the default");
      within(await expiry(short, users.short), 3600 * SECOND, "the application's policy");
      await setSettings({ session_ttl_seconds: 2 * 86_400 });
      try {
        within(await expiry(plain, users.plain), 2 * DAY, "the server setting");
        within(await expiry(short, users.short), 3600 * SECOND, "the policy still wins");
      } finally {
        await setSettings({});
      }
    });

    it("time: sessions, card keys and invite codes expire on the node's clock", async () => {
      const app = await newApp({ session_ttl_seconds: 60 });
      const lasting = await newApp();
      const user = await newUser(app, "brief.user");
      const steady = await newUser(lasting, "steady.user");
      const [card] = await newCards(app, 1, 60);
      const [invite] = await newInvites(app, 1, 5, clock.now() + 30 * SECOND);
      assert.ok(card && invite);

      const brief = await connect(app, { device: "brief-device" });
      const session = await brief.loginPassword(user.username, user.password);
      keepToken(session.token);
      assert.ok(session.expiresAt <= clock.now() + 60 * SECOND);
      const carded = await (await connect(app, { device: "card-device" })).loginCard(card.code);
      keepToken(carded.token);
      keepToken(
        (await (await connect(app)).register({ username: "invited.early", password: user.password, inviteCode: invite.code })).token,
      );
      const long = await connect(lasting, { device: "steady-device" });
      const longSession = await long.loginPassword(steady.username, steady.password);
      keepToken(longSession.token);
      const touchedAt = (await sessionOf(longSession.token)).last_heartbeat_at;

      clock.advance(61 * SECOND);
      const ended = next(brief, "session_ended");
      await refused(brief.heartbeat(), "SESSION_ENDED", "heartbeat of an expired session");
      await ended;
      assert.equal(brief.session, null);
      await loginFailed((await connect(app, { device: "brief-device" })).loginToken(session.token), "expired session");
      await loginFailed((await connect(app, { device: "card-device" })).loginCard(card.code), "expired card");
      await loginFailed((await connect(app, { device: "card-device" })).loginToken(carded.token), "session of an expired card");
      await refused(
        (await connect(app)).register({ username: "invited.late", password: user.password, inviteCode: invite.code }),
        "INVITE_CODE_INVALID",
        "expired invite",
      );
      // A session with time left carries on, and its heartbeat is recorded (at most once a minute).
      await long.heartbeat();
      await waitFor(
        "the heartbeat recorded",
        async () => (await sessionOf(longSession.token)).last_heartbeat_at >= touchedAt + 61 * SECOND,
      );
      keepToken((await brief.loginPassword(user.username, user.password)).token);

      const reasons = (await loginLogs(app)).filter((l) => l.result === "failure").map((l) => [l.method, l.reason]);
      assert.deepEqual(sorted(reasons), [
        ["card", "card key expired"],
        ["register", "invite code used up or expired"],
        ["token", "session expired"],
        ["token", "session expired"],
      ]);
    });

    it("throttle: login_attempts_per_minute failures per user and per address, then LOGIN_THROTTLED even for the right password", async () => {
      const app = await newApp();
      const target = await newUser(app, "target.user");
      const bystander = await newUser(app, "bystander");
      const [card] = await newCards(app, 1, 3600);
      assert.ok(card);
      const victims = [await newUser(app, "victim.1"), await newUser(app, "victim.2"), await newUser(app, "victim.3")];
      const [victim1, victim2, victim3] = victims as [(typeof victims)[0], (typeof victims)[0], (typeof victims)[0]];
      const bystanderToken = keepToken((await (await connect(app)).loginPassword(bystander.username, bystander.password)).token);
      const from = (ip: string, device = "throttle-device") => connect(app, { ip, device });
      await setSettings({ login_attempts_per_minute: 3 });
      try {
        // Per user: three failures from three addresses lock the account, not the addresses.
        for (let i = 0; i < 3; i++)
          await loginFailed((await from(nextIp())).loginPassword(target.username, "wrong-password"), `guess ${i}`);
        const fresh = await from(nextIp());
        await refused(fresh.loginPassword(target.username, target.password), "LOGIN_THROTTLED", "the right password, user locked");
        await refused(fresh.loginPassword("TARGET.user", target.password), "LOGIN_THROTTLED", "the same user, spelled otherwise");
        keepToken((await fresh.loginPassword(bystander.username, bystander.password)).token);

        // Per address: three failures on three accounts (a spray) lock the address for everyone.
        const sprayer = nextIp();
        const spray = await from(sprayer);
        for (const victim of victims) await loginFailed(spray.loginPassword(victim.username, "wrong-password"), victim.username);
        await refused(spray.loginPassword(bystander.username, bystander.password), "LOGIN_THROTTLED", "password, address locked");
        await refused(spray.loginCard(card.code), "LOGIN_THROTTLED", "card, address locked");
        await refused(spray.loginToken(bystanderToken), "LOGIN_THROTTLED", "token, address locked");
        await refused(spray.register({ username: "new.one", password: password("new") }), "LOGIN_THROTTLED", "register, address locked");
        keepToken((await (await from(nextIp())).loginPassword(victim1.username, victim1.password)).token);

        // Card and token failures count toward the address too.
        const cardGuesser = await from(nextIp());
        for (let i = 0; i < 3; i++) await loginFailed(cardGuesser.loginCard(generateCode(5)), `card guess ${i}`);
        await refused(cardGuesser.loginPassword(bystander.username, bystander.password), "LOGIN_THROTTLED", "after card guesses");

        // A success clears the account's count, not the address's: one good password does not launder a spray.
        const mixed = await from(nextIp());
        await loginFailed(mixed.loginPassword(victim2.username, "wrong-password"), "mixed 1");
        await loginFailed(mixed.loginPassword(victim3.username, "wrong-password"), "mixed 2");
        keepToken((await mixed.loginPassword(bystander.username, bystander.password)).token);
        await loginFailed(mixed.loginPassword(bystander.username, "wrong-password"), "mixed 3");
        await refused(mixed.loginPassword(bystander.username, bystander.password), "LOGIN_THROTTLED", "address still counted");

        // A burst of parallel guesses from one address gets the same three tries as a sequential one.
        const burstUser = await newUser(app, "burst.user");
        const burstIp = nextIp();
        const burst = await Promise.all(Array.from({ length: 8 }, (_, i) => from(burstIp, `burst-${i}`)));
        const answers = await Promise.all(
          burst.map((c) =>
            c.loginPassword(burstUser.username, "wrong-password").then(
              () => "ok",
              (e: AuthNexusError) => e.code,
            ),
          ),
        );
        assert.deepEqual(answers.sort(), [...Array(3).fill("LOGIN_FAILED"), ...Array(5).fill("LOGIN_THROTTLED")].sort());
        const burstLog = (await loginLogs(app)).filter((l) => l.ip === burstIp).map((l) => l.result);
        assert.deepEqual(burstLog.sort(), [...Array(3).fill("failure"), ...Array(5).fill("throttled")].sort());

        // The count is per node: the second node has seen none of it.
        keepToken((await (await connect(app, { ip: sprayer, node: 1 })).loginPassword(target.username, target.password)).token);

        // Refused attempts are logged as throttled, with what was locked.
        const throttled = (await loginLogs(app)).filter((l) => l.result === "throttled");
        assert.equal(throttled.length, 2 + 4 + 1 + 1 + 5);
        assert.deepEqual(
          [...new Set(throttled.filter((l) => l.username === target.username || l.username === "TARGET.user").map((l) => l.reason))],
          ["too many failures for the user"],
        );
        assert.deepEqual(
          throttled
            .filter((l) => l.ip === sprayer)
            .map((l) => l.method)
            .sort(),
          ["card", "password", "register", "token"],
        );
        assert.deepEqual(
          [...new Set(throttled.filter((l) => l.ip === sprayer).map((l) => l.reason))],
          ["too many failures from the address"],
        );
        assert.ok(throttled.every((l) => l.node_id === nodes[0]?.nodeId));

        // Half a window on, the lock holds, and attempts refused meanwhile are not counted as failures:
        // once the failures themselves have left the window, the right password is let in.
        clock.advance(PAST_THROTTLE_WINDOW_MS / 2);
        for (let i = 0; i < 3; i++)
          await refused(fresh.loginPassword(target.username, target.password), "LOGIN_THROTTLED", `still locked ${i}`);
        clock.advance(PAST_THROTTLE_WINDOW_MS / 2);
        keepToken((await fresh.loginPassword(target.username, target.password)).token);
        keepToken((await spray.loginPassword(bystander.username, bystander.password)).token);
        const [firstOfBurst] = burst;
        assert.ok(firstOfBurst);
        keepToken((await firstOfBurst.loginPassword(burstUser.username, burstUser.password)).token);
      } finally {
        await setSettings({});
      }
    });

    it("no password, token, card key, invite code or application secret appears in any log line or login log row", async () => {
      assert.ok(secrets.size > 50, `collected ${secrets.size} secrets`);
      const lines = [...nodes.flatMap((n) => n.events()), ...d.cpLogs()].map((e) => JSON.stringify(e));
      assert.ok(
        lines.some((l) => l.includes("login.refused")),
        "the nodes logged refused logins",
      );
      const rows = JSON.stringify(await db().selectFrom("login_logs").selectAll().execute());
      for (const secret of secrets) {
        const line = lines.find((l) => l.includes(secret));
        assert.equal(line, undefined, `a log line holds a secret: ${line}`);
        assert.ok(!rows.includes(secret), "a login log row holds a secret");
      }
    });
  });
}
