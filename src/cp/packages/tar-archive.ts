/**
 * A small, pure POSIX ustar writer (plus gzip from node:zlib) for deploy packages, and the reader
 * for what it writes. Pure so the bytes depend only on the entries and the given mtime, and
 * testable against the system `tar`. Only what packages need: regular files and directories,
 * explicit modes, uid/gid 0, names up to 100 characters (or 255 with a ustar prefix split at a
 * slash).
 */
import { gunzipSync, gzipSync } from "node:zlib";

export interface TarFile {
  type: "file";
  /** Relative path inside the archive, "/"-separated, no "..". */
  path: string;
  /** Permission bits, e.g. 0o600 for keys, 0o644 otherwise. */
  mode: number;
  content: Buffer;
}

export interface TarDirectory {
  type: "directory";
  path: string;
  mode: number;
}

export type TarEntry = TarFile | TarDirectory;

const BLOCK_BYTES = 512;
/** GNU and BSD tar write archives in 20-block records; padding to one keeps old readers quiet. */
const RECORD_BYTES = 20 * BLOCK_BYTES;
const NAME_FIELD_BYTES = 100;
const PREFIX_FIELD_BYTES = 155;
/** 11 octal digits: the largest size a classic ustar header can state (8 GiB - 1). */
const MAX_OCTAL_11 = 0o77777777777;
const SAFE_PATH_CHARS = /^[A-Za-z0-9._\-/]+$/;

/** A tar archive of `entries` in the given order; every header carries `mtimeMs` (rounded down to seconds). */
export function createTar(entries: readonly TarEntry[], mtimeMs: number): Buffer {
  assertUniquePaths(entries);
  const mtime = Math.floor(mtimeMs / 1000);
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const content = entry.type === "file" ? entry.content : Buffer.alloc(0);
    parts.push(tarHeader(entry, content.length, mtime));
    if (content.length > 0) parts.push(content, Buffer.alloc(padding(content.length, BLOCK_BYTES)));
  }
  parts.push(Buffer.alloc(2 * BLOCK_BYTES));
  const body = Buffer.concat(parts);
  return Buffer.concat([body, Buffer.alloc(padding(body.length, RECORD_BYTES))]);
}

/** createTar, gzip-compressed (node:zlib writes mtime 0 in the gzip header, so output is reproducible). */
export function createTarGz(entries: readonly TarEntry[], mtimeMs: number): Buffer {
  return gzipSync(createTar(entries, mtimeMs), { level: 9 });
}

/**
 * The entries of a ustar archive, in order. Reads regular files and directories (what createTar
 * writes, and what GNU tar writes for them); refuses anything else — links, devices, pax or GNU
 * extension headers, a bad checksum, a truncated body, a path that is absolute or climbs out
 * with "..", a duplicate path — with a TypeError, so an archive is either read whole or not at all.
 */
export function readTar(archive: Buffer): TarEntry[] {
  const entries: TarEntry[] = [];
  const seen = new Set<string>();
  for (let offset = 0; offset + BLOCK_BYTES <= archive.length; ) {
    const header = archive.subarray(offset, offset + BLOCK_BYTES);
    // Two zero blocks end the archive; one is enough to stop (old writers sometimes wrote one).
    if (header.every((byte) => byte === 0)) return entries;
    checkHeaderChecksum(header, offset);
    const magic = header.subarray(257, 263).toString("latin1");
    if (magic !== "ustar\0" && magic !== "ustar ") throw new TypeError(`not a ustar header at byte ${offset}`);
    const type = String.fromCharCode(header[156] ?? 0);
    const prefix = readString(header, 345, PREFIX_FIELD_BYTES);
    const name = readString(header, 0, NAME_FIELD_BYTES);
    const path = checkPath(prefix ? `${prefix}/${name}` : name);
    if (seen.has(path)) throw new TypeError(`duplicate tar entry: ${path}`);
    seen.add(path);
    const mode = readOctal(header, 100, 8, path) & 0o7777;
    const size = readOctal(header, 124, 12, path);
    const start = offset + BLOCK_BYTES;
    if (type === "5") {
      entries.push({ type: "directory", path, mode });
    } else if (type === "0" || type === "\0") {
      if (start + size > archive.length) throw new TypeError(`tar entry ${path} is truncated`);
      entries.push({ type: "file", path, mode, content: Buffer.from(archive.subarray(start, start + size)) });
    } else {
      throw new TypeError(`tar entry ${path} has type ${JSON.stringify(type)}: only files and directories are read`);
    }
    offset = start + (type === "5" ? 0 : size + padding(size, BLOCK_BYTES));
  }
  throw new TypeError("tar archive ends without its end-of-archive block");
}

/** readTar of a gzip-compressed archive. */
export function readTarGz(archive: Buffer): TarEntry[] {
  return readTar(gunzipSync(archive));
}

function checkHeaderChecksum(header: Buffer, offset: number): void {
  const stored = Number.parseInt(readString(header, 148, 8).trim(), 8);
  let sum = 0;
  for (let i = 0; i < BLOCK_BYTES; i++) sum += i >= 148 && i < 156 ? 0x20 : (header[i] ?? 0);
  if (stored !== sum) throw new TypeError(`tar header checksum mismatch at byte ${offset}`);
}

/** A NUL-terminated (or field-filling) ASCII field. */
function readString(header: Buffer, offset: number, length: number): string {
  const field = header.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? length : end).toString("latin1");
}

function readOctal(header: Buffer, offset: number, length: number, path: string): number {
  const text = readString(header, offset, length).trim();
  if (!/^[0-7]{1,11}$/.test(text)) throw new TypeError(`tar entry ${path} has an invalid octal field at ${offset}`);
  return Number.parseInt(text, 8);
}

function padding(length: number, unit: number): number {
  return (unit - (length % unit)) % unit;
}

function assertUniquePaths(entries: readonly TarEntry[]): void {
  const seen = new Set<string>();
  for (const entry of entries) {
    const path = checkPath(entry.path);
    if (seen.has(path)) throw new TypeError(`duplicate tar entry: ${path}`);
    seen.add(path);
  }
}

// A package is extracted by operators wherever they like: nothing may escape the target
// directory, and the names are ours, so a conservative character set costs nothing.
function checkPath(path: string): string {
  const trimmed = path.endsWith("/") ? path.slice(0, -1) : path;
  const segments = trimmed.split("/");
  if (trimmed.length === 0 || !SAFE_PATH_CHARS.test(trimmed) || segments.some((s) => s === "" || s === "." || s === "..")) {
    throw new TypeError(`invalid tar entry path: ${JSON.stringify(path)}`);
  }
  return trimmed;
}

function tarHeader(entry: TarEntry, size: number, mtime: number): Buffer {
  if (!Number.isInteger(entry.mode) || entry.mode < 0 || entry.mode > 0o7777) throw new TypeError(`invalid mode for ${entry.path}`);
  if (size > MAX_OCTAL_11) throw new TypeError(`file too large for ustar: ${entry.path}`);
  const path = checkPath(entry.path) + (entry.type === "directory" ? "/" : "");
  const { name, prefix } = splitName(path);
  const header = Buffer.alloc(BLOCK_BYTES);
  writeString(header, 0, NAME_FIELD_BYTES, name);
  writeOctal(header, 100, 8, entry.mode);
  writeOctal(header, 108, 8, 0); // uid
  writeOctal(header, 116, 8, 0); // gid
  writeOctal(header, 124, 12, size);
  writeOctal(header, 136, 12, mtime);
  header.fill(0x20, 148, 156); // checksum field counts as spaces while summing
  writeString(header, 156, 1, entry.type === "directory" ? "5" : "0");
  writeString(header, 257, 6, "ustar\0");
  writeString(header, 263, 2, "00");
  writeString(header, 265, 32, "root");
  writeString(header, 297, 32, "root");
  writeOctal(header, 329, 8, 0); // devmajor
  writeOctal(header, 337, 8, 0); // devminor
  writeString(header, 345, PREFIX_FIELD_BYTES, prefix);
  const checksum = header.reduce((sum, byte) => sum + byte, 0);
  // Six octal digits, NUL, space: the layout every tar since V7 expects.
  writeString(header, 148, 8, `${checksum.toString(8).padStart(6, "0")}\0 `);
  return header;
}

/** Fits a path into name (100) or prefix (155) + "/" + name, splitting at a slash. */
function splitName(path: string): { name: string; prefix: string } {
  if (path.length <= NAME_FIELD_BYTES) return { name: path, prefix: "" };
  // A directory's trailing slash belongs to the name part.
  const body = path.endsWith("/") ? path.slice(0, -1) : path;
  for (let cut = body.indexOf("/"); cut !== -1; cut = body.indexOf("/", cut + 1)) {
    const prefix = body.slice(0, cut);
    const name = path.slice(cut + 1);
    if (prefix.length <= PREFIX_FIELD_BYTES && name.length <= NAME_FIELD_BYTES && name.length > 0) return { name, prefix };
  }
  throw new TypeError(`tar entry path too long for ustar: ${path}`);
}

function writeString(header: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, "ascii");
  if (bytes.length > length) throw new TypeError(`tar header field overflow: ${value}`);
  bytes.copy(header, offset);
}

/** Zero-padded octal, length-1 digits, NUL-terminated. */
function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  writeString(header, offset, length, `${value.toString(8).padStart(length - 1, "0")}\0`);
}
