/**
 * Frames of the binary protocol (docs/protocol.md, "Frames"): a 4-byte big-endian length, then
 * an 8-byte header (version, type, flags, request id), then the payload.
 *
 *   0      4        5     6       8            12
 *   | length | version | type | flags | request id | payload …
 *
 * `length` counts everything after itself (header and payload), so a frame is 4 + length bytes.
 * The decoder checks the length against the connection's maximum before it buffers anything of
 * the frame, so a peer cannot make it allocate more than one maximum frame per connection.
 */
import { AuthNexusError } from "../errors/index.js";
import { malformed } from "./wire.js";

export const PROTOCOL_VERSION = 1;
/** Bytes of the length field. */
export const LENGTH_BYTES = 4;
/** Bytes of version, type, flags and request id. */
export const HEADER_BYTES = 8;
/** Largest frame (length field included) either side sends or accepts unless told otherwise. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;
/** Request id of frames that answer no request: pushes and connection-level errors. */
export const NO_REQUEST = 0;

export interface Frame {
  version: number;
  type: number;
  /** Reserved; 0 in version 1. */
  flags: number;
  requestId: number;
  /** A view into the decoder's buffer, valid until the next push(). */
  payload: Buffer;
}

/** The header and payload of a frame, length prefix included. */
export function encodeFrame(type: number, requestId: number, payload: Uint8Array, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  const total = LENGTH_BYTES + HEADER_BYTES + payload.length;
  if (total > maxFrameBytes) throw new RangeError(`a frame of ${total} bytes is over the limit of ${maxFrameBytes}`);
  const frame = Buffer.allocUnsafe(total);
  frame.writeUInt32BE(HEADER_BYTES + payload.length, 0);
  frame[4] = PROTOCOL_VERSION;
  frame[5] = type;
  frame.writeUInt16BE(0, 6);
  frame.writeUInt32BE(requestId >>> 0, 8);
  frame.set(payload, LENGTH_BYTES + HEADER_BYTES);
  return frame;
}

/**
 * Splits a byte stream into frames. push() returns every frame completed by the chunk; it throws
 * FRAME_TOO_LARGE for a length over the maximum and PROTOCOL_ERROR for a length too short to
 * hold a header — after either the stream cannot be resynchronised, and the connection closes.
 */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes held for a frame not yet complete (never more than one maximum frame). */
  get buffered(): number {
    return this.pending.length;
  }

  push(chunk: Buffer): Frame[] {
    let data = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: Frame[] = [];
    for (;;) {
      if (data.length < LENGTH_BYTES) break;
      const length = data.readUInt32BE(0);
      if (length < HEADER_BYTES) throw malformed(`frame length ${length} is shorter than the ${HEADER_BYTES}-byte header`);
      if (LENGTH_BYTES + length > this.maxFrameBytes) {
        throw new AuthNexusError("FRAME_TOO_LARGE", {
          message: `A frame of ${LENGTH_BYTES + length} bytes is over the limit of ${this.maxFrameBytes}.`,
          detail: { length },
        });
      }
      if (data.length < LENGTH_BYTES + length) break;
      frames.push({
        version: data[4] as number,
        type: data[5] as number,
        flags: data.readUInt16BE(6),
        requestId: data.readUInt32BE(8),
        payload: data.subarray(LENGTH_BYTES + HEADER_BYTES, LENGTH_BYTES + length),
      });
      data = data.subarray(LENGTH_BYTES + length);
    }
    // Keep only the incomplete tail, copied: holding a view would pin the whole chunk.
    this.pending = data.length === 0 ? Buffer.alloc(0) : Buffer.from(data);
    return frames;
  }
}
