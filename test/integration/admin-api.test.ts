/**
 * The admin API in process (`app.request()`), on SQLite and on PostgreSQL: the setup gate and
 * initialize, hostile input on every state-changing endpoint (nothing may change, nothing may
 * be a 500), unknown routes and ids, pagination, roles on every route, the audit trail,
 * sessions, login throttling and secrets in logs.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { consoleTokenPath, prepareConsoleToken } from "../../src/cp/services/setup/setup.js";
import { CA_PROFILES } from "../../src/shared/pki/index.js";
import {
  type AdminApp,
  buildAdminApp,
  type CallOptions,
  type CallResult,
  call,
  type DbSnapshot,
  loginAs,
  snapshotDb,
  type TestAdminApp,
  type Tokens,
} from "../helpers/admin-app.js";
import { completeSetup, createTestCp, ROOT_PASSWORD, ROOT_USERNAME, type TestCp } from "../helpers/cp-context.js";
import { dbVariants } from "../helpers/databases.js";

type Obj = Record<string, unknown>;
type Role = "root" | "admin" | "operator";

const V1 = "/admin/v1";
const MAX_BODY = 64 * 1024;
const MINUTE = 60_000;
const WWW_AUTHENTICATE = 'Bearer realm="authnexus-admin"';

const ADMIN_PASSWORD = "Admin-Passw0rd-Alpha";
const OPERATOR_PASSWORD = "Operator-Passw0rd-Beta";
const TARGET_PASSWORD = "Target-Passw0rd-Gamma";
const NEVER_APPLIED_PASSWORD = "Never-Applied-Pass-9";
/** The root password of the setup suite: every metacharacter the matrix throws at names. */
const SETUP_ROOT_PASSWORD = "Setup ' OR '1'='1 \"; DROP TABLE agents; -- \\ ` \u0000 \r\n end";

/** Inserted into the middle of every non-password string field: refused by policy, never a 500. */
const METACHARACTERS: ReadonlyArray<readonly [string, string]> = [
  ["single quote OR", "' OR '1'='1"],
  ["double quote DROP TABLE", '"; DROP TABLE agents; --'],
  ["backslash", "\\"],
  ["backtick", "`"],
  ["NUL", "\u0000"],
  ["CR/LF", "\r\n"],
];

// ---------------------------------------------------------------------------------------------
// Small helpers

function isObj(value: unknown): value is Obj {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function body(res: CallResult): Obj {
  assert.ok(isObj(res.json), `expected a JSON object, got ${res.status} ${res.text.slice(0, 300)}`);
  return res.json;
}

/** The one error shape: {error, message} (plus the field list of a validation failure), no stack, never a 500. */
function assertError(res: CallResult, status: number, code: string, label: string): Obj {
  const shown = `${label}: got ${res.status} ${res.text.slice(0, 400)}`;
  assert.notEqual(res.status, 500, shown);
  assert.equal(res.status, status, shown);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/, shown);
  const json = body(res);
  assert.equal(json.error, code, shown);
  assert.equal(typeof json.message, "string", shown);
  assert.ok((json.message as string).length > 0, shown);
  for (const key of Object.keys(json)) assert.ok(["error", "message", "details"].includes(key), `${shown}: unexpected key ${key}`);
  assert.doesNotMatch(res.text, /\bat .+\(.+:\d+:\d+\)|node_modules|\.ts:\d+|\/src\/|"stack"/, `${shown}: looks like a stack trace`);
  assert.match(res.headers.get("x-request-id") ?? "", /^[A-Za-z0-9._-]{1,64}$/, `${shown}: X-Request-Id`);
  return json;
}

function assertOk(res: CallResult, status: number, label: string): void {
  assert.equal(res.status, status, `${label}: got ${res.status} ${res.text.slice(0, 400)}`);
}

function getAt(value: unknown, path: string): unknown {
  let cur: unknown = value;
  for (const part of path.split(".")) cur = (cur as Record<string, unknown>)[part];
  return cur;
}

function setAt(value: Obj, path: string, next: unknown): Obj {
  const copy = structuredClone(value);
  const parts = path.split(".");
  let cur: Record<string, unknown> = copy;
  for (const part of parts.slice(0, -1)) cur = cur[part] as Record<string, unknown>;
  cur[parts[parts.length - 1] ?? ""] = next;
  return copy;
}

function insertMiddle(text: string, insert: string): string {
  const at = Math.max(1, Math.floor(text.length / 2));
  return `${text.slice(0, at)}${insert}${text.slice(at)}`;
}

function streamOf(bytes: Uint8Array, chunk = 8192): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < bytes.length; i += chunk) controller.enqueue(bytes.slice(i, i + chunk));
      controller.close();
    },
  });
}

/** `{...base, evil_pad: "xxx"}` serialised to exactly `bytes` bytes. */
function paddedJson(base: Obj, bytes: number, padChar = "x"): string {
  const head = JSON.stringify({ ...base, evil_pad: "" }).slice(0, -2);
  const room = bytes - Buffer.byteLength(head) - 2;
  const charBytes = Buffer.byteLength(padChar);
  const pad = padChar.repeat(Math.floor(room / charBytes)) + "x".repeat(room % charBytes);
  const text = `${head}${pad}"}`;
  assert.equal(Buffer.byteLength(text), bytes);
  return text;
}

async function expectUnchanged(cp: TestCp, baseline: DbSnapshot, label: string): Promise<void> {
  assert.deepEqual(await snapshotDb(cp.ctx), baseline, `${label}: the database changed`);
}

/**
 * Runs every case and fails once at the end listing all failing ones, so one report shows the
 * whole extent of a problem rather than its first instance.
 */
async function everyCase<T>(cases: readonly T[], run: (c: T) => Promise<void>): Promise<void> {
  const failures: string[] = [];
  for (const c of cases) {
    try {
      await run(c);
    } catch (error) {
      failures.push(error instanceof Error ? (error.message.split("\n")[0] ?? "") : String(error));
    }
  }
  assert.equal(failures.length, 0, `${failures.length} of ${cases.length} cases failed:\n  ${failures.join("\n  ")}`);
}

function logEvents(cp: TestCp): Obj[] {
  return cp.logLines.map((line) => JSON.parse(line) as Obj);
}

/** Every form a secret could take in a JSON log line (raw, JSON-escaped, CR/LF-escaped by the logger). */
function secretForms(secret: string): string[] {
  const sanitised = secret.replace(/\r/g, "\\r").replace(/\n/g, "\\n");
  return [...new Set([secret, JSON.stringify(secret).slice(1, -1), sanitised, JSON.stringify(sanitised).slice(1, -1)])];
}

function assertNoSecretsLogged(cp: TestCp, secrets: Iterable<string>): void {
  const all = cp.logLines.join("\n");
  let checked = 0;
  for (const secret of secrets) {
    checked += 1;
    for (const form of secretForms(secret)) {
      assert.ok(!all.includes(form), `a secret (${JSON.stringify(secret.slice(0, 6))}…) appears in the logs`);
    }
  }
  assert.ok(checked > 5, "the secrets list is unexpectedly short");
  assert.ok(cp.logLines.length > 10, "expected the access log to have lines");
}

// ---------------------------------------------------------------------------------------------
// The bad-input matrix

type FieldKind = "string" | "password" | "login-username" | "array" | "object";

interface FieldSpec {
  /** Dotted path into the body ("ca_common_names.cp_server_ca", "cp_public_hosts.0"). */
  path: string;
  kind: FieldKind;
  nullable?: boolean;
}

interface EndpointSpec {
  method: string;
  /** For test names. */
  route: string;
  path(): string;
  token(): string | undefined;
  /** A valid body: sending it would change the database (or, for initialize after setup, be refused). */
  base(): Obj;
  fields: FieldSpec[];
}

interface MatrixCase {
  label: string;
  rawBody: string | Uint8Array | ReadableStream<Uint8Array>;
  headers: Record<string, string>;
  status: number;
  code: string;
  /** The message must name this field. */
  names?: string;
}

const JSON_TYPE = { "content-type": "application/json" };

function wrongTypeValues(field: FieldSpec): unknown[] {
  const common =
    field.kind === "array"
      ? ["cp.example.test", 7, true, {}]
      : field.kind === "object"
        ? ["My CA", 7, true, [], { bogus_ca: "x" }]
        : [123, 1.5, true, false, ["x"], {}];
  return field.nullable ? common : [...common, null];
}

function matrixCases(spec: EndpointSpec, category: string): MatrixCase[] {
  const base = spec.base();
  const baseText = JSON.stringify(base);
  const json = (label: string, rawBody: string, status: number, code: string, names?: string): MatrixCase => ({
    label,
    rawBody,
    headers: { ...JSON_TYPE },
    status,
    code,
    ...(names ? { names } : {}),
  });
  switch (category) {
    case "malformed":
      return [
        json("unterminated object", "{", 400, "MALFORMED_JSON"),
        json("trailing comma", baseText.replace(/}$/, ",}"), 400, "MALFORMED_JSON"),
        json("plain text", "not json at all", 400, "MALFORMED_JSON"),
        json("single quotes", "{'username': 'root'}", 400, "MALFORMED_JSON"),
        json("trailing garbage", `${baseText}}`, 400, "MALFORMED_JSON"),
        json("bad escape", '{"a":"\\x41"}', 400, "MALFORMED_JSON"),
        json("a lone NUL", "\u0000", 400, "MALFORMED_JSON"),
        {
          label: "invalid UTF-8",
          rawBody: new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
          headers: { ...JSON_TYPE },
          status: 400,
          code: "MALFORMED_JSON",
        },
      ];
    case "not-object":
      return [
        json("array", "[]", 400, "VALIDATION_FAILED"),
        json("array of the valid body", `[${baseText}]`, 400, "VALIDATION_FAILED"),
        json("string", '"root"', 400, "VALIDATION_FAILED"),
        json("number", "42", 400, "VALIDATION_FAILED"),
        json("boolean", "true", 400, "VALIDATION_FAILED"),
        json("null", "null", 400, "VALIDATION_FAILED"),
        // Refused while parsing, before anything recurses over it (JSON.stringify of it overflowed the stack).
        json("30000-deep array", `${"[".repeat(30000)}${"]".repeat(30000)}`, 400, "JSON_TOO_DEEP"),
        json(
          "65-deep object under a valid field",
          `${baseText.slice(0, -1)},"x":${'{"a":'.repeat(64)}1${"}".repeat(64)}}`,
          400,
          "JSON_TOO_DEEP",
        ),
      ];
    case "unknown-field":
      return [
        json("extra field", JSON.stringify({ ...base, evil_field: 1 }), 400, "VALIDATION_FAILED", "evil_field"),
        json("__proto__", `${baseText.slice(0, -1)},"__proto__":{"role":"root","is_admin":true}}`, 400, "VALIDATION_FAILED", "__proto__"),
        json(
          "constructor",
          `${baseText.slice(0, -1)},"constructor":{"prototype":{"role":"root"}}}`,
          400,
          "VALIDATION_FAILED",
          "constructor",
        ),
        json("field name with CR/LF", JSON.stringify({ ...base, "evil\r\nfield": "x" }), 400, "VALIDATION_FAILED", "evil"),
      ];
    case "wrong-types":
      return spec.fields.flatMap((field) =>
        wrongTypeValues(field).map((value) =>
          json(
            `${field.path} = ${JSON.stringify(value)}`,
            JSON.stringify(setAt(base, field.path, value)),
            400,
            "VALIDATION_FAILED",
            field.path.split(".")[0],
          ),
        ),
      );
    case "content-type": {
      const types = [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/json-patch+json",
        "text/json",
      ];
      return [
        ...types.map((type) => ({
          label: `content-type ${type}`,
          rawBody: baseText,
          headers: { "content-type": type },
          status: 415,
          code: "UNSUPPORTED_MEDIA_TYPE",
        })),
        { label: "no content-type", rawBody: new TextEncoder().encode(baseText), headers: {}, status: 415, code: "UNSUPPORTED_MEDIA_TYPE" },
      ];
    }
    case "size": {
      const over = paddedJson(base, MAX_BODY + 1);
      const overBytes = new TextEncoder().encode(over);
      const multiByte = paddedJson(base, MAX_BODY + 3, "€"); // fewer than 64 Ki characters, more than 64 KiB
      assert.ok(multiByte.length < MAX_BODY);
      return [
        { label: "64 KiB + 1, no content-length", rawBody: over, headers: { ...JSON_TYPE }, status: 413, code: "BODY_TOO_LARGE" },
        {
          label: "64 KiB + 1, honest content-length",
          rawBody: over,
          headers: { ...JSON_TYPE, "content-length": String(overBytes.length) },
          status: 413,
          code: "BODY_TOO_LARGE",
        },
        {
          label: "tiny body, content-length claiming 1 GB",
          rawBody: baseText,
          headers: { ...JSON_TYPE, "content-length": "1000000000" },
          status: 413,
          code: "BODY_TOO_LARGE",
        },
        {
          label: "64 KiB + 1 as a stream, no content-length",
          rawBody: streamOf(overBytes),
          headers: { ...JSON_TYPE },
          status: 413,
          code: "BODY_TOO_LARGE",
        },
        {
          label: "1 MiB as a chunked stream",
          rawBody: streamOf(new Uint8Array(1024 * 1024).fill(0x20)),
          headers: { ...JSON_TYPE, "transfer-encoding": "chunked" },
          status: 413,
          code: "BODY_TOO_LARGE",
        },
        { label: "multi-byte characters over 64 KiB", rawBody: multiByte, headers: { ...JSON_TYPE }, status: 413, code: "BODY_TOO_LARGE" },
        {
          label: "exactly 64 KiB is read (and refused for its unknown field)",
          rawBody: paddedJson(base, MAX_BODY),
          headers: { ...JSON_TYPE },
          status: 400,
          code: "VALIDATION_FAILED",
          names: "evil_pad",
        },
      ];
    }
    case "metacharacters":
      return spec.fields
        .filter((field) => field.kind === "string" || field.kind === "login-username")
        .flatMap((field) =>
          METACHARACTERS.map(([name, meta]) => {
            const original = getAt(base, field.path);
            assert.equal(typeof original, "string", `${spec.route} base has no string at ${field.path}`);
            // Login accepts any username shape, so there the classic payload is appended ("root' OR
            // '1'='1" with root's real password would log in if it reached SQL as text); CR/LF goes in
            // the middle because login trims usernames. Elsewhere the payload sits mid-value.
            const login = field.kind === "login-username";
            const value = login && meta.trim() !== "" ? `${original as string}${meta}` : insertMiddle(original as string, meta);
            const rawBody = JSON.stringify(setAt(base, field.path, value));
            return login
              ? json(`${name} in ${field.path}`, rawBody, 401, "INVALID_CREDENTIALS")
              : json(`${name} in ${field.path}`, rawBody, 400, "VALIDATION_FAILED", field.path.split(".")[0]);
          }),
        );
    default:
      throw new Error(`unknown category ${category}`);
  }
}

const MATRIX_CATEGORIES: ReadonlyArray<readonly [string, string]> = [
  ["malformed", "malformed JSON → 400 MALFORMED_JSON"],
  ["not-object", "a JSON array, string, number, boolean or null → 400 VALIDATION_FAILED"],
  ["unknown-field", "unknown fields → 400 VALIDATION_FAILED naming the field"],
  ["wrong-types", "wrong field types → 400 VALIDATION_FAILED naming the field"],
  ["content-type", "a body that is not application/json → 415"],
  ["size", "a body over 64 KiB → 413, however its length is (mis)declared"],
  ["metacharacters", "SQL metacharacters, NUL and CR/LF in string fields → 4xx"],
];

function defineMatrix(specs: EndpointSpec[], env: () => { app: AdminApp; cp: TestCp }): void {
  for (const spec of specs) {
    for (const [category, title] of MATRIX_CATEGORIES) {
      if (category === "metacharacters" && !spec.fields.some((f) => f.kind === "string" || f.kind === "login-username")) continue; // passwords: see the password test
      it(`${spec.method} ${spec.route}: ${title}; nothing changes`, async () => {
        const { app, cp } = env();
        const cases = matrixCases(spec, category);
        assert.ok(cases.length > 0);
        let baseline = await snapshotDb(cp.ctx);
        await everyCase(cases, async (c) => {
          const label = `${spec.method} ${spec.route} [${c.label}]`;
          const token = spec.token();
          const res = await call(app, spec.method, spec.path(), { rawBody: c.rawBody, headers: c.headers, ...(token ? { token } : {}) });
          const after = await snapshotDb(cp.ctx);
          const changed = JSON.stringify(after) !== JSON.stringify(baseline);
          baseline = after; // one change is reported once, not by every later case
          const json = assertError(res, c.status, c.code, label);
          if (c.names)
            assert.ok(
              (json.message as string).includes(c.names),
              `${label}: message ${JSON.stringify(json.message)} does not name ${c.names}`,
            );
          assert.ok(!changed, `${label}: the database changed`);
        });
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Roles

interface RouteCase {
  method: string;
  template: string;
  path(): string;
  body?: unknown;
  /** Who passes the permission check; "public" routes need no token. */
  allowed: readonly Role[] | "public";
  /** What an allowed caller gets (a 4xx for a body or id chosen to fail after the permission check). */
  status: number;
  code?: string;
}

const ALL_ROLES: readonly Role[] = ["root", "admin", "operator"];
const WRITERS: readonly Role[] = ["root", "admin"];
const ROOT_ONLY: readonly Role[] = ["root"];
const MISSING = {
  agent: "agt_doesNotExist000000000",
  app: "app_doesNotExist000000000",
  cert: "crt_doesNotExist000000000",
  node: "nod_doesNotExist000000000",
  job: "job_doesNotExist000000000",
  pkg: "pkg_doesNotExist000000000",
  command: "cmd_doesNotExist000000000",
  user: "usr_doesNotExist000000000",
  card: "crd_doesNotExist000000000",
  batch: "cbt_doesNotExist000000000",
  invite: "inv_doesNotExist000000000",
  session: "ses_doesNotExist000000000",
  rotation: "car_doesNotExist000000000",
};

// ---------------------------------------------------------------------------------------------

for (const variant of dbVariants()) {
  describe(`admin API on ${variant.name}`, { skip: variant.skip }, () => {
    /** Every password, token and app secret this suite handles: none may reach a log line. */
    const secrets = new Set<string>([
      ROOT_PASSWORD,
      ADMIN_PASSWORD,
      OPERATOR_PASSWORD,
      TARGET_PASSWORD,
      NEVER_APPLIED_PASSWORD,
      SETUP_ROOT_PASSWORD,
    ]);
    const keep = (tokens: Tokens): Tokens => {
      secrets.add(tokens.access_token);
      secrets.add(tokens.refresh_token);
      return tokens;
    };
    const login = async (app: AdminApp, username: string, password: string) => keep(await loginAs(app, username, password));

    after(() => variant.cleanup());

    // -------------------------------------------------------------------------------------------
    describe("first-run setup", () => {
      let cp: TestCp;
      let admin: TestAdminApp;
      let consoleToken: string;
      const wrongToken = "W".repeat(43);
      const setupBody = () => ({
        console_token: consoleToken,
        admin_username: "setup-root",
        admin_password: SETUP_ROOT_PASSWORD,
        organisation_name: "Acme Test Org",
        ca_common_names: { cp_server_ca: "Acme CP Server CA" },
        cp_public_hosts: ["cp.example.test", "10.0.0.7"],
      });

      before(async () => {
        cp = await createTestCp(variant, "adm_setup");
        admin = await buildAdminApp(cp);
        const prepared = await prepareConsoleToken(cp.ctx);
        assert.ok(prepared.token);
        consoleToken = prepared.token;
        secrets.add(consoleToken);
        secrets.add(wrongToken);
      });
      after(() => cp.close());

      it("before setup only /admin/v1/setup/* answers; everything else is 503 SETUP_REQUIRED", async () => {
        assert.equal(admin.setupComplete(), false, "the gate flag starts from the DB");
        const status = await call(admin.app, "GET", `${V1}/setup/status`);
        assertOk(status, 200, "setup/status");
        assert.deepEqual(status.json, { requires_setup: true });

        const gated: Array<[string, string, CallOptions?]> = [
          ["GET", `${V1}/agents`],
          ["POST", `${V1}/agents`, { body: { username: "x-agent", password: ADMIN_PASSWORD, role: "root" } }],
          ["POST", `${V1}/auth/login`, { body: { username: ROOT_USERNAME, password: ROOT_PASSWORD } }],
          ["POST", `${V1}/auth/refresh`, { body: { refresh_token: "A".repeat(43) } }],
          ["GET", `${V1}/auth/me`, { token: "A".repeat(43) }],
          ["GET", `${V1}/applications`],
          ["GET", `${V1}/pki/cas`],
          ["GET", `${V1}/pki/certs`],
          ["GET", `${V1}/agent-audit-logs`],
          ["GET", `${V1}/nope`],
          ["GET", "/admin/v2/x"],
          ["GET", "/"],
          ["GET", `${V1}/setup`],
          ["GET", `${V1}/setupx/status`],
          ["GET", `${V1}/SETUP/status`],
          ["GET", `${V1}/setup/../agents`],
          ["GET", `${V1}/setup/%2e%2e/agents`],
          ["GET", `/admin/v1//setup/status`],
        ];
        for (const [method, path, options] of gated)
          assertError(await call(admin.app, method, path, options), 503, "SETUP_REQUIRED", `${method} ${path}`);
        // Past the gate but not a route: still nothing served.
        for (const path of [`${V1}/setup/nope`, `${V1}/setup/..%2Fagents`])
          assertError(await call(admin.app, "GET", path), 404, "ROUTE_NOT_FOUND", path);
        assert.equal(admin.setupCompleteCalls(), 0);
      });

      it("initialize with a wrong console token → 403 SETUP_TOKEN_INVALID, logged under Setup, nothing changes", async () => {
        const baseline = await snapshotDb(cp.ctx);
        const rejectedBefore = logEvents(cp).filter((e) => e.category === "Setup" && e.msg === "setup.token_rejected").length;
        for (const token of [wrongToken, `${consoleToken.slice(0, -1)}${consoleToken.endsWith("A") ? "B" : "A"}`]) {
          const res = await call(admin.app, "POST", `${V1}/setup/initialize`, { body: { ...setupBody(), console_token: token } });
          assertError(res, 403, "SETUP_TOKEN_INVALID", "wrong console token");
          await expectUnchanged(cp, baseline, "wrong console token");
        }
        const rejected = logEvents(cp).filter((e) => e.category === "Setup" && e.msg === "setup.token_rejected");
        assert.equal(rejected.length, rejectedBefore + 2, "one Setup/setup.token_rejected line per refusal");
        assert.equal(admin.setupCompleteCalls(), 0);
        assert.equal(admin.setupComplete(), false);
        assertOk(await call(admin.app, "GET", `${V1}/setup/status`), 200, "status");
        assert.deepEqual((await call(admin.app, "GET", `${V1}/setup/status`)).json, { requires_setup: true });
      });

      it("initialize with a weak admin password → 400 WEAK_PASSWORD; the token stays usable", async () => {
        const baseline = await snapshotDb(cp.ctx);
        for (const weak of ["short1!", "aaaaaaaaaaaaaaaa", "xx-setup-root-xx-1234"]) {
          const res = await call(admin.app, "POST", `${V1}/setup/initialize`, { body: { ...setupBody(), admin_password: weak } });
          assertError(res, 400, "WEAK_PASSWORD", `weak password ${weak}`);
          await expectUnchanged(cp, baseline, "weak password");
        }
        assert.equal(admin.setupCompleteCalls(), 0);
        assert.ok(existsSync(consoleTokenPath(cp.ctx.dataDir)), "the console token file is still there");
      });

      // Before setup, a hostile initialize body would complete setup if validation let it through.
      defineMatrix(
        [
          {
            method: "POST",
            route: "/setup/initialize (before setup, valid token)",
            path: () => `${V1}/setup/initialize`,
            token: () => undefined,
            base: setupBody,
            fields: [
              { path: "console_token", kind: "string" },
              { path: "admin_username", kind: "string" },
              { path: "admin_password", kind: "password" },
              { path: "organisation_name", kind: "string" },
              { path: "ca_common_names", kind: "object" },
              { path: "ca_common_names.cp_server_ca", kind: "string" },
              { path: "cp_public_hosts", kind: "array" },
              { path: "cp_public_hosts.0", kind: "string" },
            ],
          },
        ],
        () => ({ app: admin.app, cp }),
      );

      it("concurrent initialize calls: exactly one succeeds (201) and onSetupComplete runs once", async () => {
        assert.equal(admin.setupComplete(), false, "the matrix must not have completed setup");
        const results = await Promise.all([1, 2, 3].map(() => call(admin.app, "POST", `${V1}/setup/initialize`, { body: setupBody() })));
        const won = results.filter((r) => r.status === 201);
        assert.equal(won.length, 1, `statuses: ${results.map((r) => r.status).join(", ")}`);
        for (const lost of results.filter((r) => r.status !== 201)) {
          const json = assertError(lost, 409, String(body(lost).error), "losing initialize");
          assert.ok(["SETUP_IN_PROGRESS", "SETUP_ALREADY_COMPLETED"].includes(String(json.error)), String(json.error));
        }
        assert.equal(admin.setupCompleteCalls(), 1);
        assert.equal(admin.setupComplete(), true);

        const result = body(won[0] as CallResult);
        assert.equal(result.requires_setup, false);
        const root = result.root_agent as Obj;
        assert.equal(root.username, "setup-root");
        assert.equal(root.role, "root");
        assert.equal(root.status, "active");
        assert.ok(!("password_hash" in root), "no password hash in the answer");
        assert.deepEqual(Object.keys(result.ca_fingerprints as Obj).sort(), [...CA_PROFILES].sort());
        assert.ok(!existsSync(consoleTokenPath(cp.ctx.dataDir)), "the console token file is removed");
        for (const form of secretForms(SETUP_ROOT_PASSWORD)) assert.ok(!JSON.stringify(result).includes(form), "no password in the answer");
      });

      it("after setup: the gate is open, four CAs and one cp_server certificate exist, status shows no PKI detail", async () => {
        const status = await call(admin.app, "GET", `${V1}/setup/status`);
        assertOk(status, 200, "status");
        assert.deepEqual(status.json, { requires_setup: false });

        // The password full of metacharacters simply works.
        const tokens = await login(admin.app, "setup-root", SETUP_ROOT_PASSWORD);
        const me = await call(admin.app, "GET", `${V1}/auth/me`, { token: tokens.access_token });
        assertOk(me, 200, "me");
        assert.equal(body(me).username, "setup-root");

        const cas = await call(admin.app, "GET", `${V1}/pki/cas`, { token: tokens.access_token });
        assertOk(cas, 200, "cas");
        const items = body(cas).items as Obj[];
        assert.equal(items.length, 4);
        assert.deepEqual(items.map((i) => i.profile).sort(), [...CA_PROFILES].sort());
        for (const ca of items) assert.equal(ca.status, "active");
        assert.match(String(items.find((i) => i.profile === "cp_server_ca")?.subject), /Acme CP Server CA/);
        for (const ca of items) assert.ok(!JSON.stringify(ca).includes("PRIVATE KEY"), "no CA key leaves the API");

        const certs = await call(admin.app, "GET", `${V1}/pki/certs`, { token: tokens.access_token });
        assertOk(certs, 200, "certs");
        const page = body(certs);
        assert.equal(page.total, 1);
        const [cert] = page.items as Obj[];
        assert.equal(cert?.profile, "cp_server");
        assert.equal(cert?.purpose, "cp_server");
        assert.equal(cert?.ca_profile, "cp_server_ca");
        assert.equal(cert?.status, "valid");
        const sans = cert?.sans as { dns: string[]; ip: string[] } | undefined;
        assert.ok(sans?.dns.includes("cp.example.test"));
        assert.ok(sans?.ip.includes("10.0.0.7"));
      });

      it("a second initialize → 409 SETUP_ALREADY_COMPLETED; onSetupComplete is not called again; nothing changes", async () => {
        const baseline = await snapshotDb(cp.ctx);
        for (const token of [consoleToken, wrongToken]) {
          const res = await call(admin.app, "POST", `${V1}/setup/initialize`, {
            body: { ...setupBody(), console_token: token, admin_username: "another-root" },
          });
          assertError(res, 409, "SETUP_ALREADY_COMPLETED", "second initialize");
          await expectUnchanged(cp, baseline, "second initialize");
        }
        assert.equal(admin.setupCompleteCalls(), 1);
      });

      it("logs carry no password, token or console token", () => {
        assertNoSecretsLogged(cp, secrets);
      });
    });

    // -------------------------------------------------------------------------------------------
    describe("after setup", () => {
      let cp: TestCp;
      let admin: TestAdminApp;
      let app: AdminApp;
      const ids = { root: "", admin: "", operator: "", target: "", app: "", cert: "" };
      const tokens: Record<Role, Tokens> = {} as Record<Role, Tokens>;
      let spareRefresh = "";

      const createAgent = async (username: string, password: string, role: Role, displayName?: string): Promise<string> => {
        const res = await call(app, "POST", `${V1}/agents`, {
          token: tokens.root.access_token,
          body: { username, password, role, ...(displayName ? { display_name: displayName } : {}) },
        });
        assertOk(res, 201, `create agent ${username}`);
        return String(body(res).id);
      };
      const createApp = async (name: string, token = tokens.root.access_token): Promise<string> => {
        const res = await call(app, "POST", `${V1}/applications`, { token, body: { name } });
        assertOk(res, 201, `create application ${name}`);
        const secret = String(body(res).app_secret);
        secrets.add(secret);
        // The one-time secret, and nothing derived from it: its stored hash would let anyone
        // who sees this answer test guesses offline.
        assert.equal("secret_hash" in body(res), false, "no secret_hash in the creation answer");
        assert.equal(res.text.includes(createHash("sha256").update(secret).digest("hex")), false, "the secret's hash appears nowhere");
        return String(body(res).app_id);
      };

      before(async () => {
        cp = await createTestCp(variant, "adm_main");
        await completeSetup(cp.ctx);
        admin = await buildAdminApp(cp);
        app = admin.app;
        assert.equal(admin.setupComplete(), true, "the gate flag starts from the DB");
        tokens.root = await login(app, ROOT_USERNAME, ROOT_PASSWORD);
        ids.root = String(body(await call(app, "GET", `${V1}/auth/me`, { token: tokens.root.access_token })).id);
        ids.admin = await createAgent("ada-admin", ADMIN_PASSWORD, "admin");
        ids.operator = await createAgent("otto-operator", OPERATOR_PASSWORD, "operator");
        ids.target = await createAgent("matrix-target", TARGET_PASSWORD, "operator", "Original Name");
        tokens.admin = await login(app, "ada-admin", ADMIN_PASSWORD);
        tokens.operator = await login(app, "otto-operator", OPERATOR_PASSWORD);
        spareRefresh = (await login(app, ROOT_USERNAME, ROOT_PASSWORD)).refresh_token;
        ids.app = await createApp("Matrix App");
        const certs = body(await call(app, "GET", `${V1}/pki/certs`, { token: tokens.root.access_token }));
        ids.cert = String((certs.items as Obj[])[0]?.id);
      });
      after(() => cp.close());

      it("snapshotDb sees every table of both databases except the two log tables, and notices a one-field change", async () => {
        const before = await snapshotDb(cp.ctx);
        for (const table of [
          "control.agents",
          "control.agent_sessions",
          "control.applications",
          "control.certificates",
          "control.setup_state",
          "runtime.users",
          "runtime.sessions",
        ]) {
          assert.ok(table in before, `${table} is in the snapshot`);
        }
        assert.ok(!("control.agent_audit_logs" in before) && !("control.agent_login_logs" in before), "log tables are left out");
        assert.equal(before["control.agents"]?.rows, 4);
        await cp.ctx.controlDb.updateTable("agents").set({ display_name: "Snapshot Probe" }).where("id", "=", ids.target).execute();
        const changed = await snapshotDb(cp.ctx);
        assert.notDeepEqual(changed, before, "a changed display name changes the snapshot");
        assert.equal(changed["control.agents"]?.rows, 4);
        await cp.ctx.controlDb.updateTable("agents").set({ display_name: "Original Name" }).where("id", "=", ids.target).execute();
        assert.deepEqual(await snapshotDb(cp.ctx), before, "and restoring it restores the snapshot");
      });

      describe("bad input on every state-changing endpoint", () => {
        const root = () => tokens.root.access_token;
        defineMatrix(
          [
            {
              method: "POST",
              route: "/agents",
              path: () => `${V1}/agents`,
              token: root,
              base: () => ({ username: "brand-new-agent", password: NEVER_APPLIED_PASSWORD, role: "operator", display_name: "Brand New" }),
              fields: [
                { path: "username", kind: "string" },
                { path: "password", kind: "password" },
                { path: "role", kind: "string" },
                { path: "display_name", kind: "string" },
              ],
            },
            {
              method: "PATCH",
              route: "/agents/:id",
              path: () => `${V1}/agents/${ids.target}`,
              token: root,
              base: () => ({ role: "admin", display_name: "Changed Name" }),
              fields: [
                { path: "role", kind: "string" },
                { path: "display_name", kind: "string", nullable: true },
              ],
            },
            {
              method: "POST",
              route: "/agents/:id/password",
              path: () => `${V1}/agents/${ids.target}/password`,
              token: root,
              base: () => ({ new_password: NEVER_APPLIED_PASSWORD }),
              fields: [{ path: "new_password", kind: "password" }],
            },
            {
              method: "POST",
              route: "/applications",
              path: () => `${V1}/applications`,
              token: root,
              base: () => ({ name: "Never Created", description: "should never exist" }),
              fields: [
                { path: "name", kind: "string" },
                { path: "description", kind: "string" },
              ],
            },
            {
              method: "PATCH",
              route: "/applications/:id",
              path: () => `${V1}/applications/${ids.app}`,
              token: root,
              base: () => ({ name: "Renamed App", description: "changed", status: "disabled" }),
              fields: [
                { path: "name", kind: "string" },
                { path: "description", kind: "string", nullable: true },
                { path: "status", kind: "string" },
              ],
            },
            {
              method: "POST",
              route: "/pki/certs/:id/revoke",
              path: () => `${V1}/pki/certs/${ids.cert}/revoke`,
              token: root,
              base: () => ({ reason: "superseded" }),
              fields: [{ path: "reason", kind: "string" }],
            },
            {
              method: "POST",
              route: "/auth/login",
              path: () => `${V1}/auth/login`,
              token: () => undefined,
              base: () => ({ username: ROOT_USERNAME, password: ROOT_PASSWORD }),
              fields: [
                { path: "username", kind: "login-username" },
                { path: "password", kind: "password" },
              ],
            },
            {
              method: "POST",
              route: "/auth/refresh",
              path: () => `${V1}/auth/refresh`,
              token: () => undefined,
              base: () => ({ refresh_token: spareRefresh }),
              fields: [{ path: "refresh_token", kind: "string" }],
            },
            {
              method: "POST",
              route: "/auth/password",
              path: () => `${V1}/auth/password`,
              token: root,
              base: () => ({ current_password: ROOT_PASSWORD, new_password: NEVER_APPLIED_PASSWORD }),
              fields: [
                { path: "current_password", kind: "password" },
                { path: "new_password", kind: "password" },
              ],
            },
            {
              method: "POST",
              route: "/setup/initialize",
              path: () => `${V1}/setup/initialize`,
              token: () => undefined,
              base: () => ({
                console_token: "C".repeat(43),
                admin_username: "late-root",
                admin_password: NEVER_APPLIED_PASSWORD,
                organisation_name: "Late Org",
                ca_common_names: { app_client_ca: "Late CA" },
                cp_public_hosts: ["late.example.test"],
              }),
              fields: [
                { path: "console_token", kind: "string" },
                { path: "admin_username", kind: "string" },
                { path: "admin_password", kind: "password" },
                { path: "organisation_name", kind: "string" },
                { path: "ca_common_names", kind: "object" },
                { path: "ca_common_names.app_client_ca", kind: "string" },
                { path: "cp_public_hosts", kind: "array" },
                { path: "cp_public_hosts.0", kind: "string" },
              ],
            },
          ],
          () => ({ app, cp }),
        );

        it("the matrix bases are valid: each one, sent as is, is accepted (or, for initialize, refused as already done)", async () => {
          // Proves the matrix refusals came from the injected fault, not from a broken base body.
          // Run on throwaway targets so the fixture stays as the matrix expects.
          const otherTarget = await createAgent("matrix-target-2", TARGET_PASSWORD, "operator");
          assertOk(
            await call(app, "PATCH", `${V1}/agents/${otherTarget}`, {
              token: root(),
              body: { role: "admin", display_name: "Changed Name" },
            }),
            200,
            "PATCH agent base",
          );
          assertOk(
            await call(app, "POST", `${V1}/agents/${otherTarget}/password`, {
              token: root(),
              body: { new_password: NEVER_APPLIED_PASSWORD },
            }),
            204,
            "reset password base",
          );
          const created = await call(app, "POST", `${V1}/agents`, {
            token: root(),
            body: { username: "brand-new-agent", password: NEVER_APPLIED_PASSWORD, role: "operator", display_name: "Brand New" },
          });
          assertOk(created, 201, "POST agents base");
          const otherApp = await createApp("Base Check App");
          assertOk(
            await call(app, "PATCH", `${V1}/applications/${otherApp}`, {
              token: root(),
              body: { name: "Renamed App", description: "changed", status: "disabled" },
            }),
            200,
            "PATCH app base",
          );
          const createdApp = await call(app, "POST", `${V1}/applications`, {
            token: root(),
            body: { name: "Never Created", description: "should never exist" },
          });
          assertOk(createdApp, 201, "POST applications base");
          secrets.add(String(body(createdApp).app_secret));
          const fresh = await login(app, ROOT_USERNAME, ROOT_PASSWORD);
          const refreshed = await call(app, "POST", `${V1}/auth/refresh`, { body: { refresh_token: fresh.refresh_token } });
          assertOk(refreshed, 200, "refresh base");
          keep(body(refreshed) as unknown as Tokens);
          assertError(
            await call(app, "POST", `${V1}/setup/initialize`, {
              body: { console_token: "C".repeat(43), admin_username: "late-root", admin_password: NEVER_APPLIED_PASSWORD },
            }),
            409,
            "SETUP_ALREADY_COMPLETED",
            "initialize base",
          );
          // Revoke and own-password bases are exercised for real in the audit tests below.
        });

        it("passwords may hold SQL metacharacters, NUL and CR/LF: they work like any password, never a 500", async () => {
          const allMeta = `Pw ${METACHARACTERS.map(([, m]) => m).join(" ")} 42`;
          secrets.add(allMeta);
          const created = await call(app, "POST", `${V1}/agents`, {
            token: root(),
            body: { username: "meta-pw", password: allMeta, role: "operator" },
          });
          assertOk(created, 201, "create with a metacharacter password");
          const id = String(body(created).id);
          await login(app, "meta-pw", allMeta);
          let ip = 1;
          const wrong = async (username: string, password: string, label: string) =>
            assertError(
              await call(app, "POST", `${V1}/auth/login`, { body: { username, password }, ip: `198.51.100.${ip++}` }),
              401,
              "INVALID_CREDENTIALS",
              label,
            );
          let previous = allMeta;
          for (const [name, meta] of METACHARACTERS) {
            const next = `Reset ${meta} Pass 77 ${name}`;
            secrets.add(next);
            assertOk(
              await call(app, "POST", `${V1}/agents/${id}/password`, { token: root(), body: { new_password: next } }),
              204,
              `reset to a password with ${name}`,
            );
            await login(app, "meta-pw", next);
            await wrong("meta-pw", previous, `old password after reset (${name})`);
            await wrong(ROOT_USERNAME, insertMiddle(ROOT_PASSWORD, meta), `root with ${name} inserted`);
            await wrong(ROOT_USERNAME, `${meta}${ROOT_PASSWORD}`, `root with ${name} prepended`);
            await wrong(ROOT_USERNAME, meta, `root with just ${name}`);
            previous = next;
          }
          const own = await login(app, "meta-pw", previous);
          const mine = `Own ${METACHARACTERS.map(([, m]) => m).join("")} Change`;
          secrets.add(mine);
          assertOk(
            await call(app, "POST", `${V1}/auth/password`, {
              token: own.access_token,
              body: { current_password: previous, new_password: mine },
            }),
            204,
            "own password change",
          );
          await login(app, "meta-pw", mine);
          assertError(
            await call(app, "POST", `${V1}/auth/password`, {
              token: own.access_token,
              body: { current_password: "' OR '1'='1", new_password: `${mine}!` },
            }),
            401,
            "INVALID_CREDENTIALS",
            "own password change with an injected current password",
          );
          assertError(
            await call(app, "POST", `${V1}/setup/initialize`, {
              body: { console_token: "C".repeat(43), admin_username: "late-root", admin_password: allMeta },
            }),
            409,
            "SETUP_ALREADY_COMPLETED",
            "initialize after setup",
          );
        });

        it("a password that differs only by trailing NUL characters is a different password (401)", async () => {
          // scrypt keys its PBKDF2-HMAC step with the password; HMAC zero-pads short keys, so
          // "pw" and "pw\0" derive the same hash unless the service refuses or pre-hashes them.
          await everyCase(["\u0000", "\u0000\u0000", "\u0000".repeat(20)], async (suffix) => {
            const res = await call(app, "POST", `${V1}/auth/login`, {
              body: { username: ROOT_USERNAME, password: `${ROOT_PASSWORD}${suffix}` },
              ip: `198.51.100.${100 + suffix.length}`,
            });
            if (isObj(res.json) && typeof res.json.access_token === "string") keep(res.json as unknown as Tokens);
            assertError(res, 401, "INVALID_CREDENTIALS", `root password + ${suffix.length} NUL`);
          });
        });
      });

      describe("routes and ids", () => {
        it("unknown routes and wrong methods → 404 ROUTE_NOT_FOUND as JSON, with or without a token", async () => {
          const routes: Array<[string, string]> = [
            ["GET", `${V1}/nope`],
            ["DELETE", `${V1}/agents`],
            ["PUT", `${V1}/agents/${MISSING.agent}`],
            ["DELETE", `${V1}/agents/${MISSING.agent}`],
            ["GET", `${V1}/agents/${MISSING.agent}/disable`],
            ["PUT", `${V1}/applications`],
            ["POST", `${V1}/applications/${MISSING.app}/nope`],
            ["GET", `${V1}/auth/login`],
            ["POST", `${V1}/setup/status`],
            ["PATCH", `${V1}/pki/cas`],
            ["OPTIONS", `${V1}/agents`],
            ["GET", "/admin/v2/x"],
            ["GET", "/admin/v1"],
            ["GET", "/admin"],
            ["GET", "/"],
            ["GET", "/ADMIN/V1/AGENTS"],
          ];
          const baseline = await snapshotDb(cp.ctx);
          for (const [method, path] of routes) {
            for (const token of [undefined, tokens.root.access_token]) {
              const label = `${method} ${path} ${token ? "with" : "without"} token`;
              assertError(await call(app, method, path, token ? { token } : {}), 404, "ROUTE_NOT_FOUND", label);
            }
          }
          await expectUnchanged(cp, baseline, "unknown routes");
        });

        it("ids that cannot be ours (traversal, very long, unicode, NUL, quotes, bad escapes) → 404 NOT_FOUND, never a 500", async () => {
          const badIds = [
            "..%2F..",
            "..%2F..%2Fagents",
            "%2E%2E%2F",
            "a".repeat(65),
            "a".repeat(4000),
            "%E2%9C%93",
            "%F0%9F%98%80",
            "caf%C3%A9",
            "%00",
            "%0D%0A",
            "%27%20OR%20%271%27%3D%271",
            "%22%3B%20DROP%20TABLE%20agents%3B%20--",
            "%60",
            "%5C",
            "%ZZ",
            "%E0%A4%A",
          ];
          const routes: Array<[string, string, unknown?]> = [
            ["GET", "/agents/:id"],
            ["PATCH", "/agents/:id", { display_name: "Never Applied" }],
            ["POST", "/agents/:id/disable"],
            ["POST", "/agents/:id/enable"],
            ["POST", "/agents/:id/password", { new_password: NEVER_APPLIED_PASSWORD }],
            ["GET", "/applications/:id"],
            ["PATCH", "/applications/:id", { name: "Never Applied" }],
            ["DELETE", "/applications/:id"],
            ["POST", "/applications/:id/restore"],
            ["POST", "/applications/:id/purge"],
            ["GET", "/pki/certs/:id"],
            ["POST", "/pki/certs/:id/revoke", { reason: "keyCompromise" }],
          ];
          const baseline = await snapshotDb(cp.ctx);
          const cases = routes.flatMap(([method, template, requestBody]) => {
            const missing = template.startsWith("/agents")
              ? MISSING.agent
              : template.startsWith("/applications")
                ? MISSING.app
                : MISSING.cert;
            return [...badIds, missing].map((id) => ({ method, path: `${V1}${template.replace(":id", id)}`, requestBody }));
          });
          await everyCase(cases, async ({ method, path, requestBody }) => {
            const res = await call(app, method, path, { token: tokens.root.access_token, ...(requestBody ? { body: requestBody } : {}) });
            assertError(res, 404, "NOT_FOUND", `${method} ${path.slice(0, 80)}`);
          });
          await expectUnchanged(cp, baseline, "bad ids");
        });
      });

      describe("pagination", () => {
        it("page and page_size are validated on every list endpoint (0, -1, abc, 1.5, 201 … → 400)", async () => {
          const lists = ["/agents", "/applications", "/pki/certs", "/agent-login-logs", "/agent-audit-logs"];
          const bad = [
            "page=0",
            "page=-1",
            "page=abc",
            "page=1.5",
            "page=1e3",
            "page=%201",
            "page=0x10",
            "page=1000001",
            "page_size=0",
            "page_size=-1",
            "page_size=abc",
            "page_size=201",
            "page_size=99999999999",
            "page_size=2.5",
          ];
          for (const list of lists) {
            assertOk(
              await call(app, "GET", `${V1}${list}?page=1&page_size=200`, { token: tokens.operator.access_token }),
              200,
              `${list} at the cap`,
            );
            for (const query of bad) {
              const json = assertError(
                await call(app, "GET", `${V1}${list}?${query}`, { token: tokens.operator.access_token }),
                400,
                "VALIDATION_FAILED",
                `${list}?${query}`,
              );
              assert.ok((json.message as string).includes(query.split("=")[0] ?? ""), `${list}?${query}: ${json.message}`);
            }
          }
        });

        it("pages have {items, page, page_size, total}, default 50, cap 200, and cover every row exactly once", async () => {
          const token = tokens.admin.access_token;
          const before = body(await call(app, "GET", `${V1}/applications`, { token }));
          assert.deepEqual(Object.keys(before).sort(), ["items", "page", "page_size", "total"]);
          assert.equal(before.page, 1);
          assert.equal(before.page_size, 50);
          const created: string[] = [];
          for (let i = 1; i <= 7; i++) created.push(await createApp(`Page App ${i}`, token));
          const total = (before.total as number) + 7;

          const seen: string[] = [];
          const pages = Math.ceil(total / 3);
          for (let page = 1; page <= pages + 1; page++) {
            const res = await call(app, "GET", `${V1}/applications?page=${page}&page_size=3`, { token });
            assertOk(res, 200, `page ${page}`);
            const json = body(res);
            assert.deepEqual(Object.keys(json).sort(), ["items", "page", "page_size", "total"]);
            assert.equal(json.page, page);
            assert.equal(json.page_size, 3);
            assert.equal(json.total, total, `total on page ${page}`);
            const items = json.items as Obj[];
            assert.equal(items.length, Math.max(0, Math.min(3, total - (page - 1) * 3)), `items on page ${page}`);
            seen.push(...items.map((i) => String(i.app_id)));
          }
          assert.equal(new Set(seen).size, total, "no row on two pages");
          for (const id of created) assert.ok(seen.includes(id), `${id} is on some page`);
          const capped = body(await call(app, "GET", `${V1}/applications?page_size=200`, { token }));
          assert.equal(capped.page_size, 200);
          assert.equal((capped.items as Obj[]).length, total);

          // The views split the same rows.
          for (const id of created.slice(0, 2))
            assertOk(await call(app, "DELETE", `${V1}/applications/${id}`, { token }), 200, "soft delete");
          const live = body(await call(app, "GET", `${V1}/applications?view=live&page_size=200`, { token }));
          const bin = body(await call(app, "GET", `${V1}/applications?view=recycle_bin&page_size=200`, { token }));
          const all = body(await call(app, "GET", `${V1}/applications?view=all&page_size=2`, { token }));
          assert.equal(live.total, total - 2);
          assert.ok((bin.items as Obj[]).some((i) => i.app_id === created[0]));
          assert.equal((live.total as number) + (bin.total as number), all.total);
          assert.equal((all.items as Obj[]).length, 2);
          assertError(await call(app, "GET", `${V1}/applications?view=bogus`, { token }), 400, "VALIDATION_FAILED", "view=bogus");

          const agents = body(await call(app, "GET", `${V1}/agents?page=2&page_size=2`, { token }));
          const agentTotal = body(await call(app, "GET", `${V1}/agents?page_size=200`, { token })).total as number;
          assert.equal(agents.total, agentTotal);
          assert.equal((agents.items as Obj[]).length, Math.max(0, Math.min(2, agentTotal - 2)));
          for (const agent of agents.items as Obj[]) assert.ok(!("password_hash" in agent), "no password hash in agent lists");
        });
      });

      describe("roles on every route", () => {
        const routeTable = (): RouteCase[] => [
          { method: "GET", template: "/setup/status", path: () => `${V1}/setup/status`, allowed: "public", status: 200 },
          {
            method: "POST",
            template: "/setup/initialize",
            path: () => `${V1}/setup/initialize`,
            body: {},
            allowed: "public",
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "POST",
            template: "/auth/login",
            path: () => `${V1}/auth/login`,
            body: {},
            allowed: "public",
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "POST",
            template: "/auth/refresh",
            path: () => `${V1}/auth/refresh`,
            body: {},
            allowed: "public",
            status: 400,
            code: "VALIDATION_FAILED",
          },
          { method: "GET", template: "/auth/me", path: () => `${V1}/auth/me`, allowed: ALL_ROLES, status: 200 },
          {
            method: "POST",
            template: "/auth/password",
            path: () => `${V1}/auth/password`,
            body: {},
            allowed: ALL_ROLES,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          // POST /auth/logout (every role) ends the session: checked in its own test below.
          { method: "GET", template: "/agents", path: () => `${V1}/agents`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/agents/:id", path: () => `${V1}/agents/${ids.target}`, allowed: ALL_ROLES, status: 200 },
          {
            method: "POST",
            template: "/agents",
            path: () => `${V1}/agents`,
            body: {},
            allowed: ROOT_ONLY,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "PATCH",
            template: "/agents/:id",
            path: () => `${V1}/agents/${ids.target}`,
            body: {},
            allowed: ROOT_ONLY,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "POST",
            template: "/agents/:id/disable",
            path: () => `${V1}/agents/${MISSING.agent}/disable`,
            allowed: ROOT_ONLY,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/agents/:id/enable",
            path: () => `${V1}/agents/${MISSING.agent}/enable`,
            allowed: ROOT_ONLY,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/agents/:id/password",
            path: () => `${V1}/agents/${ids.target}/password`,
            body: {},
            allowed: ROOT_ONLY,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          { method: "GET", template: "/applications", path: () => `${V1}/applications`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/applications/:id", path: () => `${V1}/applications/${ids.app}`, allowed: ALL_ROLES, status: 200 },
          {
            method: "POST",
            template: "/applications",
            path: () => `${V1}/applications`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "PATCH",
            template: "/applications/:id",
            path: () => `${V1}/applications/${ids.app}`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "DELETE",
            template: "/applications/:id",
            path: () => `${V1}/applications/${MISSING.app}`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/applications/:id/restore",
            path: () => `${V1}/applications/${MISSING.app}/restore`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/applications/:id/purge",
            path: () => `${V1}/applications/${MISSING.app}/purge`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          { method: "GET", template: "/pki/cas", path: () => `${V1}/pki/cas`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/pki/certs", path: () => `${V1}/pki/certs`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/pki/expiring", path: () => `${V1}/pki/expiring`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/pki/audit-logs", path: () => `${V1}/pki/audit-logs`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/pki/certs/:id", path: () => `${V1}/pki/certs/${ids.cert}`, allowed: ALL_ROLES, status: 200 },
          {
            method: "POST",
            template: "/pki/certs/:id/revoke",
            path: () => `${V1}/pki/certs/${MISSING.cert}/revoke`,
            body: {},
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/nodes",
            path: () => `${V1}/nodes`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          { method: "GET", template: "/nodes", path: () => `${V1}/nodes`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/nodes/overview", path: () => `${V1}/nodes/overview`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/nodes/audit-logs", path: () => `${V1}/nodes/audit-logs`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/nodes/auth-events", path: () => `${V1}/nodes/auth-events`, allowed: ALL_ROLES, status: 200 },
          {
            method: "GET",
            template: "/nodes/:id",
            path: () => `${V1}/nodes/${MISSING.node}`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/nodes/:id/disable",
            path: () => `${V1}/nodes/${MISSING.node}/disable`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/nodes/:id/enable",
            path: () => `${V1}/nodes/${MISSING.node}/enable`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/nodes/:id/reissue-package",
            path: () => `${V1}/nodes/${MISSING.node}/reissue-package`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/nodes/:id/certs/rotate",
            path: () => `${V1}/nodes/${MISSING.node}/certs/rotate`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/nodes/:id/certs/rotations",
            path: () => `${V1}/nodes/${MISSING.node}/certs/rotations`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/nodes/:id/certs/rotations/:rid",
            path: () => `${V1}/nodes/${MISSING.node}/certs/rotations/rot_missing`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "DELETE",
            template: "/nodes/:id",
            path: () => `${V1}/nodes/${MISSING.node}`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/nodes/:id/deploy-packages",
            path: () => `${V1}/nodes/${MISSING.node}/deploy-packages`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          // Packages carry private keys: downloading one needs write permission although it is a GET.
          {
            method: "GET",
            template: "/nodes/:id/deploy-packages/:pid/download",
            path: () => `${V1}/nodes/${MISSING.node}/deploy-packages/${MISSING.pkg}/download`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/nodes/:nid/configs",
            path: () => `${V1}/nodes/${MISSING.node}/configs`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/nodes/:nid/commands",
            path: () => `${V1}/nodes/${MISSING.node}/commands`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "POST",
            template: "/commands",
            path: () => `${V1}/commands`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          { method: "GET", template: "/commands", path: () => `${V1}/commands`, allowed: ALL_ROLES, status: 200 },
          {
            method: "GET",
            template: "/commands/:id",
            path: () => `${V1}/commands/${MISSING.command}`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          { method: "GET", template: "/pki/jobs", path: () => `${V1}/pki/jobs`, allowed: ALL_ROLES, status: 200 },
          {
            method: "GET",
            template: "/pki/jobs/:id",
            path: () => `${V1}/pki/jobs/${MISSING.job}`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/pki/jobs/:id/retry",
            path: () => `${V1}/pki/jobs/${MISSING.job}/retry`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/pki/jobs/:id/cancel",
            path: () => `${V1}/pki/jobs/${MISSING.job}/cancel`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          { method: "GET", template: "/pki/ca-rotations", path: () => `${V1}/pki/ca-rotations`, allowed: ALL_ROLES, status: 200 },
          {
            method: "GET",
            template: "/pki/ca-rotations/:id",
            path: () => `${V1}/pki/ca-rotations/${MISSING.rotation}`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/pki/ca-rotations",
            path: () => `${V1}/pki/ca-rotations`,
            body: { ca: "made_up_ca" },
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          ...(["publish", "switch", "retire", "rollback"] as const).map((step) => ({
            method: "POST",
            template: `/pki/ca-rotations/:id/${step}`,
            path: () => `${V1}/pki/ca-rotations/${MISSING.rotation}/${step}`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          })),
          {
            method: "PUT",
            template: "/configs/:type",
            path: () => `${V1}/configs/server_runtime_settings`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "PUT",
            template: "/applications/:app_id/configs/:type",
            path: () => `${V1}/applications/${ids.app}/configs/app_policy`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          { method: "GET", template: "/configs", path: () => `${V1}/configs`, allowed: ALL_ROLES, status: 200 },
          {
            method: "GET",
            template: "/configs/:type",
            path: () => `${V1}/configs/server_runtime_settings`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/configs/:type/versions",
            path: () => `${V1}/configs/server_runtime_settings/versions`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "GET",
            template: "/applications/:app_id/configs/:type",
            path: () => `${V1}/applications/${ids.app}/configs/app_policy`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/applications/:app_id/configs/:type/versions",
            path: () => `${V1}/applications/${ids.app}/configs/app_policy/versions`,
            allowed: ALL_ROLES,
            status: 200,
          },
          { method: "GET", template: "/security/blacklist", path: () => `${V1}/security/blacklist`, allowed: ALL_ROLES, status: 200 },
          {
            method: "GET",
            template: "/security/blacklist/:id",
            path: () => `${V1}/security/blacklist/bl_doesNotExist000000000`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/security/blacklist",
            path: () => `${V1}/security/blacklist`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "DELETE",
            template: "/security/blacklist/:id",
            path: () => `${V1}/security/blacklist/bl_doesNotExist000000000`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          { method: "GET", template: "/security/auth-epochs", path: () => `${V1}/security/auth-epochs`, allowed: ALL_ROLES, status: 200 },
          {
            method: "POST",
            template: "/security/auth-epochs",
            path: () => `${V1}/security/auth-epochs`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "POST",
            template: "/applications/:app_id/client-certs",
            path: () => `${V1}/applications/${ids.app}/client-certs`,
            body: { validity_days: 0 },
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "GET",
            template: "/applications/:app_id/client-certs",
            path: () => `${V1}/applications/${ids.app}/client-certs`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "GET",
            template: "/applications/:app_id/users",
            path: () => `${V1}/applications/${ids.app}/users`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "POST",
            template: "/applications/:app_id/users",
            path: () => `${V1}/applications/${ids.app}/users`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "GET",
            template: "/applications/:app_id/users/:user_id",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "DELETE",
            template: "/applications/:app_id/users/:user_id",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/applications/:app_id/users/:user_id/variables",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/variables`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "PUT",
            template: "/applications/:app_id/users/:user_id/variables/:key",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/variables/theme`,
            body: { value: "dark" },
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "DELETE",
            template: "/applications/:app_id/users/:user_id/variables/:key",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/variables/theme`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/applications/:app_id/cloud-functions",
            path: () => `${V1}/applications/${ids.app}/cloud-functions`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "POST",
            template: "/applications/:app_id/cloud-functions",
            path: () => `${V1}/applications/${ids.app}/cloud-functions`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "GET",
            template: "/applications/:app_id/cloud-functions/:name",
            path: () => `${V1}/applications/${ids.app}/cloud-functions/missing_function`,
            allowed: ALL_ROLES,
            status: 404,
            code: "FUNCTION_NOT_FOUND",
          },
          {
            method: "PATCH",
            template: "/applications/:app_id/cloud-functions/:name",
            path: () => `${V1}/applications/${ids.app}/cloud-functions/missing_function`,
            body: { timeout_ms: 100 },
            allowed: WRITERS,
            status: 404,
            code: "FUNCTION_NOT_FOUND",
          },
          {
            method: "DELETE",
            template: "/applications/:app_id/cloud-functions/:name",
            path: () => `${V1}/applications/${ids.app}/cloud-functions/missing_function`,
            allowed: WRITERS,
            status: 404,
            code: "FUNCTION_NOT_FOUND",
          },
          {
            method: "POST",
            template: "/applications/:app_id/users/:user_id/password",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/password`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "POST",
            template: "/applications/:app_id/users/:user_id/ban",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/ban`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/applications/:app_id/users/:user_id/unban",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/unban`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/applications/:app_id/users/:user_id/devices",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/devices`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "DELETE",
            template: "/applications/:app_id/users/:user_id/devices/:device_id",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/devices/dev-1`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/applications/:app_id/users/:user_id/sessions",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/sessions`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/applications/:app_id/users/:user_id/sessions/revoke",
            path: () => `${V1}/applications/${ids.app}/users/${MISSING.user}/sessions/revoke`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/applications/:app_id/card-keys",
            path: () => `${V1}/applications/${ids.app}/card-keys`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "GET",
            template: "/applications/:app_id/card-keys",
            path: () => `${V1}/applications/${ids.app}/card-keys`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "GET",
            template: "/applications/:app_id/card-keys/batches/:batch_id/export",
            path: () => `${V1}/applications/${ids.app}/card-keys/batches/${MISSING.batch}/export`,
            allowed: ALL_ROLES,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/applications/:app_id/card-keys/:card_id/disable",
            path: () => `${V1}/applications/${ids.app}/card-keys/${MISSING.card}/disable`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "DELETE",
            template: "/applications/:app_id/card-keys/:card_id",
            path: () => `${V1}/applications/${ids.app}/card-keys/${MISSING.card}`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "POST",
            template: "/applications/:app_id/invite-codes",
            path: () => `${V1}/applications/${ids.app}/invite-codes`,
            body: {},
            allowed: WRITERS,
            status: 400,
            code: "VALIDATION_FAILED",
          },
          {
            method: "GET",
            template: "/applications/:app_id/invite-codes",
            path: () => `${V1}/applications/${ids.app}/invite-codes`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "DELETE",
            template: "/applications/:app_id/invite-codes/:invite_id",
            path: () => `${V1}/applications/${ids.app}/invite-codes/${MISSING.invite}`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          {
            method: "GET",
            template: "/applications/:app_id/sessions",
            path: () => `${V1}/applications/${ids.app}/sessions`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "DELETE",
            template: "/applications/:app_id/sessions/:session_id",
            path: () => `${V1}/applications/${ids.app}/sessions/${MISSING.session}`,
            allowed: WRITERS,
            status: 404,
            code: "NOT_FOUND",
          },
          { method: "GET", template: "/agent-login-logs", path: () => `${V1}/agent-login-logs`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/agent-audit-logs", path: () => `${V1}/agent-audit-logs`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/audit-logs", path: () => `${V1}/audit-logs`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/login-logs", path: () => `${V1}/login-logs`, allowed: ALL_ROLES, status: 200 },
          { method: "POST", template: "/audit/verify", path: () => `${V1}/audit/verify`, body: {}, allowed: WRITERS, status: 200 },
          { method: "GET", template: "/presence", path: () => `${V1}/presence`, allowed: ALL_ROLES, status: 200 },
          { method: "GET", template: "/reports/login-daily", path: () => `${V1}/reports/login-daily`, allowed: ALL_ROLES, status: 200 },
          {
            method: "GET",
            template: "/reports/card-generated-daily",
            path: () => `${V1}/reports/card-generated-daily`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "GET",
            template: "/reports/card-activated-daily",
            path: () => `${V1}/reports/card-activated-daily`,
            allowed: ALL_ROLES,
            status: 200,
          },
          {
            method: "GET",
            template: "/reports/agent-login-daily",
            path: () => `${V1}/reports/agent-login-daily`,
            allowed: ALL_ROLES,
            status: 200,
          },
        ];
        const protectedRoutes = () => routeTable().filter((r) => r.allowed !== "public");

        it("the table covers every route the app registers", () => {
          const registered = new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path}`));
          const tabled = new Set([...routeTable().map((r) => `${r.method} ${V1}${r.template}`), `POST ${V1}/auth/logout`]);
          assert.deepEqual(
            [...registered].filter((r) => !tabled.has(r)),
            [],
            "routes without a role expectation",
          );
          assert.deepEqual(
            [...tabled].filter((r) => !registered.has(r)),
            [],
            "table rows for routes that do not exist",
          );
        });

        it("root, admin and operator get exactly what their role allows (403 FORBIDDEN otherwise)", async () => {
          for (const route of routeTable()) {
            for (const role of ALL_ROLES) {
              const label = `${role} ${route.method} ${route.template}`;
              const res = await call(app, route.method, route.path(), {
                token: tokens[role].access_token,
                ...(route.body !== undefined ? { body: route.body } : {}),
              });
              const allowed = route.allowed === "public" || route.allowed.includes(role);
              if (!allowed) assertError(res, 403, "FORBIDDEN", label);
              else if (route.code) assertError(res, route.status, route.code, label);
              else assertOk(res, route.status, label);
            }
          }
        });

        it("no token, a malformed header or another scheme → 401 UNAUTHENTICATED with WWW-Authenticate; public routes need none", async () => {
          const headerSets: Array<[string, Record<string, string>]> = [
            ["no Authorization", {}],
            ["empty bearer", { authorization: "Bearer " }],
            ["short garbage", { authorization: "Bearer garbage" }],
            ["bad characters", { authorization: `Bearer ${"x".repeat(20)}' OR '1'='1` }],
            ["too long", { authorization: `Bearer ${"a".repeat(600)}` }],
            ["Basic scheme", { authorization: `Basic ${Buffer.from(`${ROOT_USERNAME}:${ROOT_PASSWORD}`).toString("base64")}` }],
            ["token without scheme", { authorization: tokens.root.access_token }],
          ];
          for (const route of protectedRoutes()) {
            for (const [name, headers] of headerSets) {
              const label = `${route.method} ${route.template} (${name})`;
              const res = await call(app, route.method, route.path(), {
                headers,
                ...(route.body !== undefined ? { body: route.body } : {}),
              });
              assertError(res, 401, "UNAUTHENTICATED", label);
              assert.equal(res.headers.get("www-authenticate"), WWW_AUTHENTICATE, `${label}: WWW-Authenticate`);
            }
          }
          for (const route of routeTable().filter((r) => r.allowed === "public")) {
            const res = await call(app, route.method, route.path(), route.body !== undefined ? { body: route.body } : {});
            assert.notEqual(res.status, 401, `${route.method} ${route.template} is public`);
            assert.equal(res.status, route.status, `${route.method} ${route.template}: ${res.text}`);
          }
        });

        it("a well-formed but unknown (or revoked) token → 401 UNAUTHENTICATED with WWW-Authenticate", async () => {
          for (const route of protectedRoutes()) {
            const label = `${route.method} ${route.template} (unknown well-formed token)`;
            const res = await call(app, route.method, route.path(), {
              token: "A".repeat(43),
              ...(route.body !== undefined ? { body: route.body } : {}),
            });
            assertError(res, 401, "UNAUTHENTICATED", label);
            // RFC 6750 §3.1: a presented but refused token adds error="invalid_token".
            assert.equal(
              res.headers.get("www-authenticate"),
              `${WWW_AUTHENTICATE}, error="invalid_token"`,
              `${label}: WWW-Authenticate (RFC 6750 §3)`,
            );
          }
        });

        it("POST /auth/logout works for every role and ends that session only", async () => {
          const passwords: Record<Role, [string, string]> = {
            root: [ROOT_USERNAME, ROOT_PASSWORD],
            admin: ["ada-admin", ADMIN_PASSWORD],
            operator: ["otto-operator", OPERATOR_PASSWORD],
          };
          for (const role of ALL_ROLES) {
            const [username, password] = passwords[role];
            const session = await login(app, username, password);
            assertOk(await call(app, "POST", `${V1}/auth/logout`, { token: session.access_token }), 204, `${role} logout`);
            assertError(
              await call(app, "GET", `${V1}/auth/me`, { token: session.access_token }),
              401,
              "UNAUTHENTICATED",
              `${role} after logout`,
            );
            assertError(
              await call(app, "POST", `${V1}/auth/refresh`, { body: { refresh_token: session.refresh_token } }),
              401,
              "INVALID_REFRESH_TOKEN",
              `${role} refresh after logout`,
            );
            assertOk(
              await call(app, "GET", `${V1}/auth/me`, { token: tokens[role].access_token }),
              200,
              `${role}'s other session survives`,
            );
          }
          assertError(await call(app, "POST", `${V1}/auth/logout`), 401, "UNAUTHENTICATED", "logout without a token");
        });
      });

      describe("audit trail", () => {
        const auditCount = async () =>
          Number(
            (
              await cp.ctx.controlDb
                .selectFrom("agent_audit_logs")
                .select((eb) => eb.fn.countAll<number>().as("n"))
                .executeTakeFirstOrThrow()
            ).n,
          );
        const expectAudit = async (
          label: string,
          send: () => Promise<CallResult>,
          expected: {
            status: number;
            agentId: string;
            username: string;
            action: string;
            targetType: string;
            targetId?: string | null;
            result: "success" | "failure";
            errorCode?: string;
          },
        ): Promise<CallResult> => {
          const countBefore = await auditCount();
          const res = await send();
          assert.equal(res.status, expected.status, `${label}: ${res.text}`);
          const requestId = res.headers.get("x-request-id");
          assert.ok(requestId, `${label}: X-Request-Id`);
          assert.equal(await auditCount(), countBefore + 1, `${label}: exactly one audit row`);
          const rows = await cp.ctx.controlDb.selectFrom("agent_audit_logs").selectAll().where("request_id", "=", requestId).execute();
          assert.equal(rows.length, 1, `${label}: one row with request_id ${requestId}`);
          const row = rows[0];
          assert.ok(row);
          const targetId = expected.targetId !== undefined ? expected.targetId : String(body(res).id ?? body(res).app_id);
          assert.deepEqual(
            {
              agent_id: row.agent_id,
              agent_username: row.agent_username,
              action: row.action,
              target_type: row.target_type,
              target_id: row.target_id,
              result: row.result,
              error_code: row.error_code,
              ip: row.ip,
            },
            {
              agent_id: expected.agentId,
              agent_username: expected.username,
              action: expected.action,
              target_type: expected.targetType,
              target_id: targetId,
              result: expected.result,
              error_code: expected.errorCode ?? null,
              ip: null,
            },
            label,
          );
          assert.equal(row.created_at, cp.clock.now(), `${label}: created_at from the injected clock`);
          return res;
        };

        it("every successful state-changing call writes exactly one success row with the response's request id", async () => {
          const root = { agentId: ids.root, username: ROOT_USERNAME };
          const r = tokens.root.access_token;
          const created = await expectAudit(
            "agent.create",
            () =>
              call(app, "POST", `${V1}/agents`, { token: r, body: { username: "audit-op", password: TARGET_PASSWORD, role: "operator" } }),
            {
              status: 201,
              ...root,
              action: "agent.create",
              targetType: "agent",
              result: "success",
            },
          );
          const agentId = String(body(created).id);
          const onAgent = { ...root, targetType: "agent", targetId: agentId, result: "success" as const };
          await expectAudit(
            "agent.update",
            () => call(app, "PATCH", `${V1}/agents/${agentId}`, { token: r, body: { display_name: "Audit Operator" } }),
            { status: 200, ...onAgent, action: "agent.update" },
          );
          await expectAudit("agent.disable", () => call(app, "POST", `${V1}/agents/${agentId}/disable`, { token: r }), {
            status: 200,
            ...onAgent,
            action: "agent.disable",
          });
          await expectAudit("agent.enable", () => call(app, "POST", `${V1}/agents/${agentId}/enable`, { token: r }), {
            status: 200,
            ...onAgent,
            action: "agent.enable",
          });
          await expectAudit(
            "agent.reset_password",
            () => call(app, "POST", `${V1}/agents/${agentId}/password`, { token: r, body: { new_password: ADMIN_PASSWORD } }),
            {
              status: 204,
              ...onAgent,
              action: "agent.reset_password",
            },
          );

          const a = tokens.admin.access_token;
          const byAdmin = { agentId: ids.admin, username: "ada-admin", targetType: "application", result: "success" as const };
          const createdApp = await expectAudit(
            "application.create",
            () => call(app, "POST", `${V1}/applications`, { token: a, body: { name: "Audit App" } }),
            {
              status: 201,
              ...byAdmin,
              action: "application.create",
            },
          );
          secrets.add(String(body(createdApp).app_secret));
          const appId = String(body(createdApp).app_id);
          const onApp = { ...byAdmin, targetId: appId };
          await expectAudit(
            "application.update",
            () => call(app, "PATCH", `${V1}/applications/${appId}`, { token: a, body: { description: "audited" } }),
            { status: 200, ...onApp, action: "application.update" },
          );
          await expectAudit("application.delete", () => call(app, "DELETE", `${V1}/applications/${appId}`, { token: a }), {
            status: 200,
            ...onApp,
            action: "application.delete",
          });
          await expectAudit("application.restore", () => call(app, "POST", `${V1}/applications/${appId}/restore`, { token: a }), {
            status: 200,
            ...onApp,
            action: "application.restore",
          });
          await expectAudit("application.delete again", () => call(app, "DELETE", `${V1}/applications/${appId}`, { token: a }), {
            status: 200,
            ...onApp,
            action: "application.delete",
          });
          await expectAudit("application.purge", () => call(app, "POST", `${V1}/applications/${appId}/purge`, { token: a }), {
            status: 204,
            ...onApp,
            action: "application.purge",
          });
          assertError(await call(app, "GET", `${V1}/applications/${appId}`, { token: a }), 404, "NOT_FOUND", "purged application");

          const revoked = await expectAudit(
            "cert.revoke",
            () => call(app, "POST", `${V1}/pki/certs/${ids.cert}/revoke`, { token: a, body: { reason: "superseded" } }),
            {
              status: 200,
              agentId: ids.admin,
              username: "ada-admin",
              action: "cert.revoke",
              targetType: "certificate",
              targetId: ids.cert,
              result: "success",
            },
          );
          assert.equal(body(revoked).status, "revoked");
          assert.equal(body(revoked).revocation_reason, "superseded");

          const op = await login(app, "audit-op", ADMIN_PASSWORD);
          const self = { agentId, username: "audit-op", targetType: "agent", targetId: agentId, result: "success" as const };
          const newOwn = "Audit-Own-Passw0rd-1";
          secrets.add(newOwn);
          await expectAudit(
            "agent.change_own_password",
            () =>
              call(app, "POST", `${V1}/auth/password`, {
                token: op.access_token,
                body: { current_password: ADMIN_PASSWORD, new_password: newOwn },
              }),
            {
              status: 204,
              ...self,
              action: "agent.change_own_password",
            },
          );
          await expectAudit("auth.logout", () => call(app, "POST", `${V1}/auth/logout`, { token: op.access_token }), {
            status: 204,
            ...self,
            action: "auth.logout",
          });

          // A client-chosen request id is echoed and recorded; a malformed one is replaced.
          const echoed = await expectAudit(
            "client request id",
            () =>
              call(app, "PATCH", `${V1}/agents/${agentId}`, {
                token: r,
                body: { display_name: "Echo" },
                headers: { "x-request-id": "client-req-42" },
              }),
            { status: 200, ...onAgent, action: "agent.update" },
          );
          assert.equal(echoed.headers.get("x-request-id"), "client-req-42");
          const replaced = await call(app, "PATCH", `${V1}/agents/${agentId}`, {
            token: r,
            body: { display_name: "Echo" },
            headers: { "x-request-id": "bad id <script>" },
          });
          assert.match(replaced.headers.get("x-request-id") ?? "", /^req_[A-Za-z0-9_-]{22}$/);
        });

        it("refusals are audited as failures (FORBIDDEN, NOT_FOUND, VALIDATION_FAILED); reads and anonymous calls are not", async () => {
          const o = tokens.operator.access_token;
          const byOperator = { agentId: ids.operator, username: "otto-operator", result: "failure" as const };
          const appsBefore = body(await call(app, "GET", `${V1}/applications?view=all`, { token: o })).total;
          await expectAudit(
            "forbidden application.create",
            () => call(app, "POST", `${V1}/applications`, { token: o, body: { name: "Operator App" } }),
            {
              status: 403,
              ...byOperator,
              action: "application.create",
              targetType: "application",
              targetId: null,
              errorCode: "FORBIDDEN",
            },
          );
          assert.equal(body(await call(app, "GET", `${V1}/applications?view=all`, { token: o })).total, appsBefore, "nothing was created");
          await expectAudit("forbidden agent.disable", () => call(app, "POST", `${V1}/agents/${ids.root}/disable`, { token: o }), {
            status: 403,
            ...byOperator,
            action: "agent.disable",
            targetType: "agent",
            targetId: ids.root,
            errorCode: "FORBIDDEN",
          });
          await expectAudit(
            "forbidden agent.create by admin",
            () =>
              call(app, "POST", `${V1}/agents`, {
                token: tokens.admin.access_token,
                body: { username: "sneaky", password: ADMIN_PASSWORD, role: "root" },
              }),
            {
              status: 403,
              agentId: ids.admin,
              username: "ada-admin",
              result: "failure",
              action: "agent.create",
              targetType: "agent",
              targetId: null,
              errorCode: "FORBIDDEN",
            },
          );
          await expectAudit(
            "missing application",
            () => call(app, "PATCH", `${V1}/applications/${MISSING.app}`, { token: tokens.root.access_token, body: { name: "Nope" } }),
            {
              status: 404,
              agentId: ids.root,
              username: ROOT_USERNAME,
              result: "failure",
              action: "application.update",
              targetType: "application",
              targetId: MISSING.app,
              errorCode: "NOT_FOUND",
            },
          );
          await expectAudit(
            "invalid body",
            () => call(app, "POST", `${V1}/applications`, { token: tokens.root.access_token, body: { name: "x';--" } }),
            {
              status: 400,
              agentId: ids.root,
              username: ROOT_USERNAME,
              result: "failure",
              action: "application.create",
              targetType: "application",
              targetId: null,
              errorCode: "VALIDATION_FAILED",
            },
          );

          const countBefore = await auditCount();
          assertOk(await call(app, "GET", `${V1}/agents`, { token: o }), 200, "read");
          assertOk(await call(app, "GET", `${V1}/applications/${ids.app}`, { token: o }), 200, "read");
          assertError(
            await call(app, "POST", `${V1}/applications`, { body: { name: "Anon App" } }),
            401,
            "UNAUTHENTICATED",
            "anonymous write",
          );
          assertError(
            await call(app, "POST", `${V1}/agents/${ids.target}/disable`, { token: "A".repeat(43) }),
            401,
            "UNAUTHENTICATED",
            "unknown token write",
          );
          assert.equal(await auditCount(), countBefore, "reads and unauthenticated calls write no audit rows");
        });

        it("login attempts write agent_login_logs rows with username, agent, ip, user agent and result", async () => {
          const loginRow = async (ip: string) => {
            const rows = await cp.ctx.controlDb.selectFrom("agent_login_logs").selectAll().where("ip", "=", ip).execute();
            assert.equal(rows.length, 1, `one login row from ${ip}`);
            const row = rows[0];
            assert.ok(row);
            return {
              username: row.username,
              agent_id: row.agent_id,
              ip: row.ip,
              user_agent: row.user_agent,
              result: row.result,
              reason: row.reason,
              created_at: row.created_at,
            };
          };
          const ua = { "user-agent": "audit-test/1.0" };
          const ok = await call(app, "POST", `${V1}/auth/login`, {
            body: { username: "ROOT", password: ROOT_PASSWORD },
            ip: "192.0.2.41",
            headers: ua,
          });
          assertOk(ok, 200, "login success");
          keep(body(ok) as unknown as Tokens);
          const now = cp.clock.now();
          assert.deepEqual(await loginRow("192.0.2.41"), {
            username: "root",
            agent_id: ids.root,
            ip: "192.0.2.41",
            user_agent: "audit-test/1.0",
            result: "success",
            reason: null,
            created_at: now,
          });
          const session = await cp.ctx.controlDb
            .selectFrom("agent_sessions")
            .select(["ip", "user_agent", "agent_id"])
            .where("ip", "=", "192.0.2.41")
            .execute();
          assert.deepEqual(session, [{ ip: "192.0.2.41", user_agent: "audit-test/1.0", agent_id: ids.root }]);

          assertError(
            await call(app, "POST", `${V1}/auth/login`, {
              body: { username: ROOT_USERNAME, password: "wrong-password-123" },
              ip: "192.0.2.42",
              headers: ua,
            }),
            401,
            "INVALID_CREDENTIALS",
            "bad password",
          );
          assert.deepEqual(await loginRow("192.0.2.42"), {
            username: "root",
            agent_id: ids.root,
            ip: "192.0.2.42",
            user_agent: "audit-test/1.0",
            result: "failure",
            reason: "bad_credentials",
            created_at: now,
          });

          const unknown = await call(app, "POST", `${V1}/auth/login`, {
            body: { username: "nobody-here", password: "wrong-password-123" },
            ip: "2001:db8::43",
            headers: ua,
          });
          assertError(unknown, 401, "INVALID_CREDENTIALS", "unknown user");
          assert.equal(body(unknown).message, "Invalid username or password.", "unknown user and bad password answer the same");
          assert.deepEqual(await loginRow("2001:db8::43"), {
            username: "nobody-here",
            agent_id: null,
            ip: "2001:db8::43",
            user_agent: "audit-test/1.0",
            result: "failure",
            reason: "unknown_user",
            created_at: now,
          });
        });
      });

      it("logs carry no password, access/refresh token or app secret", () => {
        assertNoSecretsLogged(cp, secrets);
      });
    });

    // -------------------------------------------------------------------------------------------
    describe("sessions, expiry and login throttling (moving clock)", () => {
      let cp: TestCp;
      let app: AdminApp;
      const rootToken = async () => (await login(app, ROOT_USERNAME, ROOT_PASSWORD)).access_token;
      const me = (token: string) => call(app, "GET", `${V1}/auth/me`, { token });
      const createAgent = async (username: string, password: string, role: Role): Promise<string> => {
        const res = await call(app, "POST", `${V1}/agents`, { token: await rootToken(), body: { username, password, role } });
        assertOk(res, 201, `create ${username}`);
        return String(body(res).id);
      };

      before(async () => {
        cp = await createTestCp(variant, "adm_sessions");
        await completeSetup(cp.ctx);
        app = (await buildAdminApp(cp)).app;
      });
      after(() => cp.close());

      it("a disabled agent's existing token and refresh token stop working at once, and stay dead after re-enabling", async () => {
        const id = await createAgent("soon-disabled", OPERATOR_PASSWORD, "operator");
        const session = await login(app, "soon-disabled", OPERATOR_PASSWORD);
        assertOk(await me(session.access_token), 200, "before disabling");
        const root = await rootToken();
        const disabled = await call(app, "POST", `${V1}/agents/${id}/disable`, { token: root });
        assertOk(disabled, 200, "disable");
        assert.equal(body(disabled).status, "disabled");
        assertError(await me(session.access_token), 401, "UNAUTHENTICATED", "token of a disabled agent");
        assertError(
          await call(app, "POST", `${V1}/auth/refresh`, { body: { refresh_token: session.refresh_token } }),
          401,
          "INVALID_REFRESH_TOKEN",
          "refresh of a disabled agent",
        );
        const refused = await call(app, "POST", `${V1}/auth/login`, { body: { username: "soon-disabled", password: OPERATOR_PASSWORD } });
        assertError(refused, 401, "INVALID_CREDENTIALS", "login of a disabled agent");
        const row = await cp.ctx.controlDb
          .selectFrom("agent_login_logs")
          .select(["reason"])
          .where("username", "=", "soon-disabled")
          .where("result", "=", "failure")
          .execute();
        assert.deepEqual(row, [{ reason: "disabled" }]);

        assertOk(await call(app, "POST", `${V1}/agents/${id}/enable`, { token: root }), 200, "enable");
        assertError(await me(session.access_token), 401, "UNAUTHENTICATED", "old token after re-enabling");
        assertOk(await me((await login(app, "soon-disabled", OPERATOR_PASSWORD)).access_token), 200, "a new login works");
      });

      it("changing one's own password keeps the current session and revokes every other one", async () => {
        await createAgent("pw-changer", OPERATOR_PASSWORD, "operator");
        const current = await login(app, "pw-changer", OPERATOR_PASSWORD);
        const other = await login(app, "pw-changer", OPERATOR_PASSWORD);
        const baseline = await snapshotDb(cp.ctx);
        assertError(
          await call(app, "POST", `${V1}/auth/password`, {
            token: current.access_token,
            body: { current_password: "not-my-password-1", new_password: ADMIN_PASSWORD },
          }),
          401,
          "INVALID_CREDENTIALS",
          "wrong current password",
        );
        assertError(
          await call(app, "POST", `${V1}/auth/password`, {
            token: current.access_token,
            body: { current_password: OPERATOR_PASSWORD, new_password: "short" },
          }),
          400,
          "WEAK_PASSWORD",
          "weak new password",
        );
        await expectUnchanged(cp, baseline, "refused password changes");
        assertOk(await me(other.access_token), 200, "other session before the change");

        assertOk(
          await call(app, "POST", `${V1}/auth/password`, {
            token: current.access_token,
            body: { current_password: OPERATOR_PASSWORD, new_password: ADMIN_PASSWORD },
          }),
          204,
          "change",
        );
        assertOk(await me(current.access_token), 200, "the current session survives");
        assertError(await me(other.access_token), 401, "UNAUTHENTICATED", "the other session is revoked");
        assertError(
          await call(app, "POST", `${V1}/auth/refresh`, { body: { refresh_token: other.refresh_token } }),
          401,
          "INVALID_REFRESH_TOKEN",
          "other refresh",
        );
        const kept = await call(app, "POST", `${V1}/auth/refresh`, { body: { refresh_token: current.refresh_token } });
        assertOk(kept, 200, "the current session still refreshes");
        keep(body(kept) as unknown as Tokens);
        assertError(
          await call(app, "POST", `${V1}/auth/login`, { body: { username: "pw-changer", password: OPERATOR_PASSWORD } }),
          401,
          "INVALID_CREDENTIALS",
          "old password",
        );
        await login(app, "pw-changer", ADMIN_PASSWORD);
      });

      it("the last active root can be neither disabled nor demoted (409 LAST_ROOT_AGENT); a disabled root does not count", async () => {
        const root = await rootToken();
        const rootId = String(body(await me(root)).id);
        const baseline = await snapshotDb(cp.ctx);
        assertError(
          await call(app, "POST", `${V1}/agents/${rootId}/disable`, { token: root }),
          409,
          "LAST_ROOT_AGENT",
          "disable the last root",
        );
        for (const role of ["admin", "operator"]) {
          assertError(
            await call(app, "PATCH", `${V1}/agents/${rootId}`, { token: root, body: { role } }),
            409,
            "LAST_ROOT_AGENT",
            `demote the last root to ${role}`,
          );
        }
        await expectUnchanged(cp, baseline, "last root refusals");
        assertOk(await me(root), 200, "root still works");

        const secondId = await createAgent("second-root", ADMIN_PASSWORD, "root");
        const demoted = await call(app, "PATCH", `${V1}/agents/${secondId}`, { token: root, body: { role: "admin" } });
        assertOk(demoted, 200, "demote a root that is not the last");
        assert.equal(body(demoted).role, "admin");
        assertOk(await call(app, "PATCH", `${V1}/agents/${secondId}`, { token: root, body: { role: "root" } }), 200, "promote again");
        assertOk(await call(app, "POST", `${V1}/agents/${secondId}/disable`, { token: root }), 200, "disable the second root");
        assertError(
          await call(app, "PATCH", `${V1}/agents/${rootId}`, { token: root, body: { role: "admin" } }),
          409,
          "LAST_ROOT_AGENT",
          "demote with only a disabled second root",
        );
        assertError(
          await call(app, "POST", `${V1}/agents/${rootId}/disable`, { token: root }),
          409,
          "LAST_ROOT_AGENT",
          "disable with only a disabled second root",
        );
        assert.equal(body(await call(app, "GET", `${V1}/agents/${rootId}`, { token: root })).role, "root");
      });

      it("access tokens expire after 15 minutes; the refresh token still works and rotates", async () => {
        await createAgent("clock-watcher", OPERATOR_PASSWORD, "operator");
        const session = await login(app, "clock-watcher", OPERATOR_PASSWORD);
        cp.clock.advance(14 * MINUTE);
        assertOk(await me(session.access_token), 200, "after 14 minutes");
        cp.clock.advance(2 * MINUTE);
        assertError(await me(session.access_token), 401, "UNAUTHENTICATED", "after 16 minutes");
        const refreshed = await call(app, "POST", `${V1}/auth/refresh`, { body: { refresh_token: session.refresh_token } });
        assertOk(refreshed, 200, "refresh after expiry");
        const next = keep(body(refreshed) as unknown as Tokens);
        assert.notEqual(next.access_token, session.access_token);
        assert.notEqual(next.refresh_token, session.refresh_token);
        assert.equal(body(refreshed).expires_in, 900);
        assertOk(await me(next.access_token), 200, "the new access token");
        assertError(await me(session.access_token), 401, "UNAUTHENTICATED", "the old access token stays dead");
      });

      it("presenting a rotated-out refresh token (even two rotations old) revokes the whole session", async () => {
        await createAgent("replayer", OPERATOR_PASSWORD, "operator");
        const first = await login(app, "replayer", OPERATOR_PASSWORD);
        const refresh = (token: string) => call(app, "POST", `${V1}/auth/refresh`, { body: { refresh_token: token } });
        const r2 = await refresh(first.refresh_token);
        assertOk(r2, 200, "first rotation");
        const second = keep(body(r2) as unknown as Tokens);
        assertError(await me(first.access_token), 401, "UNAUTHENTICATED", "the rotated-out access token");
        const r3 = await refresh(second.refresh_token);
        assertOk(r3, 200, "second rotation");
        const third = keep(body(r3) as unknown as Tokens);
        assertOk(await me(third.access_token), 200, "the newest access token");

        const logBefore = cp.logLines.length;
        assertError(await refresh(first.refresh_token), 401, "INVALID_REFRESH_TOKEN", "replayed first refresh token");
        assertError(await me(third.access_token), 401, "UNAUTHENTICATED", "the session is revoked");
        assertError(await refresh(third.refresh_token), 401, "INVALID_REFRESH_TOKEN", "the newest refresh token is dead too");
        const sessions = await cp.ctx.controlDb
          .selectFrom("agent_sessions")
          .innerJoin("agents", "agents.id", "agent_sessions.agent_id")
          .select(["agent_sessions.revoke_reason"])
          .where("agents.username", "=", "replayer")
          .execute();
        assert.deepEqual(sessions, [{ revoke_reason: "refresh_token_reused" }]);
        const warned = cp.logLines.slice(logBefore).map((l) => JSON.parse(l) as Obj);
        assert.ok(
          warned.some((e) => e.level === "warn" && /refresh.?token.?reuse/i.test(String(e.msg))),
          `the reuse is logged as a warning: ${JSON.stringify(warned.map((e) => e.msg))}`,
        );
        assertOk(await me((await login(app, "replayer", OPERATOR_PASSWORD)).access_token), 200, "a new login works");
      });

      it("5 failures from one IP+username → 429 LOGIN_THROTTLED with Retry-After; other usernames and IPs unaffected; the window's end unlocks", async () => {
        await createAgent("throttled-user", OPERATOR_PASSWORD, "operator");
        await createAgent("bystander", OPERATOR_PASSWORD, "operator");
        const attempt = (username: string, password: string, ip?: string) =>
          call(app, "POST", `${V1}/auth/login`, { body: { username, password }, ...(ip ? { ip } : {}) });
        for (let i = 1; i <= 5; i++) {
          assertError(await attempt("throttled-user", `wrong-password-${i}`), 401, "INVALID_CREDENTIALS", `failure ${i}`);
          if (i < 5) cp.clock.advance(MINUTE);
        }
        // The oldest failure is 4 minutes old: the lock lifts 11 minutes from now.
        for (const password of [OPERATOR_PASSWORD, "wrong-password-6"]) {
          const throttled = await attempt("throttled-user", password);
          assertError(throttled, 429, "LOGIN_THROTTLED", "sixth attempt");
          assert.equal(throttled.headers.get("retry-after"), String(11 * 60), "Retry-After in seconds");
        }
        const throttledRows = await cp.ctx.controlDb
          .selectFrom("agent_login_logs")
          .select(["result", "reason"])
          .where("username", "=", "throttled-user")
          .where("result", "=", "throttled")
          .execute();
        assert.equal(throttledRows.length, 2);
        assertError(await attempt("THROTTLED-USER", OPERATOR_PASSWORD), 429, "LOGIN_THROTTLED", "usernames are case-insensitive");

        const bystander = await attempt("bystander", OPERATOR_PASSWORD);
        assertOk(bystander, 200, "another username from the same (null) IP");
        keep(body(bystander) as unknown as Tokens);
        const elsewhere = await attempt("throttled-user", OPERATOR_PASSWORD, "203.0.113.50");
        assertOk(elsewhere, 200, "the same username from another IP");
        keep(body(elsewhere) as unknown as Tokens);

        cp.clock.advance(11 * MINUTE - 1000);
        const almost = await attempt("throttled-user", OPERATOR_PASSWORD);
        assertError(almost, 429, "LOGIN_THROTTLED", "one second before the window ends");
        assert.equal(almost.headers.get("retry-after"), "1");
        cp.clock.advance(1000);
        const unlocked = await attempt("throttled-user", OPERATOR_PASSWORD);
        assertOk(unlocked, 200, "after the window");
        keep(body(unlocked) as unknown as Tokens);
      });

      it("logs carry no password or token", () => {
        assertNoSecretsLogged(cp, secrets);
      });
    });
  });
}
