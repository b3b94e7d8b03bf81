/**
 * The development deployment in process (src/cli/dev/deployment.ts), for the paths the e2e test
 * cannot reach through the CLI: a port taken between the up-front check and the real bind (each
 * of the five listeners in turn, with the check switched off) must end the start with the same
 * one-line error, after stopping everything that had started; a start aborted half-way (the
 * signal handler's path) stops what it started. Every case reuses one folder, which must still
 * start cleanly at the end.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startDevDeployment } from "../../src/cli/dev/deployment.js";
import { DevError, DevInterrupted } from "../../src/cli/dev/errors.js";
import { DEV_PORT_SPECS, type DevPortName, type DevPorts } from "../../src/cli/dev/ports.js";
import { canConnect, freePort } from "../helpers/authnexus-process.js";
import { makeTempDir, type TempDir } from "../helpers/temp-dir.js";

async function occupy(port: number): Promise<net.Server> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return server;
}

describe("development deployment in process", () => {
  let work: TempDir;
  let dir = "";
  const ports = {} as DevPorts;
  const start = (options: { signal?: AbortSignal; progress?: (line: string) => void } = {}) =>
    startDevDeployment({
      dir,
      ports,
      verbose: false,
      checkPorts: false,
      signal: options.signal ?? new AbortController().signal,
      progress: options.progress ?? (() => {}),
    });
  const assertAllClosed = async (except?: DevPortName) => {
    for (const spec of DEV_PORT_SPECS) {
      if (spec.name === except) continue;
      assert.equal(await canConnect(ports[spec.name]), false, `${spec.what} (${ports[spec.name]}) is not left bound`);
    }
    assert.equal(existsSync(join(dir, "dev.pid")), false, "the folder's lock is released");
  };

  before(async () => {
    work = await makeTempDir("authnexus-dev-deployment");
    dir = join(work.path, "dev");
    for (const spec of DEV_PORT_SPECS) ports[spec.name] = await freePort();
  });

  after(() => work.cleanup());

  // In the order the listeners are bound, so each case gets as far as its own listener.
  for (const name of ["admin", "cp", "ocsp", "health", "business"] as const) {
    test(`a taken ${name} port found by its listener: the port's error, nothing left running`, async () => {
      const spec = DEV_PORT_SPECS.find((s) => s.name === name);
      assert.ok(spec);
      const blocker = await occupy(ports[name]);
      try {
        await assert.rejects(start(), (error: Error) => {
          assert.ok(error instanceof DevError, `${error.name}: ${error.message}`);
          assert.equal(
            error.message,
            `port ${ports[name]} on 127.0.0.1 is already in use (${spec.what}): choose another with --${spec.flag} <port>, or 0 for a free one`,
          );
          return true;
        });
      } finally {
        await new Promise((resolve) => blocker.close(resolve));
      }
      await assertAllClosed(name);
    });
  }

  test("a start aborted while it provisions stops what it started", async () => {
    const abort = new AbortController();
    // The folder is provisioned by now: abort as the node starts, the last step.
    const progress = (line: string) => {
      if (line.startsWith("starting the node")) abort.abort();
    };
    await assert.rejects(start({ signal: abort.signal, progress }), DevInterrupted);
    await assertAllClosed();
  });

  test("after all that, the folder starts cleanly and stops", async () => {
    const deployment = await start();
    try {
      assert.deepEqual(deployment.summary.warnings, []);
      assert.equal(deployment.node.businessAddress()?.port, ports.business);
      assert.equal(await canConnect(ports.admin), true);
    } finally {
      await deployment.stop();
    }
    await assertAllClosed();
  });
});
