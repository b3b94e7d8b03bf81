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
 * Splits a byte stream into frames. push() returns every frame completed by the chunk. A length
 * over the maximum (FRAME_TOO_LARGE) or too short to hold a header (PROTOCOL_ERROR) cannot be
 * resynchronised past, so the connection must close: push() throws it when no frame came before
 * it in the chunk; otherwise it returns those frames first and the error waits in takeError()
 * (and is thrown by any later push), so what the peer sent before the bad length is served the
 * same however TCP split the stream.
 *
 * Memory: a frame that arrives whole is returned as a view of its chunk, with no copy. A frame
 * that arrives in pieces gets one buffer of exactly its size as soon as its length is known, and
 * each piece is copied into it: a peer trickling a frame byte by byte holds at most one maximum
 * frame, never one object per read.
 */
export class FrameDecoder {
  /** The frame being filled, allocated at its full size (length field included). */
  private frame: Buffer | null = null;
  private filled = 0;
  /** Fewer than LENGTH_BYTES bytes of the next frame's length field. */
  private partialLength: Buffer | null = null;
  private failure: AuthNexusError | null = null;

  constructor(private readonly maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes held for a frame not yet complete (never more than one maximum frame). */
  get buffered(): number {
    return (this.frame ? this.filled : 0) + (this.partialLength?.length ?? 0);
  }

  push(chunk: Buffer): Frame[] {
    if (this.failure) throw this.failure;
    const frames: Frame[] = [];
    try {
      this.consume(chunk, frames);
    } catch (error) {
      // The stream cannot be resynchronised: drop what was held (the connection closes).
      this.frame = null;
      this.filled = 0;
      this.partialLength = null;
      this.failure = error as AuthNexusError;
      if (frames.length === 0) throw error;
    }
    return frames;
  }

  /** The error that ended the stream after the frames push() returned, if one did. */
  takeError(): AuthNexusError | null {
    return this.failure;
  }

  private consume(chunk: Buffer, frames: Frame[]): void {
    let data = chunk;
    while (data.length > 0) {
      if (this.frame) {
        const take = Math.min(this.frame.length - this.filled, data.length);
        data.copy(this.frame, this.filled, 0, take);
        this.filled += take;
        data = data.subarray(take);
        if (this.filled === this.frame.length) {
          frames.push(frameAt(this.frame));
          this.frame = null;
          this.filled = 0;
        }
        continue;
      }
      if (this.partialLength) {
        // At most three bytes were waiting: joining them costs one copy of this chunk, rarely.
        data = Buffer.concat([this.partialLength, data]);
        this.partialLength = null;
      }
      if (data.length < LENGTH_BYTES) {
        this.partialLength = Buffer.from(data);
        return;
      }
      const needed = LENGTH_BYTES + this.checkLength(data.readUInt32BE(0));
      if (data.length >= needed) {
        frames.push(frameAt(data.subarray(0, needed)));
        data = data.subarray(needed);
        continue;
      }
      this.frame = Buffer.allocUnsafe(needed);
      data.copy(this.frame, 0);
      this.filled = data.length;
      return;
    }
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

/** The frame in `data`, which holds exactly one frame, length field included. */
function frameAt(data: Buffer): Frame {
  return {
    version: data[4] as number,
    type: data[5] as number,
    flags: data.readUInt16BE(6),
    requestId: data.readUInt32BE(8),
    payload: data.subarray(LENGTH_BYTES + HEADER_BYTES),
  };
}
