/**
 * The real admin API (hono app) over a TestCp, driven in process with `app.request()`, plus the
 * few helpers route tests need: a JSON-aware `call`, `loginAs`, and `snapshotDb`, which proves
 * that a refused request changed nothing in either database.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Hono } from "hono";
import { type Kysely, sql } from "kysely";
import { createAdminApp } from "../../src/cp/admin/app.js";
import type { AdminEnv } from "../../src/cp/admin/env.js";
import type { CpContext } from "../../src/cp/services/context.js";
import { isSetupComplete } from "../../src/cp/services/setup/setup.js";
import type { TestCp } from "./cp-context.js";

export type AdminApp = Hono<AdminEnv>;

export interface TestAdminApp {
  app: AdminApp;
  /** The flag the setup gate reads; flipped by onSetupComplete. */
  setupComplete(): boolean;
  /** How many times the app called onSetupComplete. */
  setupCompleteCalls(): number;
}

/** Builds the admin app the way the CP does: the gate flag starts from the DB and flips once setup commits. */
export async function buildAdminApp(cp: Pick<TestCp, "ctx">): Promise<TestAdminApp> {
  let complete = await isSetupComplete(cp.ctx);
  let calls = 0;
  const app = createAdminApp(cp.ctx, {
    isSetupComplete: () => complete,
    onSetupComplete: async () => {
      calls += 1;
      complete = true;
    },
  });
  return { app, setupComplete: () => complete, setupCompleteCalls: () => calls };
}

export interface CallOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Serialised with JSON.stringify and sent as application/json. */
  body?: unknown;
  /** Sent as is (no content type added unless given in headers). */
  rawBody?: string | Uint8Array | ReadableStream<Uint8Array>;
  headers?: Record<string, string>;
  /** The peer address the app sees (as @hono/node-server would report it); null when omitted. */
  ip?: string;
}

export interface CallResult {
  status: number;
  /** The parsed JSON body, or undefined when the body is empty or not JSON. */
  json: unknown;
  text: string;
  headers: Headers;
}

export async function call(app: AdminApp, method: string, path: string, options: CallOptions = {}): Promise<CallResult> {
  const headers: Record<string, string> = {};
  let body: RequestInit["body"];
  if (options.body !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  if (options.rawBody !== undefined) body = options.rawBody as RequestInit["body"];
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  Object.assign(headers, options.headers ?? {});
  const init: RequestInit & { duplex?: "half" } = { method, headers };
  if (body !== undefined) init.body = body;
  if (options.rawBody instanceof ReadableStream) init.duplex = "half";
  const env = options.ip ? { incoming: { socket: { remoteAddress: options.ip } } as unknown as IncomingMessage } : undefined;
  const res = await app.request(path, init, env);
  const text = await res.text();
  let json: unknown;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, headers: res.headers };
}

export interface Tokens {
  access_token: string;
  refresh_token: string;
}

/** Logs in through the API and fails loudly when that does not work. */
export async function loginAs(app: AdminApp, username: string, password: string): Promise<Tokens> {
  const res = await call(app, "POST", "/admin/v1/auth/login", { body: { username, password } });
  if (res.status !== 200) throw new Error(`login as ${username} failed: ${res.status} ${res.text}`);
  const tokens = res.json as Tokens;
  if (typeof tokens.access_token !== "string" || typeof tokens.refresh_token !== "string")
    throw new Error(`login as ${username}: no tokens in ${res.text}`);
  return tokens;
}

/** Tables that legitimately grow with every request (refusals are audited and logged). */
export const LOG_TABLES: ReadonlySet<string> = new Set(["agent_login_logs", "agent_audit_logs"]);

export interface TableSnapshot {
  rows: number;
  /** SHA-256 over every row (order-independent). */
  hash: string;
}

/** Row count and content hash of every table in the Control DB and the Runtime DB, log tables excepted. */
export type DbSnapshot = Record<string, TableSnapshot>;

export async function snapshotDb(ctx: Pick<CpContext, "controlDb" | "runtimeDb">): Promise<DbSnapshot> {
  const [control, runtime] = await Promise.all([
    snapshotOne(ctx.controlDb as Kysely<unknown>, "control"),
    snapshotOne(ctx.runtimeDb as Kysely<unknown>, "runtime"),
  ]);
  return { ...control, ...runtime };
}

async function snapshotOne(db: Kysely<unknown>, label: string): Promise<DbSnapshot> {
  const tables = (await db.introspection.getTables({ withInternalKyselyTables: true }))
    .map((t) => t.name)
    .filter((n) => !LOG_TABLES.has(n));
  if (tables.length === 0) throw new Error(`${label} DB has no tables: not migrated?`);
  const entries = await Promise.all(
    tables.map(async (name): Promise<[string, TableSnapshot]> => {
      const { rows } = await sql<Record<string, unknown>>`select * from ${sql.table(name)}`.execute(db);
      const lines = rows.map(canonicalRow).sort();
      const hash = createHash("sha256");
      for (const line of lines) hash.update(line).update("\n");
      return [`${label}.${name}`, { rows: rows.length, hash: hash.digest("hex") }];
    }),
  );
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : 1)));
}

function canonicalRow(row: Record<string, unknown>): string {
  const keys = Object.keys(row).sort();
  return JSON.stringify(
    keys.map((k) => {
      const v = row[k];
      if (Buffer.isBuffer(v) || v instanceof Uint8Array) return [k, `hex:${Buffer.from(v).toString("hex")}`];
      if (typeof v === "bigint") return [k, `big:${v.toString()}`];
      if (v instanceof Date) return [k, `date:${v.toISOString()}`];
      return [k, v];
    }),
  );
}

type JsonObject = Record<string, unknown>;

/** The answer's body, which must be a JSON object. */
export function jsonObject(res: CallResult): JsonObject {
  assert.ok(typeof res.json === "object" && res.json !== null && !Array.isArray(res.json), `expected a JSON object: ${res.text}`);
  return res.json as JsonObject;
}

/** Asserts the status and a JSON object body; returns the body. */
export function expectOk(res: CallResult, status: number, label: string): JsonObject {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
  return jsonObject(res);
}

/** The one error shape (error, message, details only), never a 500; `names` must appear in the message. */
export function expectRefused(res: CallResult, status: number, code: string, label: string, names?: string): JsonObject {
  const shown = `${label}: got ${res.status} ${res.text.slice(0, 400)}`;
  assert.equal(res.status, status, shown);
  const body = jsonObject(res);
  assert.equal(body.error, code, shown);
  assert.equal(typeof body.message, "string", shown);
  for (const key of Object.keys(body)) assert.ok(["error", "message", "details"].includes(key), `${shown}: unexpected key ${key}`);
  if (names) assert.ok((body.message as string).includes(names), `${shown}: the message does not name ${names}`);
  return body;
}
