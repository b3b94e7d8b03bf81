/**
 * Runtime DB, first schema: end users, invite codes, card keys, sessions and device bindings,
 * the applied security state (blacklist, auth epochs) with per-node sync cursors, and the
 * business login/audit trails.
 */
import { createIndex, type MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  await db.schema
    .createTable("users")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("username", "text", (c) => c.notNull())
    .addColumn("username_normalized", "text", (c) => c.notNull())
    .addColumn("email", "text")
    .addColumn("password_hash", "text", (c) => c.notNull())
    .addColumn("auth_epoch", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("invite_code_id", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("last_login_at", "bigint")
    .addUniqueConstraint("users_app_username", ["app_id", "username_normalized"])
    .execute();

  await db.schema
    .createTable("invite_codes")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("code_hash", "text", (c) => c.notNull().unique())
    .addColumn("max_uses", "integer", (c) => c.notNull())
    .addColumn("used_count", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("expires_at", "bigint")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .execute();

  await db.schema
    .createTable("card_keys")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("code_hash", "text", (c) => c.notNull().unique())
    .addColumn("code_hint", "text", (c) => c.notNull())
    .addColumn("duration_seconds", "bigint", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("batch_id", "text")
    .addColumn("note", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addColumn("activated_at", "bigint")
    .addColumn("expires_at", "bigint")
    .addColumn("user_id", "text")
    .addColumn("bound_device_id", "text")
    .execute();
  await createIndex(db, "card_keys_app_created", "card_keys", ["app_id", "created_at"]);
  await createIndex(db, "card_keys_app_activated", "card_keys", ["app_id", "activated_at"]);

  await db.schema
    .createTable("sessions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("token_hash", "text", (c) => c.notNull().unique())
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text")
    .addColumn("card_key_id", "text")
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("auth_epoch", "bigint", (c) => c.notNull())
    .addColumn("node_id", "text")
    .addColumn("ip", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .addColumn("last_heartbeat_at", "bigint", (c) => c.notNull())
    .addColumn("revoked_at", "bigint")
    .addColumn("revoke_reason", "text")
    .execute();
  await createIndex(db, "sessions_user", "sessions", ["user_id"]);
  await createIndex(db, "sessions_expires", "sessions", ["expires_at"]);

  await db.schema
    .createTable("device_bindings")
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("last_seen_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("device_bindings_pk", ["app_id", "user_id", "device_id"])
    .execute();

  await db.schema
    .createTable("applied_blacklist")
    .addColumn("entry_id", "text", (c) => c.primaryKey())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("value", "text", (c) => c.notNull())
    .addColumn("reason", "text")
    .addColumn("expires_at", "bigint")
    .addColumn("change_id", "bigint", (c) => c.notNull())
    .addColumn("applied_at", "bigint", (c) => c.notNull())
    .execute();
  await createIndex(db, "applied_blacklist_kind_value", "applied_blacklist", ["kind", "value"]);

  await db.schema
    .createTable("applied_auth_epochs")
    .addColumn("user_id", "text", (c) => c.primaryKey())
    .addColumn("app_id", "text")
    .addColumn("epoch", "bigint", (c) => c.notNull())
    .addColumn("change_id", "bigint", (c) => c.notNull())
    .addColumn("applied_at", "bigint", (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("sync_cursors")
    .addColumn("node_id", "text", (c) => c.notNull())
    .addColumn("stream", "text", (c) => c.notNull())
    .addColumn("cursor", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("sync_cursors_pk", ["node_id", "stream"])
    .execute();

  await db.schema
    .createTable("login_logs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text")
    .addColumn("username", "text")
    .addColumn("method", "text", (c) => c.notNull())
    .addColumn("result", "text", (c) => c.notNull())
    .addColumn("reason", "text")
    .addColumn("ip", "text")
    .addColumn("device_id", "text")
    .addColumn("node_id", "text")
    .execute();
  await createIndex(db, "login_logs_time", "login_logs", ["created_at"]);
  await createIndex(db, "login_logs_app_time", "login_logs", ["app_id", "created_at"]);

  await db.schema
    .createTable("user_audit_logs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text")
    .addColumn("event", "text", (c) => c.notNull())
    .addColumn("actor", "text", (c) => c.notNull())
    .addColumn("detail", "text")
    .execute();
  await createIndex(db, "user_audit_logs_time", "user_audit_logs", ["created_at"]);
}

export async function down(): Promise<void> {
  throw new Error("0001_init cannot be rolled back");
}
