/**
 * What the business plane reads on its hot paths and the business administration lists:
 * sessions by user, card and recent heartbeat; card keys by batch and state; users by
 * application and age; invite codes by application; the login log per user.
 */
import { createIndex, type MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await createIndex(db, "sessions_app_user", "sessions", ["app_id", "user_id"]);
  await createIndex(db, "sessions_card", "sessions", ["card_key_id"]);
  await createIndex(db, "sessions_app_heartbeat", "sessions", ["app_id", "last_heartbeat_at"]);
  await createIndex(db, "card_keys_app_batch", "card_keys", ["app_id", "batch_id"]);
  await createIndex(db, "card_keys_app_status", "card_keys", ["app_id", "status"]);
  await createIndex(db, "users_app_created", "users", ["app_id", "created_at"]);
  await createIndex(db, "invite_codes_app", "invite_codes", ["app_id", "created_at"]);
  await createIndex(db, "login_logs_user_time", "login_logs", ["user_id", "created_at"]);
  await createIndex(db, "user_audit_logs_app_time", "user_audit_logs", ["app_id", "created_at"]);
}

export async function down(db: MigrationDb): Promise<void> {
  for (const index of [
    "sessions_app_user",
    "sessions_card",
    "sessions_app_heartbeat",
    "card_keys_app_batch",
    "card_keys_app_status",
    "users_app_created",
    "invite_codes_app",
    "login_logs_user_time",
    "user_audit_logs_app_time",
  ]) {
    await db.schema.dropIndex(index).execute();
  }
}
