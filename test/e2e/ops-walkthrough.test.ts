/**
 * The README's walkthrough, command for command, against real processes (the built CLI: run
 * `npm run build` first): a `serve-cp` child, `ops setup`, `ops login`, `ops apps create`,
 * `ops nodes create` and `ops nodes package`, a `serve-node` child started from that package,
 * then a change pushed with `ops configs set --wait` that returns once the node applied it, and
 * `pki issue-client` and `ops users create` for the SDK part. Each step's stdout is what the
 * README captures in a shell variable, so no JSON is parsed by hand there.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type CpProcess, runCli, startCpProcess } from "../helpers/cp-process.js";
import { freePort, type NodeProcess, startNodeFromArchive } from "../helpers/node-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

const PASSWORD = "correct horse battery staple";
const mode = (path: string) => (statSync(path).mode & 0o777).toString(8);

describe("the README walkthrough with the ops command", () => {
  let dir: TempDir;
  let cp: CpProcess;
  let node: NodeProcess | undefined;
  const cleanups: Array<() => Promise<void>> = [];
  const cli = (args: string[], input?: string) =>
    runCli(args, {
      env: { XDG_CONFIG_HOME: join(dir.path, "config"), AUTHNEXUS_SESSION_FILE: "", AUTHNEXUS_ADMIN_TOKEN: "", AUTHNEXUS_ADMIN_URL: "" },
      timeoutMs: 60_000,
      ...(input !== undefined ? { input } : {}),
    });
  const ok = async (args: string[], input?: string): Promise<string> => {
    const r = await cli(args, input);
    assert.equal(r.code, 0, `${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    dir = await makeTempDir("authnexus-e2e-walkthrough");
    const cpPort = await freePort();
    const ocspPort = await freePort();
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
      ],
      env: { AUTHNEXUS_MASTER_KEY: randomBytes(32).toString("hex") },
    });
  });
  after(async () => {
    await node?.stop("SIGTERM");
    await cp?.stop("SIGTERM");
    await Promise.all(cleanups.splice(0).map((c) => c()));
    await dir?.cleanup();
  });

  test("setup, login, an application, a node from its package, a change that arrives, a client and a user", async () => {
    const adminUrl = cp.adminUrl;
    await ok(
      ["ops", "setup", "--admin-url", adminUrl, "--data-dir", join(dir.path, "cp"), "--username", "root", "--password-stdin"],
      PASSWORD,
    );
    await cp.waitForListener("node-api");
    await ok(["ops", "login", "--admin-url", adminUrl, "--username", "root", "--password-stdin"], PASSWORD);

    // APP=$(./bin/authnexus ops apps create "My Game" --secret-out …)
    const secretFile = join(dir.path, "my-game.secret");
    const app = (await ok(["ops", "apps", "create", "My Game", "--secret-out", secretFile])).trim();
    assert.match(app, /^app_[A-Za-z0-9_-]+$/);
    assert.equal(mode(secretFile), "600");
    assert.ok(readFileSync(secretFile, "utf8").trim().length > 20);
    const again = await cli(["ops", "apps", "create", "Other", "--secret-out", secretFile]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists/);

    // NODE=$(./bin/authnexus ops nodes create …); ops nodes package "$NODE" --out …
    const businessPort = await freePort();
    const nodeId = (
      await ok(["ops", "nodes", "create", "--name", "edge-1", "--host", "127.0.0.1", "--business-port", String(businessPort)])
    ).trim();
    assert.match(nodeId, /^nod_[A-Za-z0-9_-]+$/);
    const archive = join(dir.path, "edge-1.tar.gz");
    await ok(["ops", "nodes", "package", nodeId, "--out", archive]);
    const started = await startNodeFromArchive(readFileSync(archive), {
      dataDir: join(dir.path, "node"),
      businessPort,
      runtimeDbPath: join(dir.path, "cp", "runtime.db"),
    });
    cleanups.push(started.cleanup);
    node = started.node;

    // A change pushed from the CP, waited for until the node applied it.
    const pushed = await ok(
      ["ops", "configs", "set", "server_runtime_settings", "--file", "-", "--wait"],
      '{"login_attempts_per_minute": 20}',
    );
    assert.match(pushed, /^server_runtime_settings global: version 1 applied by 1 of 1 node\(s\)$/m);
    const listed = await ok(["ops", "configs", "list", "--type", "server_runtime_settings"]);
    assert.match(listed, /server_runtime_settings\s+global\s+1\s.*\s1\/1\s+0\s+0$/m);
    const bad = await cli(["ops", "configs", "set", "server_runtime_settings", "--file", "-"], "{not json");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /stdin is not JSON/);

    // The SDK part: the client files and a user.
    const sdkDir = join(dir.path, "my-game-sdk");
    await ok(["pki", "issue-client", "--app", app, "--out", sdkDir]);
    assert.ok(existsSync(join(sdkDir, "authnexus-sdk.json")));
    const user = await ok(["ops", "users", "create", "alice", "--app", app, "--password-stdin"], "correct horse 42");
    assert.match(user, /created user alice/);
  });
});
