/**
 * The node management trail (node_audit_logs): created, provisioned, disabled, enabled,
 * deleted, package downloaded. Rows outlive their node (no foreign key), so a deleted node's
 * history stays readable.
 */
import type { Kysely } from "kysely";
import { writeChained } from "../../../shared/db/audit-chains.js";
import type { ControlSchema } from "../../../shared/db/control-schema.js";
import { newId } from "../../../shared/ids.js";
import type { Clock } from "../../../shared/time/index.js";
import type { Actor } from "../context.js";

export interface NodeAuditEntry {
  nodeId: string;
  event: string;
  /** An admin (its agent id is recorded, the username goes into detail) or a system actor name. */
  actor: Actor | string;
  detail?: Record<string, unknown>;
}

export async function writeNodeAudit(db: Kysely<ControlSchema>, clock: Clock, entry: NodeAuditEntry): Promise<void> {
  const byAgent = typeof entry.actor === "string" ? null : entry.actor;
  const detail = byAgent ? { ...entry.detail, agent_username: byAgent.username, request_id: byAgent.requestId } : entry.detail;
  const row = {
    id: newId("nal"),
    created_at: clock.now(),
    node_id: entry.nodeId,
    event: entry.event,
    actor: typeof entry.actor === "string" ? entry.actor : (entry.actor.agentId ?? "system"),
    detail: detail && Object.keys(detail).length > 0 ? JSON.stringify(detail) : null,
  };
  await writeChained(db, "node_audit_logs", row, (values) => db.insertInto("node_audit_logs").values(values).compile());
}

export interface NodeAuthEventEntry {
  /** The node the presented certificate names (null: none). */
  nodeId: string | null;
  event: string;
  peer: string | null;
  certSerial: string | null;
  detail?: Record<string, unknown>;
}

/** One refused node API call (node_auth_events), audit-chained like the other trails. */
export async function writeNodeAuthEvent(db: Kysely<ControlSchema>, clock: Clock, entry: NodeAuthEventEntry): Promise<void> {
  const row = {
    id: newId("nae"),
    created_at: clock.now(),
    node_id: entry.nodeId,
    event: entry.event,
    peer: entry.peer,
    cert_serial: entry.certSerial,
    detail: entry.detail ? JSON.stringify(entry.detail) : null,
  };
  await writeChained(db, "node_auth_events", row, (values) => db.insertInto("node_auth_events").values(values).compile());
}
