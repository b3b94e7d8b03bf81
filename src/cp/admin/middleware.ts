/**
 * Admin API middleware, each a named step so a stack trace says which check failed:
 * request context and access log, the setup gate, bearer authentication, role checks and the
 * agent audit trail for state-changing calls.
 */
import type { Context, MiddlewareHandler } from "hono";
import { AuthNexusError, isAuthNexusError } from "../../shared/errors/index.js";
import type { Logger } from "../../shared/log/index.js";
import { type Permission, roleAllows } from "../services/agents/roles.js";
import { authenticateAccessToken } from "../services/agents/sessions.js";
import { writeAgentAudit } from "../services/audit/agent-audit.js";
import type { CpContext } from "../services/context.js";
import { type AdminEnv, actorOf } from "./env.js";
import { ID_PATTERN } from "./schemas.js";

const CLIENT_REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

export function requestContext(log: Logger, newRequestId: () => string): MiddlewareHandler<AdminEnv> {
  return async function requestContextStep(c, next) {
    const started = performance.now();
    const offered = c.req.header("x-request-id");
    const requestId = offered && CLIENT_REQUEST_ID.test(offered) ? offered : newRequestId();
    c.set("requestId", requestId);
    c.set("remoteIp", c.env?.incoming?.socket?.remoteAddress ?? null);
    c.header("X-Request-Id", requestId);
    c.header("Cache-Control", "no-store");
    await next();
    log.info("request", {
      request_id: requestId,
      method: c.req.method,
      path: c.req.path.slice(0, 256),
      status: c.res.status,
      duration_ms: Math.round((performance.now() - started) * 100) / 100,
      agent_id: c.get("agent")?.agentId,
      ip: c.get("remoteIp"),
    });
  };
}

/** Before setup completes, only /admin/v1/setup/* is served: the CP fails closed. */
export function setupGate(isSetupComplete: () => boolean | Promise<boolean>): MiddlewareHandler<AdminEnv> {
  return async function setupGateStep(c, next) {
    if (!c.req.path.startsWith("/admin/v1/setup/") && !(await isSetupComplete())) throw new AuthNexusError("SETUP_REQUIRED");
    await next();
  };
}

const CHALLENGE = 'Bearer realm="authnexus-admin"';

function bearerToken(c: Context): string {
  const header = c.req.header("authorization") ?? "";
  const match = /^Bearer\s+([A-Za-z0-9_-]{16,512})\s*$/i.exec(header);
  if (!match?.[1]) throw new AuthNexusError("UNAUTHENTICATED", { headers: { "WWW-Authenticate": CHALLENGE } });
  return match[1];
}

/** Every 401 from here carries the RFC 6750 challenge, whether the token was absent or refused. */
export function authenticate(ctx: CpContext): MiddlewareHandler<AdminEnv> {
  return async function authenticateStep(c, next) {
    const token = bearerToken(c);
    try {
      c.set("agent", await authenticateAccessToken(ctx, token));
    } catch (error) {
      if (!isAuthNexusError(error, "UNAUTHENTICATED")) throw error;
      throw new AuthNexusError("UNAUTHENTICATED", {
        message: error.message,
        headers: { "WWW-Authenticate": `${CHALLENGE}, error="invalid_token"` },
      });
    }
    await next();
  };
}

export function requirePermission(permission: Permission): MiddlewareHandler<AdminEnv> {
  return async function requirePermissionStep(c, next) {
    const agent = c.get("agent");
    if (!roleAllows(agent.role, permission)) {
      throw new AuthNexusError("FORBIDDEN", { detail: { role: agent.role, permission } });
    }
    await next();
  };
}

/**
 * Writes the agent audit line after the handler (and the error handler) ran, so refusals are
 * recorded too. Runs after authentication: an unauthenticated call has no "who" to record.
 */
export function audited(ctx: CpContext, action: string, targetType: string | null): MiddlewareHandler<AdminEnv> {
  return async function auditStep(c, next) {
    let thrown: unknown;
    try {
      await next();
    } catch (error) {
      thrown = error;
    }
    const error = thrown ?? c.error;
    const failed = error !== undefined || c.res.status >= 400;
    const code = error instanceof AuthNexusError ? error.code : error ? "INTERNAL" : `HTTP_${c.res.status}`;
    try {
      await writeAgentAudit(ctx.controlDb, ctx.clock, actorOf(c), {
        action,
        targetType,
        targetId: c.get("auditTargetId") ?? pathId(c),
        result: failed ? "failure" : "success",
        errorCode: failed ? code : null,
        ...(c.get("auditDetail") ? { detail: c.get("auditDetail") } : {}),
      });
    } catch (error) {
      // The change has committed; turning its answer into a 500 would lose what it returned
      // (an app secret is shown only once). The failure is logged loudly instead.
      ctx.log.category("Admin").error("audit.write_failed", { action, request_id: c.get("requestId"), error: (error as Error).message });
    }
    if (thrown !== undefined) throw thrown;
  };
}

/** The route's :id when it could be one of ours; anything else is not worth recording verbatim. */
function pathId(c: Context): string | null {
  const id = c.req.param("id");
  return id && ID_PATTERN.test(id) ? id : null;
}

/** authenticate → audit (for writes) → permission, composed into the one step every admin route starts with. */
export function guard(
  ctx: CpContext,
  permission: Permission,
  audit?: { action: string; target: string | null },
): MiddlewareHandler<AdminEnv> {
  const authenticateStep = authenticate(ctx);
  const permissionStep = requirePermission(permission);
  const auditStep = audit ? audited(ctx, audit.action, audit.target) : null;
  return async function guardStep(c, next) {
    await authenticateStep(c, async () => {
      const checkThenHandle = () => permissionStep(c, next) as Promise<void>;
      await (auditStep ? auditStep(c, checkThenHandle) : checkThenHandle());
    });
  };
}
