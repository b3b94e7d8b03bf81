/**
 * Control DB, first schema: setup state, agents, applications, the PKI inventory and jobs,
 * nodes and their deploy packages, commands, versioned configs, cloud functions, the two
 * security change logs (Channel 3) and the audit/login trails.
 */
import { sql } from "kysely";
import { binaryType, createIndex, type MigrationDb, withSequenceKey } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  const bin = binaryType(db);

  await db.schema
    .createTable("setup_state")
    .addColumn("id", "integer", (c) => c.primaryKey())
    .addColumn("console_token_hash", "text")
    .addColumn("console_token_created_at", "bigint")
    .addColumn("completed_at", "bigint")
    .addColumn("completed_by", "text")
    .addColumn("organisation_name", "text")
    .addColumn("master_key_check", bin)
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addCheckConstraint("setup_state_singleton", sql`id = 1`)
    .execute();

  await db.schema
    .createTable("server_secrets")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("ciphertext", bin, (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("agents")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("username", "text", (c) => c.notNull().unique())
    .addColumn("display_name", "text")
    .addColumn("password_hash", "text", (c) => c.notNull())
    .addColumn("role", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addColumn("password_changed_at", "bigint", (c) => c.notNull())
    .addColumn("last_login_at", "bigint")
    .execute();

  await db.schema
    .createTable("agent_sessions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("agent_id", "text", (c) => c.notNull().references("agents.id").onDelete("cascade"))
    .addColumn("access_token_hash", "text", (c) => c.notNull().unique())
    .addColumn("access_expires_at", "bigint", (c) => c.notNull())
    .addColumn("refresh_token_hash", "text", (c) => c.notNull().unique())
    .addColumn("refresh_expires_at", "bigint", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("last_used_at", "bigint", (c) => c.notNull())
    .addColumn("revoked_at", "bigint")
    .addColumn("revoke_reason", "text")
    .addColumn("ip", "text")
    .addColumn("user_agent", "text")
    .execute();
  await createIndex(db, "agent_sessions_agent", "agent_sessions", ["agent_id"]);

  // Every refresh token a session has spent: presenting one again means it was copied.
  await db.schema
    .createTable("agent_spent_refresh_tokens")
    .addColumn("token_hash", "text", (c) => c.primaryKey())
    .addColumn("session_id", "text", (c) => c.notNull().references("agent_sessions.id").onDelete("cascade"))
    .addColumn("spent_at", "bigint", (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("agent_login_logs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("username", "text", (c) => c.notNull())
    .addColumn("agent_id", "text")
    .addColumn("ip", "text")
    .addColumn("user_agent", "text")
    .addColumn("result", "text", (c) => c.notNull())
    .addColumn("reason", "text")
    .execute();
  await createIndex(db, "agent_login_logs_throttle", "agent_login_logs", ["username", "ip", "created_at"]);
  await createIndex(db, "agent_login_logs_time", "agent_login_logs", ["created_at"]);

  await db.schema
    .createTable("agent_audit_logs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("agent_id", "text")
    .addColumn("agent_username", "text")
    .addColumn("action", "text", (c) => c.notNull())
    .addColumn("target_type", "text")
    .addColumn("target_id", "text")
    .addColumn("result", "text", (c) => c.notNull())
    .addColumn("error_code", "text")
    .addColumn("request_id", "text")
    .addColumn("ip", "text")
    .addColumn("detail", "text")
    .execute();
  await createIndex(db, "agent_audit_logs_time", "agent_audit_logs", ["created_at"]);
  await createIndex(db, "agent_audit_logs_target", "agent_audit_logs", ["target_type", "target_id"]);

  await db.schema
    .createTable("applications")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("description", "text")
    .addColumn("secret_hash", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addColumn("deleted_at", "bigint")
    .addColumn("deleted_by", "text")
    .execute();
  // A name is unique among live applications; the recycle bin may hold old namesakes.
  await createIndex(db, "applications_live_name", "applications", ["name"], { unique: true, where: "deleted_at is null" });

  await db.schema
    .createTable("certificate_authorities")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("profile", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("subject", "text", (c) => c.notNull())
    .addColumn("serial_hex", "text", (c) => c.notNull())
    .addColumn("cert_pem", "text", (c) => c.notNull())
    .addColumn("key_ciphertext", bin, (c) => c.notNull())
    .addColumn("not_before", "bigint", (c) => c.notNull())
    .addColumn("not_after", "bigint", (c) => c.notNull())
    .addColumn("fingerprint_sha256", "text", (c) => c.notNull().unique())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  // At most one active CA per profile; retired ones stay for verification and OCSP.
  await createIndex(db, "certificate_authorities_active", "certificate_authorities", ["profile"], {
    unique: true,
    where: "status = 'active'",
  });

  await db.schema
    .createTable("certificates")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("ca_id", "text", (c) => c.notNull().references("certificate_authorities.id"))
    .addColumn("ca_profile", "text", (c) => c.notNull())
    .addColumn("leaf_profile", "text", (c) => c.notNull())
    .addColumn("serial_hex", "text", (c) => c.notNull())
    .addColumn("subject", "text", (c) => c.notNull())
    .addColumn("sans", "text", (c) => c.notNull())
    .addColumn("not_before", "bigint", (c) => c.notNull())
    .addColumn("not_after", "bigint", (c) => c.notNull())
    .addColumn("purpose", "text", (c) => c.notNull())
    .addColumn("owner_type", "text")
    .addColumn("owner_id", "text")
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("revoked_at", "bigint")
    .addColumn("revocation_reason", "text")
    .addColumn("cert_pem", "text", (c) => c.notNull())
    .addColumn("fingerprint_sha256", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addUniqueConstraint("certificates_ca_serial", ["ca_id", "serial_hex"])
    .execute();
  await createIndex(db, "certificates_owner", "certificates", ["owner_type", "owner_id"]);
  await createIndex(db, "certificates_not_after", "certificates", ["not_after"]);

  await db.schema
    .createTable("pki_audit_logs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("event", "text", (c) => c.notNull())
    .addColumn("certificate_id", "text")
    .addColumn("ca_profile", "text")
    .addColumn("serial_hex", "text")
    .addColumn("actor", "text", (c) => c.notNull())
    .addColumn("detail", "text")
    .execute();
  await createIndex(db, "pki_audit_logs_time", "pki_audit_logs", ["created_at"]);

  await db.schema
    .createTable("pki_jobs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("target_type", "text")
    .addColumn("target_id", "text")
    .addColumn("payload", "text", (c) => c.notNull())
    .addColumn("result", "text")
    .addColumn("attempts", "integer", (c) => c.notNull())
    .addColumn("max_attempts", "integer", (c) => c.notNull())
    .addColumn("last_error", "text")
    .addColumn("run_after", "bigint", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("started_at", "bigint")
    .addColumn("finished_at", "bigint")
    .addColumn("created_by", "text")
    .execute();
  await createIndex(db, "pki_jobs_queue", "pki_jobs", ["status", "run_after"]);

  await db.schema
    .createTable("nodes")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull().unique())
    .addColumn("host", "text", (c) => c.notNull())
    .addColumn("business_port", "integer", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addColumn("server_cert_id", "text")
    .addColumn("client_cert_id", "text")
    .addColumn("previous_client_cert_id", "text")
    .addColumn("last_checkin_at", "bigint")
    .addColumn("sse_connected", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("sse_changed_at", "bigint")
    .addColumn("ocsp_last_applied_at", "bigint")
    .addColumn("software_version", "text")
    .addColumn("metadata", "text")
    .addColumn("metrics", "text")
    .addColumn("app_versions", "text")
    .addColumn("online_users", "integer", (c) => c.notNull().defaultTo(0))
    .execute();

  await db.schema
    .createTable("deploy_packages")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("node_id", "text", (c) => c.notNull().references("nodes.id").onDelete("cascade"))
    .addColumn("job_id", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("sha256", "text", (c) => c.notNull())
    .addColumn("size_bytes", "integer", (c) => c.notNull())
    .addColumn("archive_ciphertext", bin, (c) => c.notNull())
    .addColumn("downloaded_at", "bigint")
    .addColumn("superseded_at", "bigint")
    .execute();
  await createIndex(db, "deploy_packages_node", "deploy_packages", ["node_id"]);

  await withSequenceKey(db, db.schema.createTable("commands"), "seq")
    .addColumn("id", "text", (c) => c.notNull().unique())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("payload", "text", (c) => c.notNull())
    .addColumn("target_node_id", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addColumn("expires_at", "bigint")
    .execute();
  await createIndex(db, "commands_target", "commands", ["target_node_id", "seq"]);

  await db.schema
    .createTable("command_results")
    .addColumn("command_seq", "bigint", (c) => c.notNull().references("commands.seq").onDelete("cascade"))
    .addColumn("node_id", "text", (c) => c.notNull().references("nodes.id").onDelete("cascade"))
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("output", "text")
    .addColumn("reported_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("command_results_pk", ["command_seq", "node_id"])
    .execute();

  await db.schema
    .createTable("config_versions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("config_type", "text", (c) => c.notNull())
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("version", "bigint", (c) => c.notNull())
    .addColumn("content", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addUniqueConstraint("config_versions_type_scope_version", ["config_type", "scope", "version"])
    .execute();

  await db.schema
    .createTable("node_config_states")
    .addColumn("node_id", "text", (c) => c.notNull().references("nodes.id").onDelete("cascade"))
    .addColumn("config_type", "text", (c) => c.notNull())
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("sent_version", "bigint")
    .addColumn("sent_at", "bigint")
    .addColumn("applied_version", "bigint")
    .addColumn("applied_at", "bigint")
    .addColumn("error_version", "bigint")
    .addColumn("error_message", "text")
    .addColumn("error_at", "bigint")
    .addPrimaryKeyConstraint("node_config_states_pk", ["node_id", "config_type", "scope"])
    .execute();

  await db.schema
    .createTable("cloud_functions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("app_id", "text", (c) => c.notNull().references("applications.id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("script", "text", (c) => c.notNull())
    .addColumn("version", "bigint", (c) => c.notNull())
    .addColumn("timeout_ms", "integer", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addUniqueConstraint("cloud_functions_app_name", ["app_id", "name"])
    .execute();

  await withSequenceKey(db, db.schema.createTable("auth_epoch_changes"), "id")
    .addColumn("app_id", "text")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("epoch", "bigint", (c) => c.notNull())
    .addColumn("reason", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .execute();
  await createIndex(db, "auth_epoch_changes_user", "auth_epoch_changes", ["user_id"]);

  await db.schema
    .createTable("server_blacklist_entries")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("value", "text", (c) => c.notNull())
    .addColumn("reason", "text")
    .addColumn("expires_at", "bigint")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addColumn("removed_at", "bigint")
    .execute();
  await createIndex(db, "server_blacklist_entries_live", "server_blacklist_entries", ["kind", "value"], {
    unique: true,
    where: "removed_at is null",
  });

  await withSequenceKey(db, db.schema.createTable("server_blacklist_changes"), "id")
    .addColumn("entry_id", "text", (c) => c.notNull())
    .addColumn("op", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("value", "text", (c) => c.notNull())
    .addColumn("reason", "text")
    .addColumn("expires_at", "bigint")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("node_delta_cursors")
    .addColumn("node_id", "text", (c) => c.notNull().references("nodes.id").onDelete("cascade"))
    .addColumn("stream", "text", (c) => c.notNull())
    .addColumn("cursor", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("node_delta_cursors_pk", ["node_id", "stream"])
    .execute();

  await db.schema
    .createTable("node_auth_events")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("node_id", "text")
    .addColumn("event", "text", (c) => c.notNull())
    .addColumn("peer", "text")
    .addColumn("cert_serial", "text")
    .addColumn("detail", "text")
    .execute();
  await createIndex(db, "node_auth_events_time", "node_auth_events", ["created_at"]);

  await db.schema
    .createTable("node_audit_logs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("node_id", "text", (c) => c.notNull())
    .addColumn("event", "text", (c) => c.notNull())
    .addColumn("actor", "text", (c) => c.notNull())
    .addColumn("detail", "text")
    .execute();
  await createIndex(db, "node_audit_logs_time", "node_audit_logs", ["created_at"]);
}

export async function down(): Promise<void> {
  // Forward-only: the first schema is never rolled back in place; restore from backup instead.
  throw new Error("0001_init cannot be rolled back");
}
