/**
 * The SDK ↔ node binary protocol codec (src/shared/protocol, docs/protocol.md). Checked: every
 * message encodes to a frozen golden frame, byte for byte, and decodes back to its body (the
 * same frames are the byte-level examples of docs/protocol.md); the frame splitter gives the
 * same frames however the stream is cut. Attacked: a length header that announces more than the
 * maximum (refused before anything is buffered), a length too short for the header, a wrong
 * version, reserved flags, payloads that are truncated, padded, over a limit, not UTF-8, or hold
 * a byte outside a bool, a oneOf or an optional's presence; values nested too deep, counts and
 * lengths far beyond the bytes left (refused before looping or allocating), non-finite numbers,
 * duplicate keys and `__proto__`. Finally 40,000 seeded random and mutated streams: the only thing
 * the decoder ever throws is a PROTOCOL_ERROR, FRAME_TOO_LARGE or PROTOCOL_VERSION_UNSUPPORTED,
 * and it never holds more than one maximum frame.
 */
import assert, { AssertionError } from "node:assert/strict";
import { describe, it } from "node:test";
import { AuthNexusError, ERROR_CATALOGUE, type ErrorCode, errorCodeForWire, isAuthNexusError } from "../../src/shared/errors/index.js";
import {
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_VALUE_LIMITS,
  type Decoded,
  decodeMessage,
  encodeFrame,
  encodeMessage,
  encodePayload,
  type Frame,
  FrameDecoder,
  HEADER_BYTES,
  isRequestType,
  LENGTH_BYTES,
  LIMITS,
  LOGIN_METHODS,
  MESSAGES,
  type Message,
  type MessageName,
  messageNameOf,
  NO_REQUEST,
  PROTOCOL_VERSION,
  PUSH_KINDS,
  PUSH_LEVELS,
  Reader,
  readValue,
  type Value,
  type ValueLimits,
  Writer,
  writeValue,
} from "../../src/shared/protocol/index.js";

// ---- helpers ---------------------------------------------------------------------------------

/** Bytes from hex written with whitespace between fields (as the golden frames are). */
function hex(text: string): Buffer {
  const digits = text.replace(/\s+/g, "");
  assert.match(digits, /^(?:[0-9a-f]{2})*$/, `not a hex literal: ${text}`);
  return Buffer.from(digits, "hex");
}

/** Concatenates hex literals and buffers. */
function cat(...parts: Array<Buffer | string>): Buffer {
  return Buffer.concat(parts.map((part) => (typeof part === "string" ? hex(part) : part)));
}

function be16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function be32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** A u16-length-prefixed string or byte string, built here rather than by the codec. */
function s16(content: string | Buffer): Buffer {
  const b = typeof content === "string" ? Buffer.from(content, "utf8") : content;
  return Buffer.concat([be16(b.length), b]);
}

/** A map as the decoder builds it: an object without a prototype. */
function map(entries: { [key: string]: Value }): { [key: string]: Value } {
  const out = Object.create(null) as { [key: string]: Value };
  for (const [key, item] of Object.entries(entries)) out[key] = item;
  return out;
}

/** `value` with every map rebuilt without a prototype, to compare with what the decoder returns. */
function asDecoded(value: Value): Value {
  if (Array.isArray(value)) return value.map(asDecoded);
  if (value !== null && typeof value === "object") {
    const out = Object.create(null) as { [key: string]: Value };
    for (const [key, item] of Object.entries(value)) out[key] = asDecoded(item);
    return out;
  }
  return value;
}

/** A frame as the FrameDecoder yields it. */
function frameOf(type: number, payload: Buffer | string, header: { version?: number; flags?: number; requestId?: number } = {}): Frame {
  return {
    version: header.version ?? PROTOCOL_VERSION,
    type,
    flags: header.flags ?? 0,
    requestId: header.requestId ?? 1,
    payload: typeof payload === "string" ? hex(payload) : payload,
  };
}

/** The body of `frame`, which must decode as message `name`. */
function bodyOf<N extends MessageName>(name: N, frame: Frame): Message<N> {
  const decoded = decodeMessage(frame);
  assert.ok(decoded !== null && decoded.name === name, `expected ${name}, got ${decoded?.name}`);
  return decoded.body as Message<N>;
}

function throwsCode(fn: () => unknown, code: ErrorCode, message?: string): void {
  assert.throws(fn, (error: unknown) => isAuthNexusError(error, code), message);
}

function encodeValue(value: Value, limits?: ValueLimits): Buffer {
  const w = new Writer();
  writeValue(w, value, limits);
  return Buffer.from(w.finish());
}

function decodeValue(bytes: Buffer, limits?: ValueLimits): Value {
  const r = new Reader(bytes);
  const value = readValue(r, limits);
  r.end("value");
  return value;
}

/** Counts the tag bytes read, i.e. how many values readValue started. */
class CountingReader extends Reader {
  tags = 0;
  override u8(what: string): number {
    this.tags++;
    return super.u8(what);
  }
}

/** A decoded message encoded again (any message, whatever its name). */
const reencode = encodeMessage as (name: MessageName, requestId: number, body: unknown) => Buffer;

/** Mulberry32: a small seeded PRNG, so every run sees the same "random" inputs. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const int = (rand: () => number, below: number) => Math.floor(rand() * below);

function randomBytes(rand: () => number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = int(rand, 256);
  return b;
}

/** Cuts `bytes` into chunks of 1..maxChunk bytes, with an occasional empty chunk. */
function split(bytes: Buffer, rand: () => number, maxChunk: number): Buffer[] {
  const chunks: Buffer[] = [];
  let at = 0;
  while (at < bytes.length) {
    const n = rand() < 0.03 ? 0 : 1 + int(rand, maxChunk);
    chunks.push(bytes.subarray(at, at + n));
    at += n;
  }
  return chunks;
}

// ---- golden frames ---------------------------------------------------------------------------

interface Golden {
  name: MessageName;
  requestId: number;
  body: unknown;
  /** The whole frame, fields separated by spaces. */
  frame: string;
  encode(): Buffer;
}

function golden<N extends MessageName>(name: N, requestId: number, body: Message<N>, frame: string): Golden {
  return { name, requestId, body, frame, encode: () => encodeMessage(name, requestId, body) };
}

const TOKEN = Buffer.from(Array.from({ length: 32 }, (_, i) => i));

/**
 * One example of every message, its bytes worked out by hand from the layout and frozen.
 * docs/protocol.md ("Byte-level examples") shows exactly these frames.
 */
const GOLDEN: Golden[] = [
  golden(
    "hello",
    1,
    { app_id: "app_7f3a", app_secret: "s3cr3t", device_id: "dev-01", sdk_version: "1.0.0" },
    "00000029 01 01 0000 00000001  0008 6170705f37663361  0006 733363723374  0006 6465762d3031  0005 312e302e30",
  ),
  golden(
    "register",
    2,
    { username: "zoë", password: "hunter2", email: "zoe@example.com", invite_code: null },
    "0000002a 01 02 0000 00000002  0004 7a6fc3ab  0007 68756e74657232  01 000f 7a6f65406578616d706c652e636f6d  00",
  ),
  golden("login_password", 3, { username: "李雷", password: "pw" }, "00000014 01 03 0000 00000003  0006 e69d8ee99bb7  0002 7077"),
  golden("login_card", 4, { card_key: "CARD-0001" }, "00000013 01 04 0000 00000004  0009 434152442d30303031"),
  golden(
    "login_token",
    5,
    { token: TOKEN },
    "0000002a 01 05 0000 00000005  0020 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
  ),
  golden("heartbeat", 300, {}, "00000008 01 06 0000 0000012c"),
  golden("logout", 301, {}, "00000008 01 07 0000 0000012d"),
  golden(
    "hello_ok",
    1,
    { node_id: "nod_01", server_time: 1_735_689_600_000, heartbeat_interval_ms: 30_000, idle_timeout_ms: 90_000, max_frame_bytes: 65_536 },
    "00000024 01 81 0000 00000001  0006 6e6f645f3031  000001941f297c00  00007530  00015f90  00010000",
  ),
  golden(
    "auth_ok",
    4,
    {
      method: "card",
      token: TOKEN,
      session_expires_at: 1_735_776_000_000,
      user_id: "usr_42",
      username: null,
      card_expires_at: 1_738_368_000_000,
    },
    "00000046 01 82 0000 00000004  01  0020 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f  " +
      "00000194244fd800  01 0006 7573725f3432  00  01 00000194becea000",
  ),
  golden("heartbeat_ack", 300, { server_time: 1_735_689_630_000 }, "00000010 01 83 0000 0000012c  000001941f29f130"),
  golden("ok", 301, {}, "00000008 01 84 0000 0000012d"),
  golden(
    "call_function",
    6,
    { name: "greet", params: map({ name: "ada" }) },
    "00000022 01 08 0000 00000006  0005 6772656574  06 00000001 0004 6e616d65 04 00000003 616461",
  ),
  golden("function_result", 6, { value: "hello ada" }, "00000016 01 85 0000 00000006  04 00000009 68656c6c6f20616461"),
  golden("get_variables", 7, { name: null }, "00000009 01 09 0000 00000007  00"),
  golden("variables", 7, { values: map({ motd: "hi" }) }, "0000001a 01 86 0000 00000007  06 00000001 0004 6d6f7464 04 00000002 6869"),
  golden("get_user_variables", 8, { key: "theme" }, "00000010 01 0a 0000 00000008  01 0005 7468656d65"),
  golden("set_user_variable", 9, { key: "theme", value: "dark" }, "00000016 01 0b 0000 00000009  0005 7468656d65  01 0004 6461726b"),
  golden(
    "error",
    3,
    { code: 6101, retryable: false, message: "Login failed." },
    "0000001a 01 e0 0000 00000003  17d5  00  000d 4c6f67696e206661696c65642e",
  ),
  golden(
    "push",
    NO_REQUEST,
    {
      kind: "announcement",
      level: "warning",
      message: "Maintenance at 02:00 🔧",
      reason: null,
      data: map({ window: [2, 4], minutes: 30, title: "Update", urgent: true, link: null }),
    },
    "0000007e 01 f0 0000 00000000  00  01  0019 4d61696e74656e616e63652061742030323a303020f09f94a7  00 " +
      "06 00000005 " +
      "0006 77696e646f77 05 00000002 03 4000000000000000 03 4010000000000000 " +
      "0007 6d696e75746573 03 403e000000000000 " +
      "0005 7469746c65 04 00000006 557064617465 " +
      "0006 757267656e74 02 " +
      "0004 6c696e6b 00",
  ),
];

describe("golden frames", () => {
  it("cover every message of the catalogue, once", () => {
    assert.deepEqual(GOLDEN.map((g) => g.name).sort(), (Object.keys(MESSAGES) as MessageName[]).sort());
  });

  it("the documented constants and type bytes", () => {
    assert.equal(PROTOCOL_VERSION, 1);
    assert.equal(LENGTH_BYTES, 4);
    assert.equal(HEADER_BYTES, 8);
    assert.equal(DEFAULT_MAX_FRAME_BYTES, 65_536);
    assert.equal(NO_REQUEST, 0);
    const types = Object.fromEntries((Object.keys(MESSAGES) as MessageName[]).map((name) => [name, MESSAGES[name].type]));
    assert.deepEqual(types, {
      hello: 0x01,
      register: 0x02,
      login_password: 0x03,
      login_card: 0x04,
      login_token: 0x05,
      heartbeat: 0x06,
      logout: 0x07,
      call_function: 0x08,
      get_variables: 0x09,
      get_user_variables: 0x0a,
      set_user_variable: 0x0b,
      hello_ok: 0x81,
      auth_ok: 0x82,
      heartbeat_ack: 0x83,
      ok: 0x84,
      function_result: 0x85,
      variables: 0x86,
      error: 0xe0,
      push: 0xf0,
    });
    for (const [name, type] of Object.entries(types)) {
      assert.equal(messageNameOf(type), name);
      assert.equal(isRequestType(type), type < 0x80, name);
    }
    assert.deepEqual(LOGIN_METHODS, ["password", "card", "token", "register"]);
    assert.deepEqual(PUSH_KINDS, ["announcement", "force_logout", "kill_process"]);
    assert.deepEqual(PUSH_LEVELS, ["info", "warning", "critical"]);
  });

  it("the documented field and value limits", () => {
    assert.deepEqual(LIMITS, {
      appId: 64,
      appSecret: 256,
      deviceId: 128,
      sdkVersion: 64,
      username: 64,
      password: 256,
      email: 254,
      inviteCode: 64,
      cardKey: 128,
      token: 32,
      nodeId: 64,
      message: 4096,
      reason: 500,
      errorMessage: 1024,
      functionName: 64,
      variableName: 64,
      userVariableValue: 65_536,
    });
    assert.deepEqual(DEFAULT_VALUE_LIMITS, { maxDepth: 16, maxItems: 4096, maxStringBytes: 65_536 });
  });

  for (const g of GOLDEN) {
    it(`${g.name}: encodes to exactly its golden bytes and decodes back to its body`, () => {
      const expected = hex(g.frame);
      const encoded = g.encode();
      assert.equal(encoded.toString("hex"), expected.toString("hex"));
      assert.equal(encoded.readUInt32BE(0), encoded.length - LENGTH_BYTES, "the length counts everything after itself");
      assert.equal(encoded[5], MESSAGES[g.name].type);

      const frames = new FrameDecoder().push(expected);
      assert.equal(frames.length, 1);
      const frame = frames[0] as Frame;
      assert.deepEqual(
        { version: frame.version, type: frame.type, flags: frame.flags, requestId: frame.requestId },
        { version: 1, type: MESSAGES[g.name].type, flags: 0, requestId: g.requestId },
      );
      assert.deepEqual(decodeMessage(frame), { name: g.name, requestId: g.requestId, body: g.body });
      assert.equal(
        (encodePayload as (name: MessageName, body: unknown) => Buffer)(g.name, g.body).toString("hex"),
        expected.subarray(LENGTH_BYTES + HEADER_BYTES).toString("hex"),
      );
    });
  }

  it("the error frame's code is the catalogue's wire status", () => {
    assert.equal(errorCodeForWire(bodyOf("error", frameOf(0xe0, "17d5 00 0000")).code), "LOGIN_FAILED");
    assert.equal(ERROR_CATALOGUE.LOGIN_FAILED.wire, 6101);
  });

  it("the wire statuses and retryable flags docs/protocol.md lists", () => {
    const documented: Array<[ErrorCode, number, boolean]> = [
      ["LOGIN_THROTTLED", 2104, false],
      ["PROTOCOL_ERROR", 1010, false],
      ["FRAME_TOO_LARGE", 1011, false],
      ["PROTOCOL_VERSION_UNSUPPORTED", 1012, false],
      ["MESSAGE_UNSUPPORTED", 1013, false],
      ["HANDSHAKE_REQUIRED", 6001, false],
      ["HANDSHAKE_TIMEOUT", 6002, false],
      ["APP_CREDENTIALS_INVALID", 6003, false],
      ["APP_DISABLED", 6004, false],
      ["CLIENT_CERT_REFUSED", 6005, false],
      ["CONNECTION_LIMIT", 6006, true],
      ["IDLE_TIMEOUT", 6007, false],
      ["ACCESS_DENIED", 6008, false],
      ["SECURITY_STATE_UNAVAILABLE", 6009, true],
      ["LOGIN_FAILED", 6101, false],
      ["REGISTRATION_DISABLED", 6102, false],
      ["USERNAME_TAKEN", 6103, false],
      ["INVITE_CODE_INVALID", 6104, false],
      ["LOGIN_METHOD_DISABLED", 6105, false],
      ["NOT_LOGGED_IN", 6106, false],
      ["SESSION_ENDED", 6107, false],
      ["DEVICE_LIMIT_REACHED", 6108, false],
      ["INTERNAL", 9000, false],
      ["DB_UNAVAILABLE", 9001, true],
    ];
    for (const [code, wire, retryable] of documented) {
      assert.equal(ERROR_CATALOGUE[code].wire, wire, code);
      assert.equal(ERROR_CATALOGUE[code].retryable, retryable, code);
    }
  });
});

// ---- FrameDecoder ----------------------------------------------------------------------------

function snapshot(frame: Frame) {
  return {
    version: frame.version,
    type: frame.type,
    flags: frame.flags,
    requestId: frame.requestId,
    payload: frame.payload.toString("hex"),
  };
}

describe("FrameDecoder", () => {
  const stream = Buffer.concat(GOLDEN.map((g) => hex(g.frame)));
  const expected = GOLDEN.map((g) => snapshot((new FrameDecoder().push(hex(g.frame)) as [Frame])[0]));

  it("yields every frame of a stream in order, fed in one piece", () => {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(stream).map(snapshot), expected);
    assert.equal(decoder.buffered, 0);
  });

  it("yields the same frames fed one byte at a time", () => {
    const decoder = new FrameDecoder();
    const got: ReturnType<typeof snapshot>[] = [];
    for (let i = 0; i < stream.length; i++) {
      for (const frame of decoder.push(stream.subarray(i, i + 1))) got.push(snapshot(frame));
      assert.ok(decoder.buffered < DEFAULT_MAX_FRAME_BYTES);
    }
    assert.deepEqual(got, expected);
    assert.equal(decoder.buffered, 0);
  });

  it("yields the same frames for 300 random ways of cutting the stream", () => {
    const rand = prng(0x5eed_0001);
    for (let round = 0; round < 300; round++) {
      const decoder = new FrameDecoder();
      const got: ReturnType<typeof snapshot>[] = [];
      const chunks = split(stream, rand, 1 + int(rand, 200));
      for (const chunk of chunks) for (const frame of decoder.push(chunk)) got.push(snapshot(frame));
      assert.deepEqual(got, expected, `round ${round}: ${chunks.map((c) => c.length).join(",")}`);
      assert.equal(decoder.buffered, 0);
    }
  });

  it("holds back a frame until its last byte and keeps only the unfinished tail", () => {
    const decoder = new FrameDecoder();
    const hello = hex((GOLDEN[0] as Golden).frame);
    assert.deepEqual(decoder.push(hello.subarray(0, hello.length - 1)), []);
    assert.equal(decoder.buffered, hello.length - 1);
    const frames = decoder.push(Buffer.concat([hello.subarray(hello.length - 1), hello.subarray(0, 7)]));
    assert.equal(frames.length, 1);
    assert.equal(decoder.buffered, 7);
  });

  it("refuses a length over the maximum with FRAME_TOO_LARGE as soon as the 4 length bytes are in", () => {
    const decoder = new FrameDecoder();
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(decoder.push(Buffer.from([0xff])), []);
      assert.equal(decoder.buffered, i + 1);
    }
    throwsCode(() => decoder.push(Buffer.from([0xff])), "FRAME_TOO_LARGE");
    assert.ok(decoder.buffered <= 3, "nothing of the frame was buffered");

    // max + 1 alone: refused at once.
    const overBy1 = be32(DEFAULT_MAX_FRAME_BYTES - LENGTH_BYTES + 1);
    throwsCode(() => new FrameDecoder().push(overBy1), "FRAME_TOO_LARGE");
    // After a good frame in the same chunk: the good frame comes out, the error waits in
    // takeError() and every later push throws it; nothing after the bad length is read.
    const after = new FrameDecoder();
    const frames = after.push(Buffer.concat([hex("00000008 01 06 0000 00000001"), overBy1, hex("01 06 0000")]));
    assert.deepEqual(
      frames.map((f) => [f.type, f.requestId]),
      [[0x06, 1]],
    );
    assert.equal(after.takeError()?.code, "FRAME_TOO_LARGE");
    assert.equal(after.buffered, 0);
    throwsCode(() => after.push(hex("00000008 01 06 0000 00000002")), "FRAME_TOO_LARGE");
    // Exactly the maximum is only waited for.
    const atMax = new FrameDecoder();
    assert.deepEqual(atMax.push(be32(DEFAULT_MAX_FRAME_BYTES - LENGTH_BYTES)), []);
    assert.equal(atMax.buffered, 4);

    // A smaller configured maximum is enforced the same way.
    throwsCode(() => new FrameDecoder(1024).push(be32(1021)), "FRAME_TOO_LARGE");
    assert.deepEqual(new FrameDecoder(1024).push(be32(1020)), []);
  });

  it("refuses a length shorter than the 8-byte header with PROTOCOL_ERROR", () => {
    for (let length = 0; length < HEADER_BYTES; length++) {
      throwsCode(() => new FrameDecoder().push(be32(length)), "PROTOCOL_ERROR", `length ${length}`);
    }
    assert.equal(new FrameDecoder().push(be32(HEADER_BYTES)).length, 0, "length 8 waits for the header");
  });

  it("accepts a frame of exactly the maximum size and never buffers more than one", () => {
    // push: kind, level, message "", no reason, a string value: 12 + 10 + n bytes.
    const body = {
      kind: "announcement",
      level: "info",
      message: "",
      reason: null,
      data: "x".repeat(DEFAULT_MAX_FRAME_BYTES - 22),
    } as const;
    const frame = encodeMessage("push", NO_REQUEST, body);
    assert.equal(frame.length, DEFAULT_MAX_FRAME_BYTES);
    assert.throws(() => encodeMessage("push", NO_REQUEST, { ...body, data: `${body.data}x` }), RangeError);

    const rand = prng(0x5eed_0002);
    const decoder = new FrameDecoder();
    const twice = Buffer.concat([frame, frame]);
    const got: Frame[] = [];
    for (const chunk of split(twice, rand, 4000)) {
      for (const f of decoder.push(chunk)) got.push({ ...f, payload: Buffer.from(f.payload) });
      assert.ok(decoder.buffered < DEFAULT_MAX_FRAME_BYTES, `buffered ${decoder.buffered}`);
    }
    assert.equal(got.length, 2);
    for (const f of got) assert.deepEqual(decodeMessage(f), { name: "push", requestId: 0, body });

    const small = new FrameDecoder(64);
    assert.equal(small.push(encodeFrame(0x06, 1, Buffer.alloc(52), 64)).length, 1);
    throwsCode(() => small.push(encodeFrame(0x06, 1, Buffer.alloc(53), 65)), "FRAME_TOO_LARGE");
  });
});

// ---- wire primitives -------------------------------------------------------------------------

describe("Reader", () => {
  it("never reads past the end of its buffer, whatever the primitive", () => {
    const source = hex("00 11 22 33 44 55 66 77 88");
    const reads: Array<[string, (r: Reader) => unknown, number]> = [
      ["u8", (r) => r.u8("x"), 1],
      ["u16", (r) => r.u16("x"), 2],
      ["u32", (r) => r.u32("x"), 4],
      ["uint53", (r) => r.uint53("x"), 8],
      ["f64", (r) => r.f64("x"), 8],
      ["bool", (r) => r.bool("x"), 1],
    ];
    for (const [name, read, size] of reads) {
      // From a view into a larger buffer, so a read past the view would still find bytes.
      const r = new Reader(source.subarray(1, size));
      throwsCode(() => read(r), "PROTOCOL_ERROR", name);
      const exact = new Reader(hex("00 00 00 00 00 00 00 01").subarray(8 - size));
      read(exact);
      assert.equal(exact.remaining, 0, name);
    }
    throwsCode(() => new Reader(hex("0003 6162")).str("x", 10), "PROTOCOL_ERROR");
    throwsCode(() => new Reader(hex("0003 6162")).bytes("x", 10), "PROTOCOL_ERROR");
    throwsCode(() => new Reader(hex("6162")).utf8(3, "x"), "PROTOCOL_ERROR");
    assert.equal(new Reader(hex("ff ee dd cc")).u32("x"), 0xffeeddcc);
    assert.equal(new Reader(hex("bff8000000000000")).f64("x"), -1.5);
  });
});

// ---- decodeMessage ---------------------------------------------------------------------------

describe("decodeMessage", () => {
  const KNOWN = new Set<number>((Object.keys(MESSAGES) as MessageName[]).map((name) => MESSAGES[name].type));

  it("refuses any version but 1 with PROTOCOL_VERSION_UNSUPPORTED, before looking at the type", () => {
    for (const version of [0, 2, 0x7f, 0xff]) {
      throwsCode(() => decodeMessage(frameOf(0x06, "", { version })), "PROTOCOL_VERSION_UNSUPPORTED", `version ${version}`);
      throwsCode(() => decodeMessage(frameOf(0x55, "", { version })), "PROTOCOL_VERSION_UNSUPPORTED", `version ${version}, unknown type`);
    }
    const wrong = hex((GOLDEN[0] as Golden).frame);
    wrong[4] = 2;
    throwsCode(() => decodeMessage((new FrameDecoder().push(wrong) as [Frame])[0]), "PROTOCOL_VERSION_UNSUPPORTED");
  });

  it("refuses non-zero flags with PROTOCOL_ERROR", () => {
    for (const flags of [1, 0x0100, 0x8000, 0xffff]) {
      throwsCode(() => decodeMessage(frameOf(0x06, "", { flags })), "PROTOCOL_ERROR", `flags ${flags}`);
    }
  });

  it("returns null for every type byte outside the catalogue, whatever the payload", () => {
    for (let type = 0; type < 256; type++) {
      if (KNOWN.has(type)) continue;
      assert.equal(decodeMessage(frameOf(type, "")), null, `type ${type}`);
      assert.equal(decodeMessage(frameOf(type, "ff ff ff")), null, `type ${type}`);
      assert.equal(messageNameOf(type), undefined);
    }
  });

  it("echoes the request id, all 32 bits of it", () => {
    for (const requestId of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff]) {
      const frame = encodeMessage("heartbeat", requestId, {});
      assert.equal(frame.readUInt32BE(8), requestId);
      assert.equal(decodeMessage((new FrameDecoder().push(frame) as [Frame])[0])?.requestId, requestId);
    }
  });

  it("refuses every truncation of every golden payload", () => {
    for (const g of GOLDEN) {
      const payload = hex(g.frame).subarray(LENGTH_BYTES + HEADER_BYTES);
      for (let cut = 0; cut < payload.length; cut++) {
        throwsCode(
          () => decodeMessage(frameOf(MESSAGES[g.name].type, payload.subarray(0, cut))),
          "PROTOCOL_ERROR",
          `${g.name} cut at ${cut}`,
        );
      }
    }
  });

  it("refuses trailing bytes after every golden payload", () => {
    for (const g of GOLDEN) {
      const payload = hex(g.frame).subarray(LENGTH_BYTES + HEADER_BYTES);
      for (const extra of ["00", "01", "ffffffff"]) {
        throwsCode(() => decodeMessage(frameOf(MESSAGES[g.name].type, cat(payload, extra))), "PROTOCOL_ERROR", `${g.name} + ${extra}`);
      }
    }
  });

  /** Each limited field: the payload with that field holding `content`, the others short and valid. */
  const limited: Array<{ field: string; type: number; limit: number; payload: (content: Buffer) => Buffer }> = [
    { field: "hello.app_id", type: 0x01, limit: 64, payload: (c) => cat(s16(c), s16("s"), s16("d"), s16("1")) },
    { field: "hello.app_secret", type: 0x01, limit: 256, payload: (c) => cat(s16("a"), s16(c), s16("d"), s16("1")) },
    { field: "hello.device_id", type: 0x01, limit: 128, payload: (c) => cat(s16("a"), s16("s"), s16(c), s16("1")) },
    { field: "hello.sdk_version", type: 0x01, limit: 64, payload: (c) => cat(s16("a"), s16("s"), s16("d"), s16(c)) },
    { field: "register.username", type: 0x02, limit: 64, payload: (c) => cat(s16(c), s16("p"), "00 00") },
    { field: "register.password", type: 0x02, limit: 256, payload: (c) => cat(s16("u"), s16(c), "00 00") },
    { field: "register.email", type: 0x02, limit: 254, payload: (c) => cat(s16("u"), s16("p"), "01", s16(c), "00") },
    { field: "register.invite_code", type: 0x02, limit: 64, payload: (c) => cat(s16("u"), s16("p"), "00 01", s16(c)) },
    { field: "login_password.username", type: 0x03, limit: 64, payload: (c) => cat(s16(c), s16("p")) },
    { field: "login_password.password", type: 0x03, limit: 256, payload: (c) => cat(s16("u"), s16(c)) },
    { field: "login_card.card_key", type: 0x04, limit: 128, payload: (c) => s16(c) },
    { field: "login_token.token", type: 0x05, limit: 32, payload: (c) => s16(c) },
    { field: "hello_ok.node_id", type: 0x81, limit: 64, payload: (c) => cat(s16(c), "0000000000000001 00000001 00000002 00000003") },
    { field: "auth_ok.token", type: 0x82, limit: 32, payload: (c) => cat("00", s16(c), "0000000000000001 00 00 00") },
    { field: "auth_ok.user_id", type: 0x82, limit: 80, payload: (c) => cat("00", s16("t"), "0000000000000001 01", s16(c), "00 00") },
    { field: "auth_ok.username", type: 0x82, limit: 64, payload: (c) => cat("00", s16("t"), "0000000000000001 00 01", s16(c), "00") },
    { field: "error.message", type: 0xe0, limit: 1024, payload: (c) => cat("17d5 00", s16(c)) },
    { field: "push.message", type: 0xf0, limit: 4096, payload: (c) => cat("00 00", s16(c), "00 00") },
    { field: "push.reason", type: 0xf0, limit: 500, payload: (c) => cat("00 00", s16("m"), "01", s16(c), "00") },
  ];

  it("takes every limited field at its limit (in bytes, not characters) and refuses one byte more", () => {
    for (const { field, type, limit, payload } of limited) {
      const atLimit = decodeMessage(frameOf(type, payload(Buffer.alloc(limit, 0x61))));
      assert.ok(atLimit !== null, field);
      throwsCode(() => decodeMessage(frameOf(type, payload(Buffer.alloc(limit + 1, 0x61)))), "PROTOCOL_ERROR", `${field} at ${limit + 1}`);
      // The declared length alone is refused for being over the limit: the bytes need not follow.
      const over = Buffer.alloc(limit + 1, 0x61);
      const full = payload(over);
      assert.throws(
        () => decodeMessage(frameOf(type, full.subarray(0, full.indexOf(over)))),
        (error: unknown) => isAuthNexusError(error, "PROTOCOL_ERROR") && /longer than/.test(String(error.detail?.reason)),
        field,
      );
    }
    const twoByteChars = Buffer.from("ë".repeat(32), "utf8");
    assert.equal(twoByteChars.length, 64);
    assert.ok(decodeMessage(frameOf(0x03, cat(s16(twoByteChars), s16("p")))));
    throwsCode(() => decodeMessage(frameOf(0x03, cat(s16(cat(twoByteChars, "61")), s16("p")))), "PROTOCOL_ERROR");
    // A declared length of 65535 with nothing behind it.
    throwsCode(() => decodeMessage(frameOf(0xf0, "00 00 ffff")), "PROTOCOL_ERROR");
  });

  it("encoding a field over its limit is a RangeError (the caller's bug, never a frame)", () => {
    assert.throws(() => encodeMessage("hello", 1, { app_id: "a".repeat(65), app_secret: "", device_id: "", sdk_version: "" }), RangeError);
    assert.throws(() => encodeMessage("login_token", 1, { token: Buffer.alloc(33) }), RangeError);
    assert.throws(
      () => encodeMessage("push", 0, { kind: "announcement", level: "info", message: "m".repeat(4097), reason: null, data: null }),
      RangeError,
    );
    assert.throws(() => encodeMessage("login_password", 1, { username: "ë".repeat(33), password: "" }), RangeError);
  });

  it("refuses strings that are not UTF-8, and keeps a byte-order mark", () => {
    for (const bad of ["ff", "c0af", "eda080", "e69d", "f4908080", "80", "61 fe 62"]) {
      throwsCode(() => decodeMessage(frameOf(0x04, s16(hex(bad)))), "PROTOCOL_ERROR", bad);
    }
    assert.deepEqual(decodeMessage(frameOf(0x04, s16(hex("efbbbf 58")))), {
      name: "login_card",
      requestId: 1,
      body: { card_key: "\ufeffX" },
    });
  });

  it("refuses a bool byte other than 0 or 1", () => {
    assert.equal(bodyOf("error", frameOf(0xe0, "0001 01 0000")).retryable, true);
    for (const b of ["02", "ff"]) throwsCode(() => decodeMessage(frameOf(0xe0, `0001 ${b} 0000`)), "PROTOCOL_ERROR", b);
  });

  it("maps oneOf indexes to their names and refuses one past the end", () => {
    const auth = (method: string) => frameOf(0x82, `${method} 0000 0000000000000000 00 00 00`);
    LOGIN_METHODS.forEach((name, index) => {
      assert.equal(bodyOf("auth_ok", auth(index.toString(16).padStart(2, "0"))).method, name);
    });
    for (const index of ["04", "ff"]) throwsCode(() => decodeMessage(auth(index)), "PROTOCOL_ERROR", `method ${index}`);
    throwsCode(() => decodeMessage(frameOf(0xf0, "03 00 0000 00 00")), "PROTOCOL_ERROR", "push kind 3");
    throwsCode(() => decodeMessage(frameOf(0xf0, "00 03 0000 00 00")), "PROTOCOL_ERROR", "push level 3");
    assert.equal(bodyOf("push", frameOf(0xf0, "02 02 0000 00 00")).kind, "kill_process");
    assert.throws(
      () => encodePayload("push", { kind: "reboot" as "announcement", level: "info", message: "", reason: null, data: null }),
      RangeError,
    );
  });

  it("refuses an optional's presence byte other than 0 or 1", () => {
    assert.equal(bodyOf("register", frameOf(0x02, "0001 75 0001 70 00 00")).email, null);
    for (const b of ["02", "ff"]) {
      throwsCode(() => decodeMessage(frameOf(0x02, `0001 75 0001 70 ${b} 0001 61 00`)), "PROTOCOL_ERROR", b);
    }
  });

  it("takes a uint53 up to 2^53 − 1 and refuses 2^53 and above", () => {
    const ack = (time: string) => bodyOf("heartbeat_ack", frameOf(0x83, time));
    assert.equal(ack("001fffffffffffff").server_time, Number.MAX_SAFE_INTEGER);
    assert.equal(ack("00000001 00000000").server_time, 2 ** 32);
    for (const t of ["0020000000000000", "8000000000000000", "ffffffffffffffff"]) {
      throwsCode(() => ack(t), "PROTOCOL_ERROR", t);
    }
    throwsCode(
      () => decodeMessage(frameOf(0x82, "00 0000 0000000000000000 00 00 01 0020000000000000")),
      "PROTOCOL_ERROR",
      "optional uint53",
    );
    for (const bad of [2 ** 53, -1, 1.5, Number.NaN]) {
      assert.throws(() => encodeMessage("heartbeat_ack", 1, { server_time: bad }), RangeError, String(bad));
    }
  });

  it("encoding refuses an integer a u16 or u32 field or the request id cannot hold", () => {
    for (const id of [2 ** 32, -1, 1.5, Number.NaN])
      assert.throws(() => encodeMessage("heartbeat", id, {}), RangeError, `request id ${id}`);
    for (const ms of [2 ** 32 + 5, -1, 1.5]) {
      const body = { node_id: "n", server_time: 0, heartbeat_interval_ms: ms, idle_timeout_ms: 1, max_frame_bytes: 1 };
      assert.throws(() => encodeMessage("hello_ok", 1, body), RangeError, `u32 ${ms}`);
    }
    for (const code of [1.5, Number.NaN]) {
      assert.throws(() => encodeMessage("error", 1, { code, retryable: false, message: "" }), RangeError, `u16 ${code}`);
    }
  });
});

// ---- values ----------------------------------------------------------------------------------

describe("values", () => {
  it("encode to their documented tags", () => {
    const cases: Array<[Value, string]> = [
      [null, "00"],
      [false, "01"],
      [true, "02"],
      [1, "03 3ff0000000000000"],
      [-0, "03 8000000000000000"],
      ["é", "04 00000002 c3a9"],
      [[], "05 00000000"],
      [{}, "06 00000000"],
      [{ a: [null, "b"] }, "06 00000001 0001 61 05 00000002 00 04 00000001 62"],
    ];
    for (const [value, bytes] of cases) {
      assert.equal(encodeValue(value).toString("hex"), hex(bytes).toString("hex"), JSON.stringify(value));
      assert.deepEqual(decodeValue(hex(bytes)), asDecoded(value));
    }
  });

  it("round-trip exactly, maps without a prototype", () => {
    // 14 arrays around a map holding an array: 16 levels, the most allowed.
    const deep: Value = Array.from({ length: 14 }).reduce<Value>((inner) => [inner], { leaf: [] });
    const values: Value[] = [
      0,
      -0,
      5e-324,
      -1.7976931348623157e308,
      Number.MAX_SAFE_INTEGER,
      2 ** 60,
      0.1,
      "",
      "ünïcødé 🔧 李雷",
      "\ufeffbom",
      "x".repeat(DEFAULT_VALUE_LIMITS.maxStringBytes),
      Array.from({ length: 4096 }, () => null),
      { nested: { list: [1, "two", false, null, { three: 3 }], empty: {} }, "": "empty key", é: 1 },
      deep,
    ];
    for (const value of values) {
      const decoded = decodeValue(encodeValue(value));
      assert.deepEqual(decoded, asDecoded(value));
      if (typeof value === "number") assert.ok(Object.is(decoded, value));
    }
    const decoded = decodeValue(encodeValue({ a: { b: {} } })) as { a: { b: object } };
    assert.equal(Object.getPrototypeOf(decoded), null);
    assert.equal(Object.getPrototypeOf(decoded.a), null);
    assert.equal(Object.getPrototypeOf(decoded.a.b), null);
  });

  it("refuses nesting past maxDepth on decode, after reading no more than maxDepth + 1 tags", () => {
    const nested = (depth: number) => cat("0500000001".repeat(depth), "00");
    assert.equal(decodeValue(nested(16)) !== null, true);
    throwsCode(() => decodeValue(nested(17)), "PROTOCOL_ERROR");
    const huge = nested(200_000);
    const r = new CountingReader(huge);
    throwsCode(() => readValue(r), "PROTOCOL_ERROR");
    assert.ok(r.tags <= DEFAULT_VALUE_LIMITS.maxDepth + 1, `read ${r.tags} tags`);
    // Maps count as nesting too, and a custom limit is honoured.
    const limits = { ...DEFAULT_VALUE_LIMITS, maxDepth: 2 };
    assert.deepEqual(decodeValue(hex("06 00000001 0001 61 05 00000001 00"), limits), map({ a: [null] }));
    throwsCode(() => decodeValue(hex("06 00000001 0001 61 05 00000001 05 00000000"), limits), "PROTOCOL_ERROR");
  });

  it("refuses a count beyond the bytes left or maxItems before looping", () => {
    for (const count of ["ffffffff", "80000000", "00001001", "00000100"]) {
      for (const tag of ["05", "06"]) {
        const r = new CountingReader(hex(`${tag} ${count} 00 00`));
        throwsCode(() => readValue(r), "PROTOCOL_ERROR", `${tag} ${count}`);
        assert.equal(r.tags, 1, `${tag} ${count}: no item was read`);
      }
    }
    const started = performance.now();
    for (let i = 0; i < 10_000; i++) throwsCode(() => decodeValue(hex("05 ffffffff")), "PROTOCOL_ERROR");
    assert.ok(performance.now() - started < 2000, "refusing a huge count is cheap");

    const items = (n: number) => cat("05", be32(n), Buffer.alloc(n));
    assert.equal((decodeValue(items(4096)) as Value[]).length, 4096);
    throwsCode(() => decodeValue(items(4097)), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(items(4), { ...DEFAULT_VALUE_LIMITS, maxItems: 3 }), "PROTOCOL_ERROR");
  });

  it("refuses a count just beyond the bytes left before reading any item", () => {
    for (const count of ["00000003", "00000006"]) {
      const r = new CountingReader(hex(`05 ${count} 00 00`));
      throwsCode(() => readValue(r), "PROTOCOL_ERROR", count);
      assert.equal(r.tags, 1, `${count}: no item was read`);
    }
  });

  it("refuses a string length over maxStringBytes or past the end, before reading it", () => {
    throwsCode(() => decodeValue(hex("04 ffffffff")), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(cat("04", be32(65_537), Buffer.alloc(65_537, 0x61))), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(hex("04 0000ffff 616263")), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(hex("04 00000005 6162636465"), { ...DEFAULT_VALUE_LIMITS, maxStringBytes: 4 }), "PROTOCOL_ERROR");
    assert.equal(decodeValue(hex("04 00000004 61626364"), { ...DEFAULT_VALUE_LIMITS, maxStringBytes: 4 }), "abcd");
    throwsCode(() => decodeValue(hex("04 00000002 c328")), "PROTOCOL_ERROR", "invalid UTF-8");
  });

  it("refuses non-finite numbers, unknown tags, truncation and trailing bytes", () => {
    for (const bits of ["7ff0000000000000", "fff0000000000000", "7ff8000000000000", "7ff0000000000001", "ffffffffffffffff"]) {
      throwsCode(() => decodeValue(hex(`03 ${bits}`)), "PROTOCOL_ERROR", bits);
    }
    for (const tag of ["07", "08", "7f", "ff"]) throwsCode(() => decodeValue(hex(tag)), "PROTOCOL_ERROR", tag);
    throwsCode(() => decodeValue(hex("")), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(hex("03 3ff0")), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(hex("06 00000001 0001 61")), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(hex("00 00")), "PROTOCOL_ERROR");
  });

  it("refuses duplicate map keys, and keys over 256 bytes or not UTF-8", () => {
    throwsCode(() => decodeValue(hex("06 00000002 0001 61 00 0001 61 02")), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(cat("06 00000002", s16("__proto__"), "00", s16("__proto__"), "00")), "PROTOCOL_ERROR");
    assert.deepEqual(decodeValue(cat("06 00000001", s16("k".repeat(256)), "00")), map({ ["k".repeat(256)]: null }));
    throwsCode(() => decodeValue(cat("06 00000001", s16("k".repeat(257)), "00")), "PROTOCOL_ERROR");
    throwsCode(() => decodeValue(hex("06 00000001 0001 ff 00")), "PROTOCOL_ERROR");
    assert.throws(() => encodeValue({ ["k".repeat(257)]: null }), RangeError);
  });

  it("decodes a __proto__ key as an ordinary own key, changing no prototype", () => {
    const bytes = cat(
      "06 00000003",
      s16("__proto__"),
      "06 00000001",
      s16("admin"),
      "02",
      s16("constructor"),
      "00",
      s16("x"),
      "03 3ff0000000000000",
    );
    const decoded = decodeValue(bytes) as { [key: string]: Value };
    assert.equal(Object.getPrototypeOf(decoded), null);
    assert.deepEqual(Object.keys(decoded), ["__proto__", "constructor", "x"]);
    assert.ok(Object.hasOwn(decoded, "__proto__"));
    assert.deepEqual(Object.getOwnPropertyDescriptor(decoded, "__proto__")?.value, map({ admin: true }));
    assert.equal((decoded as { admin?: unknown }).admin, undefined);
    assert.equal(({} as { admin?: unknown }).admin, undefined, "Object.prototype is untouched");
    // Through a push frame too, and back out: an own __proto__ key (as JSON.parse makes) is sent.
    const data = JSON.parse('{"__proto__": {"admin": true}}') as Value;
    const frame = encodeMessage("push", 0, { kind: "announcement", level: "info", message: "", reason: null, data });
    const pushed = bodyOf("push", (new FrameDecoder().push(frame) as [Frame])[0]).data as {
      [key: string]: Value;
    };
    assert.ok(Object.hasOwn(pushed, "__proto__"));
    assert.equal(Object.getPrototypeOf(pushed), null);
  });

  it("encoding refuses non-finite numbers, too deep or too big values, and what is not a value", () => {
    for (const n of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])
      assert.throws(() => encodeValue(n), RangeError, String(n));
    assert.throws(() => encodeValue([1, [Number.NaN]]), RangeError);
    const tooDeep = Array.from({ length: 16 }).reduce<Value>((inner) => [inner], []);
    assert.throws(() => encodeValue(tooDeep), RangeError);
    const cyclic: Value[] = [];
    cyclic.push(cyclic);
    assert.throws(() => encodeValue(cyclic), RangeError);
    const notValues: unknown[] = [undefined, () => 1, Symbol("s"), 10n, [undefined], { f: () => 1 }, { u: undefined }];
    for (const v of notValues) assert.throws(() => encodeValue(v as Value), RangeError, String(typeof v));
    assert.throws(() => encodeValue(Array.from({ length: 4097 }, () => null)), RangeError);
    assert.throws(() => encodeValue(Object.fromEntries(Array.from({ length: 4097 }, (_, i) => [`k${i}`, null]))), RangeError);
    assert.throws(() => encodeValue("x".repeat(65_537)), RangeError);
    assert.throws(() => encodeValue("abcde", { ...DEFAULT_VALUE_LIMITS, maxStringBytes: 4 }), RangeError);
    assert.throws(
      () =>
        encodeMessage("push", 0, { kind: "announcement", level: "info", message: "", reason: null, data: undefined as unknown as Value }),
      RangeError,
    );
  });
});

// ---- fuzzing ---------------------------------------------------------------------------------

const ALLOWED: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["PROTOCOL_ERROR", "FRAME_TOO_LARGE", "PROTOCOL_VERSION_UNSUPPORTED"]);

interface FuzzStats {
  decoded: number;
  names: Set<MessageName>;
  unknownType: number;
  errors: Map<string, number>;
}

function hasIntegerLikeKey(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(hasIntegerLikeKey);
  if (value !== null && typeof value === "object" && !Buffer.isBuffer(value)) {
    return Object.entries(value).some(([key, item]) => /^(?:0|[1-9]\d*)$/.test(key) || hasIntegerLikeKey(item));
  }
  return false;
}

/** Only a catalogued protocol error may come out of the decoder; anything else fails the test with the input. */
function expectProtocolError(error: unknown, input: Buffer, stats: FuzzStats): void {
  if (error instanceof AssertionError) throw error;
  if (error instanceof AuthNexusError && ALLOWED.has(error.code)) {
    stats.errors.set(error.code, (stats.errors.get(error.code) ?? 0) + 1);
    return;
  }
  const what = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  assert.fail(`input ${input.toString("hex")} threw ${what}`);
}

/** Feeds `input` to a fresh decoder in random chunks and decodes every frame; checks what may be thrown and held. */
function fuzzOne(input: Buffer, rand: () => number, stats: FuzzStats): void {
  const maxFrameBytes = rand() < 0.1 ? 48 + int(rand, 80) : DEFAULT_MAX_FRAME_BYTES;
  const decoder = new FrameDecoder(maxFrameBytes);
  for (const chunk of split(input, rand, 1 + int(rand, 64))) {
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch (error) {
      expectProtocolError(error, input, stats);
      return; // the stream cannot be resynchronised: the connection closes
    } finally {
      assert.ok(decoder.buffered <= maxFrameBytes, `buffered ${decoder.buffered} > ${maxFrameBytes} for ${input.toString("hex")}`);
    }
    for (const frame of frames) {
      let decoded: Decoded | null;
      try {
        decoded = decodeMessage(frame);
      } catch (error) {
        expectProtocolError(error, input, stats);
        continue;
      }
      if (decoded === null) {
        stats.unknownType++;
        continue;
      }
      stats.decoded++;
      stats.names.add(decoded.name);
      // Whatever decodes encodes again to a frame that decodes to the same message — and, map
      // key order aside (JavaScript lists integer-like keys first), to the very same bytes.
      const again = reencode(decoded.name, decoded.requestId, decoded.body);
      assert.deepEqual(decodeMessage((new FrameDecoder().push(again) as [Frame])[0]), decoded);
      if (!hasIntegerLikeKey(decoded.body)) {
        assert.equal(
          again.subarray(LENGTH_BYTES).toString("hex"),
          Buffer.concat([hex("01"), Buffer.from([frame.type]), hex("0000"), be32(frame.requestId), frame.payload]).toString("hex"),
        );
      }
    }
  }
}

const TYPES = (Object.keys(MESSAGES) as MessageName[]).map((name) => MESSAGES[name].type);

/** A random value, encoded, for payload tokens. */
function randomValue(rand: () => number, depth = 0): Value {
  const kind = int(rand, depth > 3 ? 4 : 6);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rand() < 0.5;
    case 2:
      return rand() < 0.5 ? int(rand, 1000) : (rand() - 0.5) * 1e6;
    case 3:
      return randomBytes(rand, int(rand, 6)).toString("latin1");
    case 4:
      return Array.from({ length: int(rand, 4) }, () => randomValue(rand, depth + 1));
    default: {
      const out: { [key: string]: Value } = {};
      for (let i = int(rand, 4); i > 0; i--) out[String.fromCharCode(97 + int(rand, 26))] = randomValue(rand, depth + 1);
      return out;
    }
  }
}

/** Payload made of field-shaped tokens: small bytes, short strings, 4- and 8-byte integers, values. */
function randomPayload(rand: () => number): Buffer {
  const parts: Buffer[] = [];
  for (let i = int(rand, 8); i > 0; i--) {
    switch (int(rand, 6)) {
      case 0:
        parts.push(Buffer.from([[0, 1, 2, 3, 4, 0xff][int(rand, 6)] as number]));
        break;
      case 1:
        parts.push(s16(rand() < 0.8 ? Buffer.from("abcdé🔧".slice(0, int(rand, 8)), "utf8") : randomBytes(rand, int(rand, 6))));
        break;
      case 2:
        parts.push(cat(be32(int(rand, 0x40_0000)), be32(int(rand, 2 ** 32))));
        break;
      case 3:
        parts.push(be32(int(rand, 2 ** 32)));
        break;
      case 4:
        parts.push(be16(int(rand, 0x10000)));
        break;
      default:
        parts.push(encodeValue(randomValue(rand)));
    }
  }
  return Buffer.concat(parts);
}

/** Random bytes, or random frames with a plausible header. */
function randomStream(rand: () => number): Buffer {
  if (rand() < 0.3) return randomBytes(rand, int(rand, 64));
  const frames: Buffer[] = [];
  for (let n = 1 + int(rand, 3); n > 0; n--) {
    const payload = rand() < 0.5 ? randomPayload(rand) : randomBytes(rand, int(rand, 48));
    const header = Buffer.alloc(LENGTH_BYTES + HEADER_BYTES);
    header.writeUInt32BE(rand() < 0.9 ? HEADER_BYTES + payload.length : int(rand, 80), 0);
    header[4] = rand() < 0.9 ? PROTOCOL_VERSION : int(rand, 256);
    header[5] = rand() < 0.85 ? (TYPES[int(rand, TYPES.length)] as number) : int(rand, 256);
    header.writeUInt16BE(rand() < 0.9 ? 0 : int(rand, 0x10000), 6);
    header.writeUInt32BE(int(rand, 2 ** 32), 8);
    frames.push(header, payload);
  }
  return Buffer.concat(frames);
}

const GOLDEN_FRAMES = GOLDEN.map((g) => hex(g.frame));
const INTERESTING = [0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xfe, 0xff];

/** One to three golden frames back to back, then one to four mutations. */
function mutatedStream(rand: () => number): Buffer {
  const parts: Buffer[] = [];
  for (let n = 1 + int(rand, 3); n > 0; n--) parts.push(GOLDEN_FRAMES[int(rand, GOLDEN_FRAMES.length)] as Buffer);
  let bytes = Buffer.concat(parts);
  for (let n = 1 + int(rand, 4); n > 0; n--) {
    const at = int(rand, bytes.length + 1);
    switch (int(rand, 7)) {
      case 0: // flip a bit
        if (at < bytes.length) bytes[at] = (bytes[at] as number) ^ (1 << int(rand, 8));
        break;
      case 1: // set a byte to a boundary value
        if (at < bytes.length) bytes[at] = INTERESTING[int(rand, INTERESTING.length)] as number;
        break;
      case 2: // set a byte at random
        if (at < bytes.length) bytes[at] = int(rand, 256);
        break;
      case 3: // insert 1–3 bytes
        bytes = Buffer.concat([bytes.subarray(0, at), randomBytes(rand, 1 + int(rand, 3)), bytes.subarray(at)]);
        break;
      case 4: // delete 1–3 bytes
        bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + int(rand, 3))]);
        break;
      case 5: // truncate
        bytes = bytes.subarray(0, at);
        break;
      default:
        {
          // splice in a slice of another golden frame
          const other = GOLDEN_FRAMES[int(rand, GOLDEN_FRAMES.length)] as Buffer;
          const from = int(rand, other.length);
          bytes = Buffer.concat([bytes.subarray(0, at), other.subarray(from, from + 1 + int(rand, 16)), bytes.subarray(at)]);
        }
        break;
    }
  }
  return Buffer.from(bytes);
}

describe("fuzzing (seeded)", () => {
  const newStats = (): FuzzStats => ({ decoded: 0, names: new Set(), unknownType: 0, errors: new Map() });

  it("20,000 random streams: only protocol errors are thrown, never more than one frame is held", () => {
    const rand = prng(0xa17e_0001);
    const stats = newStats();
    for (let i = 0; i < 20_000; i++) fuzzOne(randomStream(rand), rand, stats);
    // The inputs reach every outcome (a fuzz that never gets past the header checks nothing).
    assert.ok(stats.decoded > 200, `decoded ${stats.decoded}`);
    assert.ok(stats.unknownType > 1000, `unknown ${stats.unknownType}`);
    for (const code of ALLOWED) assert.ok((stats.errors.get(code) ?? 0) > 1000, `${code}: ${stats.errors.get(code)}`);
  });

  it("20,000 mutations of the golden frames: only protocol errors are thrown, never more than one frame is held", () => {
    const rand = prng(0xa17e_0002);
    const stats = newStats();
    for (let i = 0; i < 20_000; i++) fuzzOne(mutatedStream(rand), rand, stats);
    assert.ok(stats.decoded > 5000, `decoded ${stats.decoded}`);
    assert.deepEqual([...stats.names].sort(), (Object.keys(MESSAGES) as MessageName[]).sort(), "every message decoded at least once");
    for (const code of ALLOWED) assert.ok((stats.errors.get(code) ?? 0) > 200, `${code}: ${stats.errors.get(code)}`);
  });
});
