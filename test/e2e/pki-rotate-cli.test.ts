/**
 * `authnexus pki rotate <nid>` and `pki rotations <nid>` against REAL processes: a `serve-cp`
 * child and a `serve-node` child running on the node's unpacked deploy package (the built CLI:
 * run `npm run build` first). SQLite only, the node sharing the CP's Runtime DB file as on one
 * host; the rotation itself (both databases, under load) is covered in process by
 * test/integration/node-cert-rotation.test.ts and the jobs' edge cases by
 * test/integration/node-rotation-jobs.test.ts.
 *
 * - Following a rotation of the running node prints issuing → delivering → delivered → applied
 *   (naming the jobs, and when the old client certificate is retired) and exits 0 without
 *   waiting for the grace period.
 * - `--no-wait --json` prints the 202 answer; a rotate while that one is unfinished exits 1
 *   naming NODE_ROTATION_IN_PROGRESS and the rotation; an unknown node exits 1 with NOT_FOUND.
 * - A node that never runs never takes its new certificates: following it stops at --timeout
 *   with exit 1, saying where the rotation stands and how to follow it.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type CpProcess, runCli, startSetUpCpProcess } from "../helpers/cp-process.js";
import { waitFor } from "../helpers/node-agent.js";
import { freePort, type NodeProcess, startNodeFromArchive } from "../helpers/node-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

type Obj = Record<string, any>;
const PASSWORD = "correct horse battery staple";
/** Quick agent loops, so a missed hint would still be made up for within the test's patience. */
const AGENT_RUNTIME = { checkin_interval_ms: 2000, backoff_base_ms: 50, backoff_max_ms: 500, request_timeout_ms: 3000 };

describe("authnexus pki rotate", () => {
  let dir: TempDir;
  let cp: CpProcess;
  let node: NodeProcess | undefined;
  let token = "";
  let nodeId = "";
  let idleNodeId = "";
  const cleanups: Array<() => Promise<void>> = [];

  const cli = (args: string[], timeoutMs = 60_000) => runCli([...args, "--admin-url", cp.adminUrl, "--token", token], { timeoutMs });
  const admin = async (method: string, path: string, body?: unknown): Promise<Obj> => {
    const res = await cp.adminFetch(method, `/admin/v1${path}`, { token, ...(body === undefined ? {} : { body }) });
    assert.ok(res.status >= 200 && res.status < 300, `${method} ${path} → ${res.status} ${res.text}`);
    return res.json as Obj;
  };
  const createNode = async (name: string, businessPort: number) => {
    const created = await admin("POST", "/nodes", { name, host: "127.0.0.1", business_port: businessPort });
    await waitFor(
      `${name}: onboarding job`,
      async () => (await admin("GET", `/pki/jobs/${created.job_id}`)).status === "succeeded",
      20_000,
      100,
    );
    return created.id as string;
  };

  before(async () => {
    dir = await makeTempDir("authnexus-e2e-pki-rotate");
    mkdirSync(join(dir.path, "cp"));
    cp = await startSetUpCpProcess(join(dir.path, "cp"), PASSWORD);
    token = (await cp.adminFetch("POST", "/admin/v1/auth/login", { body: { username: "root", password: PASSWORD } })).json.access_token;
    await admin("PUT", "/configs/cp_agent_runtime", { content: AGENT_RUNTIME });

    const businessPort = await freePort();
    nodeId = await createNode("rotate-cli-1", businessPort);
    const pkg = ((await admin("GET", `/nodes/${nodeId}/deploy-packages`)).items as { id: string; current: boolean }[]).find(
      (p) => p.current,
    );
    assert.ok(pkg, "a current deploy package");
    const archive = await fetch(new URL(`/admin/v1/nodes/${nodeId}/deploy-packages/${pkg.id}/download`, cp.adminUrl), {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(archive.status, 200);
    const started = await startNodeFromArchive(Buffer.from(await archive.arrayBuffer()), {
      dataDir: join(dir.path, "node"),
      businessPort,
      runtimeDbPath: join(dir.path, "cp", "runtime.db"),
    });
    cleanups.push(started.cleanup);
    node = started.node;
    // A node that is never started: its rotation is issued but never delivered.
    idleNodeId = await createNode("rotate-cli-idle", await freePort());
  });
  after(async () => {
    await node?.stop("SIGTERM");
    await cp?.stop("SIGTERM");
    await Promise.all(cleanups.splice(0).map((c) => c()));
    await dir?.cleanup();
  });

  test("following a rotation of a running node: one line per step up to applied, exit 0, without waiting for the grace", async () => {
    const started = Date.now();
    const r = await cli(["pki", "rotate", nodeId]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.equal(r.stderr, "");
    const lines = r.stdout.trimEnd().split("\n");
    assert.equal(lines.length, 5, r.stdout);
    const [queued, issuing, delivering, delivered, applied] = lines as [string, string, string, string, string];
    const rotationId = /^rotation (rot_\S+) of node (\S+) queued; following (\S+) /.exec(queued)?.[1];
    assert.ok(rotationId, queued);
    assert.ok(queued.includes(`of node ${nodeId} queued; following /admin/v1/nodes/${nodeId}/certs/rotations/${rotationId}`), queued);
    assert.match(
      issuing,
      new RegExp(`^issuing: job job_\\S+ \\(node_cert_rotate\\) issues a new server and a new client certificate for node ${nodeId}$`),
    );
    assert.match(
      delivering,
      /^delivering: issued at \S+Z \(server crt_\S+, client crt_\S+, package pkg_\S+; new SPKI pin [A-Za-z0-9+/]{43}=\); waiting for the node's next config pull$/,
    );
    assert.match(delivered, /^delivered: the node received them at \S+Z; waiting for it to switch and acknowledge$/);
    assert.match(
      applied,
      /^applied: the node serves and presents its new certificates since \S+Z; the old client certificate crt_\S+ is accepted until \S+Z \(600 s after the ack\), then job job_\S+ \(node_cert_retire\) revokes the old certificates$/,
    );
    assert.ok(Date.now() - started < 60_000, "did not wait for the 600 s grace");

    const view = await admin("GET", `/nodes/${nodeId}/certs/rotations/${rotationId}`);
    assert.equal(view.status, "applied");
    assert.ok(applied.includes(view.old_client_cert_id), "names the old client certificate");
    assert.ok(issuing.includes(view.jobs[0].id) && applied.includes(view.jobs[1].id), "names both jobs");

    // The list, as a table (piped: no header) and as JSON.
    const list = await cli(["pki", "rotations", nodeId]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(
      list.stdout,
      new RegExp(`^${rotationId}\\s+applied\\s+manual\\s+\\S+Z\\s+\\S+Z\\s+\\S+Z\\s+-\\s+job_\\S+:succeeded,job_\\S+:pending$`, "m"),
    );
    const listJson = await cli(["pki", "rotations", nodeId, "--json"]);
    assert.equal(listJson.code, 0, listJson.stderr);
    assert.equal(JSON.parse(listJson.stdout).items[0].id, rotationId);
  });

  test("--no-wait --json prints the 202 answer; a second rotate while it is unfinished exits 1 with NODE_ROTATION_IN_PROGRESS", async () => {
    // Stopped, the node cannot apply it: the rotation stays unfinished for the refusal below.
    await node?.stop("SIGTERM");
    node = undefined;
    const r = await cli(["pki", "rotate", nodeId, "--no-wait", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    const answer = JSON.parse(r.stdout) as Obj;
    assert.match(answer.id, /^rot_/);
    assert.equal(answer.node_id, nodeId);
    assert.equal(answer.status, "issuing");
    assert.equal(answer.rotation_url, `/admin/v1/nodes/${nodeId}/certs/rotations/${answer.id}`);
    assert.equal(answer.jobs[0].kind, "node_cert_rotate");

    const again = await cli(["pki", "rotate", nodeId]);
    assert.equal(again.code, 1, again.stdout);
    assert.equal(again.stdout, "");
    assert.match(
      again.stderr,
      new RegExp(
        `^authnexus: NODE_ROTATION_IN_PROGRESS: Rotation ${answer.id} is \\w+; follow it at /admin/v1/nodes/${nodeId}/certs/rotations/${answer.id}\\.\\n$`,
      ),
    );

    const text = await cli(["pki", "rotate", idleNodeId, "--no-wait"]);
    assert.equal(text.code, 0, text.stderr);
    const [line, url] = text.stdout.trimEnd().split("\n");
    assert.match(line ?? "", new RegExp(`^rotation (rot_\\S+) of node ${idleNodeId} queued \\(issuing\\)$`));
    assert.match(url ?? "", new RegExp(`^/admin/v1/nodes/${idleNodeId}/certs/rotations/rot_\\S+$`));
    const idle = await admin("GET", `/nodes/${idleNodeId}/certs/rotations`);
    assert.equal(idle.items.length, 1);
  });

  test("a node that never takes its new certificates: following stops at --timeout with exit 1, saying how to follow the rotation", async () => {
    const other = await createNode("rotate-cli-idle-2", await freePort());
    const started = Date.now();
    const r = await cli(["pki", "rotate", other, "--timeout", "2"]);
    const elapsed = Date.now() - started;
    assert.equal(r.code, 1, r.stdout);
    const lines = r.stdout.trimEnd().split("\n");
    assert.match(lines[0] ?? "", /^rotation rot_\S+ of node \S+ queued; following /);
    assert.match(lines[1] ?? "", /^issuing: job job_\S+ \(node_cert_rotate\)/);
    assert.match(lines[2] ?? "", /^delivering: issued at /);
    assert.equal(lines.length, 3, r.stdout);
    const rotationId = /^rotation (rot_\S+)/.exec(lines[0] ?? "")?.[1];
    assert.match(
      r.stderr,
      new RegExp(
        `^authnexus: rotation ${rotationId} is still delivering after 2 s \\(the node takes its new certificates on its next config pull: is it running and connected to the CP\\?\\); it goes on without this command: follow it with \`authnexus pki rotations ${other}\` or GET /admin/v1/nodes/${other}/certs/rotations/${rotationId}\\n$`,
      ),
    );
    assert.ok(elapsed >= 2000 && elapsed < 20_000, `stopped after ${elapsed} ms`);

    // --json: the last view read on stdout, the reason on stderr.
    const third = await createNode("rotate-cli-idle-3", await freePort());
    const json = await cli(["pki", "rotate", third, "--timeout", "1", "--json"]);
    assert.equal(json.code, 1, json.stdout);
    const view = JSON.parse(json.stdout) as Obj;
    assert.equal(view.node_id, third);
    assert.equal(view.status, "delivering");
    assert.match(json.stderr, new RegExp(`^authnexus: rotation ${view.id} is still delivering after 1 s `));
  });

  test("refusals: an unknown node (NOT_FOUND), a bad --timeout", async () => {
    const unknown = await cli(["pki", "rotate", "nod_unknown"]);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stdout, "");
    assert.match(unknown.stderr, /^authnexus: NOT_FOUND: /);
    const list = await cli(["pki", "rotations", "nod_unknown"]);
    assert.equal(list.code, 1);
    assert.match(list.stderr, /^authnexus: NOT_FOUND: /);
    for (const bad of ["0", "soon", "1.5"]) {
      const r = await cli(["pki", "rotate", idleNodeId, "--timeout", bad]);
      assert.equal(r.code, 1, `--timeout ${bad}`);
      assert.match(r.stderr, /--timeout must be a whole number of seconds, at least 1/);
    }
  });
});
