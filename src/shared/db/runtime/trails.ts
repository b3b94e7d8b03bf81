/**
 * The business trails: every login attempt (the login log) and every change made to an end
 * user (the user audit log), written by nodes and by the CP alike.
 */
import type { Kysely } from "kysely";
import { newId } from "../../ids.js";
import type { LoginLogsTable, RuntimeSchema, UserAuditLogsTable } from "../runtime-schema.js";

type RuntimeDb = Kysely<RuntimeSchema>;

export type LoginLogEntry = Omit<LoginLogsTable, "id">;

export async function writeLoginLog(db: RuntimeDb, entry: LoginLogEntry): Promise<void> {
  await db
    .insertInto("login_logs")
    .values({ id: newId("lgl"), ...entry })
    .execute();
}

export type UserAuditEntry = Omit<UserAuditLogsTable, "id">;

export async function writeUserAudit(db: RuntimeDb, entry: UserAuditEntry): Promise<void> {
  await db
    .insertInto("user_audit_logs")
    .values({ id: newId("ual"), ...entry })
    .execute();
}
