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
import { checkUnsigned, malformed } from "./wire.js";

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
  checkUnsigned(type, 0xff, "message type");
  checkUnsigned(requestId, 0xffff_ffff, "request id");
  const total = LENGTH_BYTES + HEADER_BYTES + payload.length;
  if (total > maxFrameBytes) throw new RangeError(`a frame of ${total} bytes is over the limit of ${maxFrameBytes}`);
  const frame = Buffer.allocUnsafe(total);
  frame.writeUInt32BE(HEADER_BYTES + payload.length, 0);
  frame[4] = PROTOCOL_VERSION;
  frame[5] = type;
  frame.writeUInt16BE(0, 6);
  frame.writeUInt32BE(requestId, 8);
  frame.set(payload, LENGTH_BYTES + HEADER_BYTES);
  return frame;
}

/**
 * Splits a byte stream into frames. push() returns every frame completed by the chunk; it throws
 * FRAME_TOO_LARGE for a length over the maximum and PROTOCOL_ERROR for a length too short to
 * hold a header — after either the stream cannot be resynchronised, and the connection closes.
 * Chunks of an incomplete frame are kept as they came and joined once, when the frame is
 * complete: a frame trickled in byte by byte costs one copy, not one per byte.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private held = 0;
  /** Bytes the frame being collected needs in all (length field included), once its length is known. */
  private needed = 0;

  constructor(private readonly maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes held for a frame not yet complete (never more than one maximum frame). */
  get buffered(): number {
    return this.held;
  }

  push(chunk: Buffer): Frame[] {
    if (chunk.length === 0) return [];
    this.chunks.push(chunk);
    this.held += chunk.length;
    try {
      return this.split();
    } catch (error) {
      // The stream cannot be resynchronised: drop what was held (the connection closes).
      this.chunks = [];
      this.held = 0;
      this.needed = 0;
      throw error;
    }
  }

  private split(): Frame[] {
    const frames: Frame[] = [];
    for (;;) {
      if (this.needed === 0) {
        if (this.held < LENGTH_BYTES) break;
        this.needed = LENGTH_BYTES + this.checkLength(this.peekLength());
      }
      if (this.held < this.needed) break;
      const data = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks, this.held);
      const end = this.needed;
      frames.push({
        version: data[4] as number,
        type: data[5] as number,
        flags: data.readUInt16BE(6),
        requestId: data.readUInt32BE(8),
        payload: data.subarray(LENGTH_BYTES + HEADER_BYTES, end),
      });
      const rest = data.subarray(end);
      this.chunks = rest.length === 0 ? [] : [rest];
      this.held = rest.length;
      this.needed = 0;
    }
    return frames;
  }

  private peekLength(): number {
    const first = this.chunks[0] as Buffer;
    if (first.length >= LENGTH_BYTES) return first.readUInt32BE(0);
    const head = Buffer.concat(this.chunks, this.held);
    this.chunks = [head];
    return head.readUInt32BE(0);
  }

  private checkLength(length: number): number {
    if (length < HEADER_BYTES) throw malformed(`frame length ${length} is shorter than the ${HEADER_BYTES}-byte header`);
    if (LENGTH_BYTES + length > this.maxFrameBytes) {
      throw new AuthNexusError("FRAME_TOO_LARGE", {
        message: `A frame of ${LENGTH_BYTES + length} bytes is over the limit of ${this.maxFrameBytes}.`,
        detail: { length },
      });
    }
    return length;
  }
}
