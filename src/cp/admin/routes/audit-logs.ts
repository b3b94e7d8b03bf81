/**
 * The seven audit trails over HTTP: GET /audit-logs (end users), /login-logs (end-user logins),
 * /agent-audit-logs, /agent-login-logs, /pki/audit-logs, /nodes/audit-logs, /nodes/auth-events,
 * and POST /audit/verify (the hash chains of all of them).
 *
 * Every log takes page, page_size, from, to and the filters of its table below: the shared
 * names actor, target, action and result where the log has such a column, and its own column
 * names. A filter the log does not have, or a value out of its form, is a 400 naming it: a typo
 * must not quietly list everything.
 */
import type { Handler } from "hono";
import { Hono } from "hono";
import { z } from "zod";
import { AUDIT_LOG_NAMES, type AuditLogName } from "../../../shared/audit/logs.js";
import { fieldInvalid, parseOrThrow } from "../../../shared/errors/index.js";
import { readJson } from "../../http/json-body.js";
import { listAuditLog } from "../../services/audit/log-queries.js";
import { verifyAuditChains } from "../../services/audit/verify.js";
import type { CpContext } from "../../services/context.js";
import { parsePageRequest, parseTimeRange } from "../../services/pagination.js";
import type { AdminEnv } from "../env.js";
import { guard } from "../middleware.js";
import { ID_PATTERN } from "../schemas.js";

interface FilterSpec {
  column: string;
  value: z.ZodType<string>;
}

const id = (what: string) => z.string().regex(ID_PATTERN, `is not ${what}`);
const eventName = (example: string) => z.string().regex(/^[a-z_.]{1,64}$/, `must be an event name such as ${example}`);
/** Agent ids, "system", "job:<kind>". */
const actorName = z.string().regex(/^[A-Za-z0-9._:@-]{1,128}$/, "must be 1-128 letters, digits, . _ : @ -");
/** What a client typed as a user name: any printable text, as the login log stores it. */
const typedName = z.string().regex(/^[^\p{Cc}]{1,128}$/u, "must be 1-128 printable characters");
const agentUsername = z
  .string()
  .regex(/^[A-Za-z0-9._-]{1,64}$/, "must be 1-64 letters, digits, . _ -")
  .transform((s) => s.toLowerCase());
const serial = z
  .string()
  .regex(/^[0-9A-Fa-f:]{1,128}$/, "must be a hexadecimal serial number")
  .transform((s) => s.replace(/:/g, "").toLowerCase());

const f = (column: string, value: z.ZodType<string>): FilterSpec => ({ column, value });

/** Query parameter → column, per log. */
export const AUDIT_LOG_FILTERS: Record<AuditLogName, Record<string, FilterSpec>> = {
  "audit-logs": {
    actor: f("actor", actorName),
    target: f("user_id", id("a user id")),
    action: f("event", eventName("user.created")),
    app_id: f("app_id", id("an application id")),
    user_id: f("user_id", id("a user id")),
    event: f("event", eventName("user.created")),
  },
  "login-logs": {
    actor: f("username", typedName),
    action: f("method", z.enum(["password", "card", "token", "register"])),
    result: f("result", z.enum(["success", "failure", "throttled"])),
    app_id: f("app_id", id("an application id")),
    user_id: f("user_id", id("a user id")),
    username: f("username", typedName),
    method: f("method", z.enum(["password", "card", "token", "register"])),
    node_id: f("node_id", id("a node id")),
  },
  "agent-audit-logs": {
    actor: f("agent_id", id("an agent id")),
    target: f("target_id", id("an id")),
    action: f("action", eventName("node.create")),
    result: f("result", z.enum(["success", "failure"])),
    agent_id: f("agent_id", id("an agent id")),
    target_type: f("target_type", z.string().regex(/^[a-z_]{1,32}$/, "must be a target type such as node")),
  },
  "agent-login-logs": {
    actor: f("username", agentUsername),
    result: f("result", z.enum(["success", "failure", "throttled", "pending"])),
    username: f("username", agentUsername),
    agent_id: f("agent_id", id("an agent id")),
  },
  "pki-audit-logs": {
    actor: f("actor", actorName),
    target: f("certificate_id", id("a certificate id")),
    action: f("event", eventName("cert.issued")),
    event: f("event", eventName("cert.issued")),
    certificate_id: f("certificate_id", id("a certificate id")),
    serial: f("serial_hex", serial),
    job_id: f("job_id", id("a job id")),
  },
  "node-audit-logs": {
    actor: f("actor", actorName),
    target: f("node_id", id("a node id")),
    action: f("event", eventName("node.created")),
    node_id: f("node_id", id("a node id")),
    event: f("event", eventName("node.created")),
  },
  "node-auth-events": {
    // The node the refused certificate named is who acted; there is no target.
    actor: f("node_id", id("a node id")),
    action: f("event", eventName("node_cert_revoked")),
    node_id: f("node_id", id("a node id")),
    event: f("event", eventName("node_cert_revoked")),
  },
};

const PAGE_AND_TIME = new Set(["page", "page_size", "from", "to"]);

/** GET handler (after the read guard) listing `name` with its filters. */
export function auditLogRoute(ctx: CpContext, name: AuditLogName): [ReturnType<typeof guard>, Handler<AdminEnv>] {
  const filters = AUDIT_LOG_FILTERS[name];
  const known = Object.keys(filters);
  const listLog: Handler<AdminEnv> = async (c) => {
    const query = c.req.query();
    for (const key of Object.keys(query)) {
      if (!PAGE_AND_TIME.has(key) && !Object.hasOwn(filters, key)) {
        throw fieldInvalid(key, `is not a filter of this log; it takes page, page_size, from, to, ${known.join(", ")}`);
      }
    }
    const request = parsePageRequest(query);
    const range = parseTimeRange(query);
    const equals: Array<[string, string]> = [];
    for (const [key, spec] of Object.entries(filters)) {
      const raw = query[key];
      if (raw === undefined) continue;
      equals.push([spec.column, parseOrThrow(spec.value, raw, [key])]);
    }
    return c.json(await listAuditLog(ctx, name, { ...range, equals }, request));
  };
  return [guard(ctx, "read"), listLog];
}

const verifyBody = z.strictObject({
  log: z.enum(AUDIT_LOG_NAMES).optional(),
});

/** GET /audit-logs, GET /login-logs, POST /audit/verify (root and admin only: it reads every trail whole). */
export function auditRoutes(ctx: CpContext): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/audit-logs", ...auditLogRoute(ctx, "audit-logs"));
  routes.get("/login-logs", ...auditLogRoute(ctx, "login-logs"));
  routes.post("/audit/verify", guard(ctx, "write", { action: "audit.verify", target: null }), async (c) => {
    const body = await readJson(c, verifyBody);
    const report = await verifyAuditChains(ctx, body.log ? [body.log] : AUDIT_LOG_NAMES);
    c.set("auditDetail", { logs: report.logs.map((l) => l.log), ok: report.ok });
    return c.json(report);
  });
  return routes;
}
