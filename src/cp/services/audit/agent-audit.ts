import type { Kysely } from "kysely";
import { writeChained } from "../../../shared/db/audit-chains.js";
import type { ControlSchema } from "../../../shared/db/index.js";
import { newId } from "../../../shared/ids.js";
import type { Clock } from "../../../shared/time/index.js";
import type { Actor } from "../context.js";

export interface AgentAuditEntry {
  action: string;
  targetType?: string | null;
  targetId?: string | null;
  result: "success" | "failure";
  errorCode?: string | null;
  detail?: Record<string, unknown>;
}

/** Appends one row to the agent audit trail (audit-chained). Never carries secrets: callers pass ids, not values. */
export async function writeAgentAudit(db: Kysely<ControlSchema>, clock: Clock, actor: Actor, entry: AgentAuditEntry): Promise<void> {
  const row = {
    id: newId("aud"),
    created_at: clock.now(),
    agent_id: actor.agentId,
    agent_username: actor.username,
    action: entry.action,
    target_type: entry.targetType ?? null,
    target_id: entry.targetId ?? null,
    result: entry.result,
    error_code: entry.errorCode ?? null,
    request_id: actor.requestId,
    ip: actor.ip,
    detail: entry.detail ? JSON.stringify(entry.detail) : null,
  };
  await writeChained(db, "agent_audit_logs", row, (values) => db.insertInto("agent_audit_logs").values(values).compile());
}
