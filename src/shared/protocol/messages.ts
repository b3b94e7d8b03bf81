/**
 * Every message of the binary protocol, one schema each: a type byte and its fields in order
 * (docs/protocol.md, "Messages"). The node and the SDK encode and decode with the same table,
 * so the two cannot drift. Requests have types below 0x80, answers 0x80 and above; a request
 * type this side does not know is answered MESSAGE_UNSUPPORTED without closing the connection.
 */
import { AuthNexusError, type ErrorCode } from "../errors/index.js";
import { encodeFrame, type Frame, PROTOCOL_VERSION } from "./frame.js";
import { readValue, type Value, writeValue } from "./value.js";
import { malformed, Reader, Writer } from "./wire.js";

// ---- field codecs ----------------------------------------------------------------------------

interface Field<T> {
  write(w: Writer, value: T): void;
  read(r: Reader, name: string): T;
}

const str = (max: number): Field<string> => ({ write: (w, v) => w.str(v, max), read: (r, name) => r.str(name, max) });
const bytes = (max: number): Field<Buffer> => ({ write: (w, v) => w.bytes(v, max), read: (r, name) => r.bytes(name, max) });
const u16: Field<number> = { write: (w, v) => w.u16(v), read: (r, name) => r.u16(name) };
const u32: Field<number> = { write: (w, v) => w.u32(v), read: (r, name) => r.u32(name) };
const uint53: Field<number> = { write: (w, v) => w.uint53(v), read: (r, name) => r.uint53(name) };
const bool: Field<boolean> = { write: (w, v) => w.bool(v), read: (r, name) => r.bool(name) };
const value: Field<Value> = { write: (w, v) => writeValue(w, v), read: (r) => readValue(r) };

/** A field that may be absent: a presence byte (0 or 1), then the value when present. */
function optional<T>(field: Field<T>): Field<T | null> {
  return {
    write: (w, v) => {
      w.bool(v !== null);
      if (v !== null) field.write(w, v);
    },
    read: (r, name) => (r.bool(`${name} presence`) ? field.read(r, name) : null),
  };
}

/** One of a fixed list of names, sent as its index (a byte). */
function oneOf<const T extends readonly string[]>(names: T): Field<T[number]> {
  return {
    write: (w, v) => {
      const index = names.indexOf(v);
      if (index < 0) throw new RangeError(`${v} is not one of ${names.join(", ")}`);
      w.u8(index);
    },
    read: (r, name) => {
      const index = r.u8(name);
      const found = names[index];
      if (found === undefined) throw malformed(`${name} ${index} is not one of ${names.length} known values`);
      return found;
    },
  };
}

// ---- the catalogue ---------------------------------------------------------------------------

/** Field limits, in UTF-8 bytes. */
export const LIMITS = {
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
  /** A per-user variable's value; app_policy.user_variable_max_bytes may set a lower limit. */
  userVariableValue: 65_536,
} as const;

/** Errors after which the node closes the connection (docs/protocol.md, "Errors"); any other error leaves it open. */
export const ERRORS_ENDING_CONNECTION: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "PROTOCOL_ERROR",
  "FRAME_TOO_LARGE",
  "PROTOCOL_VERSION_UNSUPPORTED",
  "HANDSHAKE_REQUIRED",
  "HANDSHAKE_TIMEOUT",
  "IDLE_TIMEOUT",
  "APP_CREDENTIALS_INVALID",
  "APP_DISABLED",
  "CLIENT_CERT_REFUSED",
  "ACCESS_DENIED",
  "CONNECTION_LIMIT",
  "SECURITY_STATE_UNAVAILABLE",
]);

export const LOGIN_METHODS = ["password", "card", "token", "register"] as const;
export type LoginMethod = (typeof LOGIN_METHODS)[number];
export const PUSH_KINDS = ["announcement", "force_logout", "kill_process"] as const;
export type PushKind = (typeof PUSH_KINDS)[number];
export const PUSH_LEVELS = ["info", "warning", "critical"] as const;

export const MESSAGES = {
  // Requests (client → node)
  hello: {
    type: 0x01,
    fields: {
      app_id: str(LIMITS.appId),
      app_secret: str(LIMITS.appSecret),
      device_id: str(LIMITS.deviceId),
      sdk_version: str(LIMITS.sdkVersion),
    },
  },
  register: {
    type: 0x02,
    fields: {
      username: str(LIMITS.username),
      password: str(LIMITS.password),
      email: optional(str(LIMITS.email)),
      invite_code: optional(str(LIMITS.inviteCode)),
    },
  },
  login_password: { type: 0x03, fields: { username: str(LIMITS.username), password: str(LIMITS.password) } },
  login_card: { type: 0x04, fields: { card_key: str(LIMITS.cardKey) } },
  login_token: { type: 0x05, fields: { token: bytes(LIMITS.token) } },
  heartbeat: { type: 0x06, fields: {} },
  logout: { type: 0x07, fields: {} },
  call_function: { type: 0x08, fields: { name: str(LIMITS.functionName), params: value } },
  /** The application's cloud variables the caller may read: one (`name`) or all. */
  get_variables: { type: 0x09, fields: { name: optional(str(LIMITS.variableName)) } },
  /** The logged-in user's own variables: one (`key`) or all. */
  get_user_variables: { type: 0x0a, fields: { key: optional(str(LIMITS.variableName)) } },
  /** Sets one of the logged-in user's variables; a null value deletes it. */
  set_user_variable: { type: 0x0b, fields: { key: str(LIMITS.variableName), value: optional(str(LIMITS.userVariableValue)) } },

  // Answers (node → client), echoing the request id
  hello_ok: {
    type: 0x81,
    fields: { node_id: str(LIMITS.nodeId), server_time: uint53, heartbeat_interval_ms: u32, idle_timeout_ms: u32, max_frame_bytes: u32 },
  },
  auth_ok: {
    type: 0x82,
    fields: {
      method: oneOf(LOGIN_METHODS),
      token: bytes(LIMITS.token),
      session_expires_at: uint53,
      user_id: optional(str(LIMITS.username + 16)),
      username: optional(str(LIMITS.username)),
      card_expires_at: optional(uint53),
    },
  },
  heartbeat_ack: { type: 0x83, fields: { server_time: uint53 } },
  ok: { type: 0x84, fields: {} },
  function_result: { type: 0x85, fields: { value } },
  /** A map from names to values (get_variables, get_user_variables); a name the caller cannot see is absent. */
  variables: { type: 0x86, fields: { values: value } },
  error: { type: 0xe0, fields: { code: u16, retryable: bool, message: str(LIMITS.errorMessage) } },

  // Pushes (node → client, request id 0)
  push: {
    type: 0xf0,
    fields: {
      kind: oneOf(PUSH_KINDS),
      level: oneOf(PUSH_LEVELS),
      message: str(LIMITS.message),
      reason: optional(str(LIMITS.reason)),
      data: value,
    },
  },
} as const satisfies Record<string, { type: number; fields: Record<string, Field<never> | Field<unknown>> }>;

export type MessageName = keyof typeof MESSAGES;
type FieldsOf<N extends MessageName> = (typeof MESSAGES)[N]["fields"];
/** The body of message `N`, as the application sees it. */
export type Message<N extends MessageName> = { [F in keyof FieldsOf<N>]: FieldsOf<N>[F] extends Field<infer T> ? T : never };
/** A decoded message: its name, request id and body. */
export type Decoded = { [N in MessageName]: { name: N; requestId: number; body: Message<N> } }[MessageName];

const NAME_BY_TYPE = new Map<number, MessageName>((Object.keys(MESSAGES) as MessageName[]).map((name) => [MESSAGES[name].type, name]));

export function isRequestType(type: number): boolean {
  return type < 0x80;
}

export function messageNameOf(type: number): MessageName | undefined {
  return NAME_BY_TYPE.get(type);
}

/** The payload of a message (no frame header). */
export function encodePayload<N extends MessageName>(name: N, body: Message<N>): Buffer {
  const w = new Writer();
  const fields = MESSAGES[name].fields as Record<string, Field<unknown>>;
  for (const [field, codec] of Object.entries(fields)) codec.write(w, (body as Record<string, unknown>)[field]);
  return w.finish();
}

/** A whole frame for message `name`. */
export function encodeMessage<N extends MessageName>(name: N, requestId: number, body: Message<N>, maxFrameBytes?: number): Buffer {
  return encodeFrame(MESSAGES[name].type, requestId, encodePayload(name, body), maxFrameBytes);
}

/**
 * A frame's message. Throws PROTOCOL_VERSION_UNSUPPORTED for another version, PROTOCOL_ERROR for
 * non-zero flags or a payload that does not match its type's fields exactly, and returns null
 * for a type this side does not know (the caller decides how to answer that).
 */
export function decodeMessage(frame: Frame): Decoded | null {
  if (frame.version !== PROTOCOL_VERSION) throw versionError(frame.version);
  if (frame.flags !== 0) throw malformed(`flags ${frame.flags} are reserved and must be 0`);
  const name = NAME_BY_TYPE.get(frame.type);
  if (name === undefined) return null;
  const r = new Reader(frame.payload);
  const body: Record<string, unknown> = {};
  for (const [field, codec] of Object.entries(MESSAGES[name].fields as Record<string, Field<unknown>>)) body[field] = codec.read(r, field);
  r.end(name);
  return { name, requestId: frame.requestId, body } as Decoded;
}

function versionError(version: number): AuthNexusError {
  return new AuthNexusError("PROTOCOL_VERSION_UNSUPPORTED", {
    message: `Protocol version ${version} is not supported; this side speaks version ${PROTOCOL_VERSION}.`,
  });
}
