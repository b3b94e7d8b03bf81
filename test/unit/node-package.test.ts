/**
 * Loading a deploy package: a good one loads with every file resolved relative to
 * node_agent.json (wherever the package was unpacked); a bad one is refused before anything
 * connects, with every problem listed at once and each naming its file — and no key material
 * in the message.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { loadAgentPackage } from "../../src/node/package/load-agent-package.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { systemClock } from "../../src/shared/time/index.js";
import { mintNodePki, type NodePki, type PackageOverrides, type WrittenPackage, writeAgentPackage } from "../helpers/node-agent.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const NODE_ID = "nod_pkgtest";
let pki: NodePki;
let otherPki: NodePki;
const written: WrittenPackage[] = [];

async function write(overrides: PackageOverrides = {}, nodeId = NODE_ID): Promise<WrittenPackage> {
  const pkg = await writeAgentPackage(pki, nodeId, overrides);
  written.push(pkg);
  return pkg;
}

/** Loads and expects CONFIG_INVALID; returns the message. */
async function refusal(agentFile: string): Promise<string> {
  try {
    await loadAgentPackage(agentFile, systemClock);
  } catch (error) {
    assert.ok(isAuthNexusError(error, "CONFIG_INVALID"), `expected CONFIG_INVALID, got ${String(error)}`);
    return error.message;
  }
  assert.fail("the package was accepted");
}

before(async () => {
  pki = await mintNodePki(NODE_ID, systemClock);
  otherPki = await mintNodePki("nod_other", systemClock);
});
after(async () => {
  await Promise.all(written.map((w) => w.dir.cleanup()));
});

describe("loadAgentPackage", () => {
  test("loads a good package, every path relative to the JSON's directory", async () => {
    const pkg = await write();
    // Run from elsewhere: the package must not depend on the working directory.
    const elsewhere = await makeTempDir("authnexus-cwd");
    const cwd = process.cwd();
    process.chdir(elsewhere.path);
    try {
      const loaded = await loadAgentPackage(path.relative(elsewhere.path, pkg.agentFile), systemClock);
      assert.equal(loaded.manifest.node_id, NODE_ID);
      assert.equal(loaded.directory, pkg.dir.path);
      assert.equal(loaded.client.info.sans.uri[0], `urn:authnexus:node:${NODE_ID}`);
      assert.equal(loaded.server.info.mustStaple, true);
      assert.equal(loaded.serverIssuer.info.isCa, true);
      assert.equal(loaded.serverIssuer.der.length > 100, true);
      assert.equal(loaded.passwordHashKey.length, 32);
      assert.equal(loaded.appClientCaPems.length, 1);
      assert.deepEqual(loaded.warnings, []);
    } finally {
      process.chdir(cwd);
      await elsewhere.cleanup();
    }
  });

  test("a missing agent file, or one that is not JSON, is named", async () => {
    assert.match(await refusal("/nonexistent/node_agent.json"), /cannot read the agent file \/nonexistent\/node_agent.json: ENOENT/);
    const pkg = await write();
    await fs.writeFile(pkg.agentFile, "{ not json");
    assert.match(await refusal(pkg.agentFile), /is not valid JSON/);
  });

  test("a manifest outside the contract lists each bad field", async () => {
    const pkg = await write();
    const manifest = JSON.parse(await fs.readFile(pkg.agentFile, "utf8"));
    manifest.cp_url = "http://cp.example:9091";
    manifest.files.client_key = "../../etc/shadow";
    manifest.extra = true;
    await fs.writeFile(pkg.agentFile, JSON.stringify(manifest));
    const message = await refusal(pkg.agentFile);
    assert.match(message, /cp_url/);
    assert.match(message, /files\.client_key: must be a path inside the package/);
    assert.match(message, /extra/);
  });

  test("missing files are each named with their absolute path", async () => {
    const pkg = await write({ omit: ["client_key", "server_issuer"] });
    const message = await refusal(pkg.agentFile);
    assert.match(
      message,
      new RegExp(`files\\.client_key: cannot read ${pkg.file("client_key").replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: ENOENT`),
    );
    assert.match(message, /files\.server_issuer: cannot read .*ENOENT/);
  });

  test("the client certificate must name this node", async () => {
    const pkg = await write({}, "nod_someone_else");
    const message = await refusal(pkg.agentFile);
    assert.match(
      message,
      /files\.client_cert .*URI SAN must be exactly urn:authnexus:node:nod_someone_else .*found urn:authnexus:node:nod_pkgtest/,
    );
  });

  test("keys must match their certificates; the message never quotes the key", async () => {
    const wrongKey = otherPki.client.keyPem ?? "";
    const pkg = await write({ files: { client_key: wrongKey, server_key: "not a key at all" } });
    const message = await refusal(pkg.agentFile);
    assert.match(message, /files\.client_key .*private key does not match files\.client_cert/);
    assert.match(message, /files\.server_key .*not a readable PEM private key/);
    assert.doesNotMatch(message, /PRIVATE KEY/);
    assert.equal(message.includes(wrongKey.split("\n")[1] ?? "x"), false);
  });

  test("the business certificate must come from the package's tcp_server_ca; CA bundles must hold CA certificates", async () => {
    const pkg = await write({
      files: { server_issuer: otherPki.cas.tcp_server_ca.certPem, cp_ca: pki.client.certPem, app_client_ca: "garbage" },
    });
    const message = await refusal(pkg.agentFile);
    assert.match(message, /files\.server_cert .*(UNTRUSTED_ISSUER|BAD_SIGNATURE).*checked against files\.server_issuer/);
    assert.match(message, /files\.cp_ca .*certificate #1 is not a CA certificate/);
    assert.match(message, /files\.app_client_ca .*no PEM certificate found/);
  });

  test("the password-hash key must be hex of a real key length", async () => {
    const short = await write({ files: { password_hash_key: "abcd\n" } });
    assert.match(await refusal(short.agentFile), /files\.password_hash_key .*2 bytes, at least 16/);
    const notHex = await write({ files: { password_hash_key: "zz-not-hex" } });
    assert.match(await refusal(notHex.agentFile), /files\.password_hash_key .*must be the key in hex/);
  });

  test("secrets readable by other users load with a warning", async () => {
    const pkg = await write();
    await fs.chmod(pkg.file("client_key"), 0o644);
    const loaded = await loadAgentPackage(pkg.agentFile, systemClock);
    assert.equal(loaded.warnings.length, 1);
    assert.match(loaded.warnings[0] ?? "", /files\.client_key .*mode 644.*chmod 600/);
  });
});
