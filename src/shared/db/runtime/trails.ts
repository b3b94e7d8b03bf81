/**
 * The business trails: every login attempt (the login log) and every change made to an end
 * user (the user audit log), written by nodes and by the CP alike.
 */
import type { Kysely } from "kysely";
import { newId, newTimeOrderedId } from "../../ids.js";
import { precompiled } from "../precompiled.js";
import type { LoginLogsTable, RuntimeSchema, UserAuditLogsTable } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

export type LoginLogEntry = Omit<LoginLogsTable, "id">;

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
  }),
);

export async function writeLoginLog(db: RuntimeDb, entry: LoginLogEntry): Promise<void> {
  await insertLoginLog(db, { id: newTimeOrderedId("lgl", entry.created_at), ...entry });
}

export type UserAuditEntry = Omit<UserAuditLogsTable, "id">;

export async function writeUserAudit(db: RuntimeDb, entry: UserAuditEntry): Promise<void> {
  await db
    .insertInto("user_audit_logs")
    .values({ id: newId("ual"), ...entry })
    .execute();
}
