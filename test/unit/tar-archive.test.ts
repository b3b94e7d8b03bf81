/**
 * The ustar writer against the system `tar` (GNU tar): what `tar -tzv` lists (names, modes,
 * sizes, mtime, directories), what `tar -xz` extracts (identical bytes, modes), names at the
 * 100-character limit and beyond it through the ustar prefix, the empty file, block boundaries,
 * and the inputs the writer must refuse. Then the reader: what the writer wrote and what GNU tar
 * wrote read back identically, and the archives it must refuse.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { createTar, createTarGz, readTar, readTarGz, type TarEntry } from "../../src/cp/packages/tar-archive.js";

const MTIME_MS = Date.UTC(2026, 5, 1, 12, 34, 56, 789);
const LONG_NAME = `${"n".repeat(96)}.pem`; // exactly 100 characters
const DEEP_DIR = `${"d".repeat(60)}/${"e".repeat(60)}`;
const DEEP_FILE = `${DEEP_DIR}/${"f".repeat(90)}.key`; // 216 characters: needs the ustar prefix

const file = (path: string, mode: number, content: Buffer): TarEntry => ({ type: "file", path, mode, content });
const dir = (path: string, mode: number): TarEntry => ({ type: "directory", path, mode });

const ENTRIES: TarEntry[] = [
  file("node_agent.json", 0o644, Buffer.from('{"format":1}\n')),
  dir("tls", 0o755),
  dir("secrets", 0o700),
  file("tls/node_client.key", 0o600, Buffer.from("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")),
  file("secrets/empty", 0o600, Buffer.alloc(0)),
  file("block-exact.bin", 0o644, randomBytes(512)),
  file("block-plus-one.bin", 0o644, randomBytes(513)),
  file("big.bin", 0o644, randomBytes(70_000)),
  file(LONG_NAME, 0o644, Buffer.from("long name\n")),
  dir(DEEP_DIR.split("/")[0] ?? "", 0o755),
  dir(DEEP_DIR, 0o755),
  file(DEEP_FILE, 0o600, Buffer.from("deep\n")),
];

let work: string;
let archivePath: string;

before(() => {
  work = mkdtempSync(join(tmpdir(), "tar-archive-"));
  archivePath = join(work, "package.tar.gz");
  writeFileSync(archivePath, createTarGz(ENTRIES, MTIME_MS));
});

after(() => rmSync(work, { recursive: true, force: true }));

/** Runs GNU tar; any warning on stderr (bad checksum, lone zero block, …) fails the test. */
function tar(args: string[]): { stdout: string } {
  const run = spawnSync("tar", ["--warning=all", ...args], { env: { ...process.env, TZ: "UTC", LC_ALL: "C" }, encoding: "utf8" });
  assert.equal(run.status, 0, `tar ${args.join(" ")} failed: ${run.stderr}`);
  assert.equal(run.stderr, "", `tar ${args.join(" ")} warned`);
  return { stdout: run.stdout };
}

function modeString(entry: TarEntry): string {
  const bits = ["r", "w", "x", "r", "w", "x", "r", "w", "x"].map((c, i) => ((entry.mode >> (8 - i)) & 1 ? c : "-")).join("");
  return (entry.type === "directory" ? "d" : "-") + bits;
}

describe("ustar writer against GNU tar", () => {
  test("tar -tzv lists every entry with its mode, size, owner, mtime and name", () => {
    const lines = tar(["--full-time", "-tzvf", archivePath]).stdout.trim().split("\n");
    assert.equal(lines.length, ENTRIES.length);
    ENTRIES.forEach((entry, i) => {
      const line = lines[i] ?? "";
      // drwxr-xr-x root/root 0 2026-06-01 12:34:56 tls/
      const match = /^(\S{10}) (\S+)\/(\S+)\s+(\d+) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.+)$/.exec(line);
      assert.ok(match, `unexpected listing line: ${line}`);
      const [, mode, user, group, size, time, name] = match;
      assert.equal(mode, modeString(entry), line);
      assert.equal(`${user}/${group}`, "root/root", line);
      assert.equal(Number(size), entry.type === "file" ? entry.content.length : 0, line);
      assert.equal(time, "2026-06-01 12:34:56", "mtime is the given clock time, whole seconds");
      assert.equal(name, entry.type === "directory" ? `${entry.path}/` : entry.path);
    });
  });

  test("tar -xz extracts identical bytes with the same modes, including the empty file and the long names", () => {
    const out = join(work, "extracted");
    mkdirSync(out);
    tar(["-xzf", archivePath, "-C", out]);
    for (const entry of ENTRIES) {
      const path = join(out, entry.path);
      const stat = statSync(path);
      assert.equal(stat.mode & 0o777, entry.mode, `${entry.path} mode`);
      if (entry.type === "directory") {
        assert.ok(stat.isDirectory(), entry.path);
        continue;
      }
      assert.ok(stat.isFile(), entry.path);
      assert.deepEqual(readFileSync(path), entry.content, `${entry.path} bytes`);
      assert.equal(stat.mtimeMs, Math.floor(MTIME_MS / 1000) * 1000, `${entry.path} mtime`);
    }
  });

  test("the archive is whole 512-byte blocks padded to a 10240-byte record, ending in two zero blocks", () => {
    const raw = createTar(ENTRIES, MTIME_MS);
    assert.equal(raw.length % 10240, 0);
    assert.deepEqual(gunzipSync(readFileSync(archivePath)), raw);
    const first = raw.subarray(0, 512);
    assert.equal(first.subarray(257, 263).toString("latin1"), "ustar\0");
    assert.equal(first.subarray(263, 265).toString("latin1"), "00");
    // The checksum field holds the byte sum of the header with the field read as spaces.
    const copy = Buffer.from(first);
    copy.fill(0x20, 148, 156);
    const sum = copy.reduce((a, b) => a + b, 0);
    assert.equal(Number.parseInt(first.subarray(148, 154).toString("latin1"), 8), sum);
  });

  test("the same entries and time give the same bytes (reproducible packages)", () => {
    assert.deepEqual(createTarGz(ENTRIES, MTIME_MS), createTarGz(ENTRIES, MTIME_MS));
    assert.notDeepEqual(createTar(ENTRIES, MTIME_MS), createTar(ENTRIES, MTIME_MS + 1000));
  });

  test("an archive with only an empty file still lists and extracts", () => {
    const path = join(work, "empty-only.tar.gz");
    writeFileSync(path, createTarGz([file("empty.txt", 0o644, Buffer.alloc(0))], MTIME_MS));
    assert.match(tar(["-tzvf", path]).stdout, /^-rw-r--r-- root\/root\s+0 .* empty\.txt\n$/);
  });
});

describe("ustar writer refusals", () => {
  const refused: Array<[string, TarEntry[]]> = [
    ["an absolute path", [file("/etc/passwd", 0o644, Buffer.alloc(1))]],
    ["a parent segment", [file("tls/../../x", 0o644, Buffer.alloc(1))]],
    ["a dot segment", [file("./x", 0o644, Buffer.alloc(1))]],
    ["an empty segment", [file("tls//x", 0o644, Buffer.alloc(1))]],
    ["an empty path", [file("", 0o644, Buffer.alloc(1))]],
    ["a space", [file("a b", 0o644, Buffer.alloc(1))]],
    ["non-ASCII", [file("caf\u00e9", 0o644, Buffer.alloc(1))]],
    ["a duplicate path", [file("x", 0o644, Buffer.alloc(1)), file("x", 0o600, Buffer.alloc(1))]],
    ["a 101-character name without a slash", [file("n".repeat(101), 0o644, Buffer.alloc(1))]],
    ["a last segment over 100 characters", [file(`dir/${"n".repeat(101)}`, 0o644, Buffer.alloc(1))]],
    ["a mode beyond 0o7777", [file("x", 0o10000, Buffer.alloc(1))]],
    ["a fractional mode", [file("x", 0.5, Buffer.alloc(1))]],
  ];
  for (const [label, entries] of refused) {
    test(`refuses ${label}`, () => {
      assert.throws(() => createTar(entries, MTIME_MS), TypeError);
    });
  }
});

describe("ustar reader", () => {
  test("reads back every entry the writer wrote: order, types, paths (with the ustar prefix), modes and bytes", () => {
    assert.deepEqual(readTarGz(createTarGz(ENTRIES, MTIME_MS)), ENTRIES);
  });

  test("reads an archive GNU tar wrote (ustar format) from the extracted files", () => {
    const source = join(work, "gnu-source");
    mkdirSync(join(source, "tls"), { recursive: true });
    writeFileSync(join(source, "node_agent.json"), '{"format":1}\n', { mode: 0o644 });
    writeFileSync(join(source, "tls", "node_client.key"), "key\n", { mode: 0o600 });
    const path = join(work, "gnu.tar");
    tar(["--format=ustar", "--owner=0", "--group=0", "-cf", path, "-C", source, "node_agent.json", "tls"]);
    const entries = readTar(readFileSync(path));
    assert.deepEqual(
      entries.map((e) => [e.type, e.path, e.mode & 0o777, e.type === "file" ? e.content.toString() : null]),
      [
        ["file", "node_agent.json", 0o644, '{"format":1}\n'],
        ["directory", "tls", statSync(join(source, "tls")).mode & 0o777, null],
        ["file", "tls/node_client.key", 0o600, "key\n"],
      ],
    );
  });

  const valid = () => createTar([file("a.txt", 0o644, Buffer.from("hello"))], MTIME_MS);
  /** Rewrites one header field and fixes the checksum, so only the field itself is wrong. */
  const withField = (raw: Buffer, offset: number, value: string): Buffer => {
    const copy = Buffer.from(raw);
    copy.fill(0, offset, offset + value.length + 1);
    copy.write(value, offset, "latin1");
    copy.fill(0x20, 148, 156);
    const sum = copy.subarray(0, 512).reduce((a, b) => a + b, 0);
    copy.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
    return copy;
  };
  const refused: Array<[string, () => Buffer]> = [
    [
      "a bad checksum",
      () => {
        const raw = valid();
        raw[0] = "b".charCodeAt(0);
        return raw;
      },
    ],
    ["a symbolic link", () => withField(valid(), 156, "2")],
    ["a pax extended header", () => withField(valid(), 156, "x")],
    ["an absolute path", () => withField(valid(), 0, "/etc/passwd")],
    ["a path climbing out", () => withField(valid(), 0, "../a.txt")],
    ["a body past the end", () => withField(valid(), 124, "00000777777")],
    ["no ustar magic", () => withField(valid(), 257, "nope!")],
    ["no end-of-archive block", () => valid().subarray(0, 1024)],
    [
      "a duplicate path",
      () => {
        const one = createTar([file("a.txt", 0o644, Buffer.from("1"))], MTIME_MS).subarray(0, 1024);
        return Buffer.concat([one, one, Buffer.alloc(1024)]);
      },
    ],
  ];
  for (const [label, make] of refused) {
    test(`refuses ${label}`, () => {
      assert.throws(() => readTar(make()), TypeError);
    });
  }
});
