/**
 * The binary protocol between the SDK and a node's business port (docs/protocol.md): frames,
 * the message catalogue and the value model. Pure: no sockets, no timers.
 */
export {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  type Frame,
  FrameDecoder,
  HEADER_BYTES,
  LENGTH_BYTES,
  NO_REQUEST,
  PROTOCOL_VERSION,
} from "./frame.js";
export {
  type Decoded,
  decodeMessage,
  ERRORS_ENDING_CONNECTION,
  encodeMessage,
  encodePayload,
  isRequestType,
  LIMITS,
  LOGIN_METHODS,
  type LoginMethod,
  MESSAGES,
  type Message,
  type MessageName,
  messageNameOf,
  PUSH_KINDS,
  PUSH_LEVELS,
  type PushKind,
} from "./messages.js";
export { DEFAULT_VALUE_LIMITS, readValue, type Value, type ValueLimits, writeValue } from "./value.js";
export { Reader, Writer } from "./wire.js";
