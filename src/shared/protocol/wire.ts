/**
 * Byte-level reading and writing for the binary protocol (docs/protocol.md): big-endian
 * integers, length-prefixed UTF-8 strings and byte strings. The reader never reads past the
 * buffer it was given and never allocates more than a length it has already checked against
 * what is left, so a hostile length costs nothing.
 */
import { AuthNexusError } from "../errors/index.js";

/** A payload that does not decode: the connection that sent it is answered PROTOCOL_ERROR and closed. */
export function malformed(reason: string): AuthNexusError {
  return new AuthNexusError("PROTOCOL_ERROR", { message: `Malformed frame: ${reason}.`, detail: { reason } });
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const UINT53_HIGH_LIMIT = 0x200000;

export class Reader {
  private offset = 0;

  constructor(private readonly source: Uint8Array) {}

  get remaining(): number {
    return this.source.length - this.offset;
  }

  private take(count: number, what: string): Uint8Array {
    if (count > this.remaining) throw malformed(`${what} runs past the end of the frame`);
    const slice = this.source.subarray(this.offset, this.offset + count);
    this.offset += count;
    return slice;
  }

  u8(what: string): number {
    return this.take(1, what)[0] as number;
  }

  u16(what: string): number {
    const b = this.take(2, what);
    return ((b[0] as number) << 8) | (b[1] as number);
  }

  u32(what: string): number {
    const b = this.take(4, what);
    return ((b[0] as number) * 0x1000000 + (((b[1] as number) << 16) | ((b[2] as number) << 8) | (b[3] as number))) >>> 0;
  }

  /** An unsigned integer sent as 8 bytes that must fit a JavaScript number exactly (< 2^53). */
  uint53(what: string): number {
    const high = this.u32(what);
    const low = this.u32(what);
    if (high >= UINT53_HIGH_LIMIT) throw malformed(`${what} is larger than 2^53`);
    return high * 0x1_0000_0000 + low;
  }

  f64(what: string): number {
    const b = this.take(8, what);
    return new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, false);
  }

  bool(what: string): boolean {
    const value = this.u8(what);
    if (value > 1) throw malformed(`${what} is not a boolean`);
    return value === 1;
  }

  /** u16 byte length, then that many bytes of UTF-8; at most `maxBytes`. */
  str(what: string, maxBytes: number): string {
    const length = this.u16(what);
    if (length > maxBytes) throw malformed(`${what} is longer than ${maxBytes} bytes`);
    try {
      return UTF8.decode(this.take(length, what));
    } catch (error) {
      if (error instanceof AuthNexusError) throw error;
      throw malformed(`${what} is not valid UTF-8`);
    }
  }

  /** u16 length, then that many raw bytes (copied: the frame's buffer is reused); at most `maxBytes`. */
  bytes(what: string, maxBytes: number): Buffer {
    const length = this.u16(what);
    if (length > maxBytes) throw malformed(`${what} is longer than ${maxBytes} bytes`);
    return Buffer.from(this.take(length, what));
  }

  /** u32 length prefix used by the value model's strings and containers. */
  lengthU32(what: string, max: number): number {
    const length = this.u32(what);
    if (length > max) throw malformed(`${what} has ${length} items or bytes, more than ${max}`);
    return length;
  }

  utf8(length: number, what: string): string {
    try {
      return UTF8.decode(this.take(length, what));
    } catch (error) {
      if (error instanceof AuthNexusError) throw error;
      throw malformed(`${what} is not valid UTF-8`);
    }
  }

  /** Everything must have been read: trailing bytes mean the two sides disagree on the layout. */
  end(what: string): void {
    if (this.remaining !== 0) throw malformed(`${this.remaining} unexpected byte(s) after ${what}`);
  }
}

/** A value that does not fit its field is the caller's bug: never wrapped, never rounded. */
export function checkUnsigned(value: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) throw new RangeError(`${value} does not fit a ${what}`);
}

/** Grows as it writes; `finish()` returns exactly the bytes written. */
export class Writer {
  private buffer: Buffer;
  private offset = 0;

  constructor(initial = 128) {
    this.buffer = Buffer.allocUnsafe(initial);
  }

  private room(count: number): void {
    if (this.offset + count <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.offset + count));
    this.buffer.copy(grown, 0, 0, this.offset);
    this.buffer = grown;
  }

  get length(): number {
    return this.offset;
  }

  u8(value: number): this {
    checkUnsigned(value, 0xff, "u8");
    this.room(1);
    this.buffer[this.offset++] = value;
    return this;
  }

  u16(value: number): this {
    checkUnsigned(value, 0xffff, "u16");
    this.room(2);
    this.buffer.writeUInt16BE(value, this.offset);
    this.offset += 2;
    return this;
  }

  u32(value: number): this {
    checkUnsigned(value, 0xffff_ffff, "u32");
    this.room(4);
    this.buffer.writeUInt32BE(value, this.offset);
    this.offset += 4;
    return this;
  }

  uint53(value: number): this {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not an unsigned 53-bit integer: ${value}`);
    return this.u32(Math.floor(value / 0x1_0000_0000)).u32(value % 0x1_0000_0000);
  }

  f64(value: number): this {
    this.room(8);
    this.buffer.writeDoubleBE(value, this.offset);
    this.offset += 8;
    return this;
  }

  bool(value: boolean): this {
    return this.u8(value ? 1 : 0);
  }

  raw(bytes: Uint8Array): this {
    this.room(bytes.length);
    this.buffer.set(bytes, this.offset);
    this.offset += bytes.length;
    return this;
  }

  /** u16 length + UTF-8. A string over `maxBytes` is the caller's bug: RangeError. */
  str(value: string, maxBytes: number): this {
    const bytes = Buffer.from(value, "utf8");
    if (bytes.length > maxBytes) throw new RangeError(`string of ${bytes.length} bytes over its limit of ${maxBytes}`);
    return this.u16(bytes.length).raw(bytes);
  }

  bytes(value: Uint8Array, maxBytes: number): this {
    if (value.length > maxBytes) throw new RangeError(`${value.length} bytes over the limit of ${maxBytes}`);
    return this.u16(value.length).raw(value);
  }

  finish(): Buffer {
    return this.buffer.subarray(0, this.offset);
  }
}
