/**
 * The business trails: every login attempt (the login log) and every change made to an end
 * user (the user audit log), written by nodes and by the CP alike. Both are audit-chained
 * (shared/db/audit-chains.ts): inside a transaction the row is sent with its COMMIT.
 */
import type { Kysely } from "kysely";
import { newId, newTimeOrderedId } from "../../ids.js";
import { writeChained } from "../audit-chains.js";
import { precompiled } from "../precompiled.js";
import type { LoginLogsTable, RuntimeSchema, UserAuditLogsTable } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

export type LoginLogEntry = Omit<LoginLogsTable, "id" | "chain_id" | "chain_seq" | "chain_hash">;

/** Precompiled: every login attempt writes one. */
const insertLoginLog = precompiled<LoginLogsTable, never>((db: RuntimeDb, p) =>
  db.insertInto("login_logs").values({
    id: p.id,
    created_at: p.created_at,
    app_id: p.app_id,
    user_id: p.user_id,
    username: p.username,
    method: p.method,
    result: p.result,
    reason: p.reason,
    ip: p.ip,
    device_id: p.device_id,
    node_id: p.node_id,
    chain_id: p.chain_id,
    chain_seq: p.chain_seq,
    chain_hash: p.chain_hash,
  }),
);

export async function writeLoginLog(db: RuntimeDb, entry: LoginLogEntry): Promise<void> {
  const row = { id: newTimeOrderedId("lgl", entry.created_at), ...entry };
  await writeChained(db, "login_logs", row, (values) => insertLoginLog.bind(db, values));
}

export type UserAuditEntry = Omit<UserAuditLogsTable, "id" | "chain_id" | "chain_seq" | "chain_hash">;

export async function writeUserAudit(db: RuntimeDb, entry: UserAuditEntry): Promise<void> {
  const row = { id: newId("ual"), ...entry };
  await writeChained(db, "user_audit_logs", row, (values) => db.insertInto("user_audit_logs").values(values).compile());
}
