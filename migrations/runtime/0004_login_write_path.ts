/**
 * Fewer index pages written per login. Every b-tree a row is in costs a page write per login
 * (the keys are random or per-user, so nearly every change lands on a page of its own):
 * - sessions_app_heartbeat moved its row on every token login and session touch; listing an
 *   application's sessions now walks sessions_app_created (written once per session) instead;
 * - sessions_app_user duplicated sessions_user (user ids are unique across applications);
 * - sessions_user, sessions_card and login_logs_user_time only index the rows that have a user
 *   or a card: a card session has no user, a password session no card.
 * Session and login-log ids are time-ordered from this version on (src/shared/ids.ts), so their
 * primary-key index grows at its end instead of at random places.
 */
import { createIndex, type MigrationDb } from "../../src/shared/db/migration-helpers.js";

export async function up(db: MigrationDb): Promise<void> {
  for (const index of ["sessions_app_heartbeat", "sessions_app_user", "sessions_user", "sessions_card", "login_logs_user_time"])
    await db.schema.dropIndex(index).execute();
  await createIndex(db, "sessions_app_created", "sessions", ["app_id", "created_at"]);
  await createIndex(db, "sessions_user", "sessions", ["user_id"], { where: "user_id is not null" });
  await createIndex(db, "sessions_card", "sessions", ["card_key_id"], { where: "card_key_id is not null" });
  await createIndex(db, "login_logs_user_time", "login_logs", ["user_id", "created_at"], { where: "user_id is not null" });
}

export async function down(db: MigrationDb): Promise<void> {
  for (const index of ["sessions_app_created", "sessions_user", "sessions_card", "login_logs_user_time"])
    await db.schema.dropIndex(index).execute();
  await createIndex(db, "sessions_app_heartbeat", "sessions", ["app_id", "last_heartbeat_at"]);
  await createIndex(db, "sessions_app_user", "sessions", ["app_id", "user_id"]);
  await createIndex(db, "sessions_user", "sessions", ["user_id"]);
  await createIndex(db, "sessions_card", "sessions", ["card_key_id"]);
  await createIndex(db, "login_logs_user_time", "login_logs", ["user_id", "created_at"]);
}
