import type { HttpBindings } from "@hono/node-server";
import type { AuthenticatedAgent } from "../services/agents/sessions.js";
import type { Actor } from "../services/context.js";

/** Per-request state of the admin API. */
export interface AdminEnv {
  Bindings: Partial<HttpBindings>;
  Variables: {
    requestId: string;
    remoteIp: string | null;
    agent: AuthenticatedAgent;
    /** Set by a handler so the audit line names what it acted on. */
    auditTargetId: string;
    auditDetail: Record<string, unknown>;
  };
}

export function actorOf(c: {
  get(key: "requestId"): string;
  get(key: "remoteIp"): string | null;
  get(key: "agent"): AuthenticatedAgent | undefined;
}): Actor {
  const agent = c.get("agent");
  return { agentId: agent?.agentId ?? null, username: agent?.username ?? null, ip: c.get("remoteIp"), requestId: c.get("requestId") };
}
