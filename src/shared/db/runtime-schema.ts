/**
 * Row types of the Runtime DB: the business database shared by the nodes of one deployment
 * (and opened by the Control Plane for business administration). Keep in step with
 * migrations/runtime/.
 */
import type { ChainColumns } from "./audit-chains.js";

export interface UsersTable {
  id: string;
  app_id: string;
  username: string;
  username_normalized: string;
  email: string | null;
  password_hash: string;
  auth_epoch: number;
  status: string;
  invite_code_id: string | null;
  created_at: number;
  updated_at: number;
  last_login_at: number | null;
}

export interface InviteCodesTable {
  id: string;
  app_id: string;
  code_hash: string;
  max_uses: number;
  used_count: number;
  expires_at: number | null;
  created_at: number;
  created_by: string | null;
}

export interface CardKeysTable {
  id: string;
  app_id: string;
  code_hash: string;
  code_hint: string;
  duration_seconds: number;
  status: string;
  batch_id: string | null;
  note: string | null;
  created_at: number;
  created_by: string | null;
  activated_at: number | null;
  expires_at: number | null;
  user_id: string | null;
  bound_device_id: string | null;
}

export interface SessionsTable {
  id: string;
  token_hash: string;
  app_id: string;
  user_id: string | null;
  card_key_id: string | null;
  device_id: string;
  auth_epoch: number;
  node_id: string | null;
  ip: string | null;
  created_at: number;
  expires_at: number;
  last_heartbeat_at: number;
  revoked_at: number | null;
  revoke_reason: string | null;
}

export interface DeviceBindingsTable {
  app_id: string;
  user_id: string;
  device_id: string;
  created_at: number;
  last_seen_at: number;
}

export interface AppliedBlacklistTable {
  entry_id: string;
  kind: string;
  value: string;
  reason: string | null;
  expires_at: number | null;
  change_id: number;
  applied_at: number;
  /** Set when the entry was removed: a tombstone that outranks older adds (see migration 0002). */
  removed_at: number | null;
}

export interface AppliedAuthEpochsTable {
  user_id: string;
  app_id: string | null;
  epoch: number;
  change_id: number;
  applied_at: number;
}

export interface SyncCursorsTable {
  node_id: string;
  stream: string;
  cursor: number;
  updated_at: number;
}

/** Audit-chained: chain_id/chain_seq/chain_hash (shared/db/audit-chains.ts), null on rows older than the chains. */
export interface LoginLogsTable extends ChainColumns {
  id: string;
  created_at: number;
  app_id: string;
  user_id: string | null;
  username: string | null;
  method: string;
  result: string;
  reason: string | null;
  ip: string | null;
  device_id: string | null;
  node_id: string | null;
}

/** Audit-chained: chain_id/chain_seq/chain_hash (shared/db/audit-chains.ts), null on rows older than the chains. */
export interface UserAuditLogsTable extends ChainColumns {
  id: string;
  created_at: number;
  app_id: string;
  user_id: string | null;
  event: string;
  actor: string;
  detail: string | null;
}

/** A user's own variables (see migrations/runtime/0005 and shared/db/runtime/user-variables.ts). */
export interface UserVariablesTable {
  app_id: string;
  user_id: string;
  key: string;
  value: string;
  created_at: number;
  updated_at: number;
}

export interface RuntimeSchema {
  users: UsersTable;
  invite_codes: InviteCodesTable;
  card_keys: CardKeysTable;
  sessions: SessionsTable;
  device_bindings: DeviceBindingsTable;
  applied_blacklist: AppliedBlacklistTable;
  applied_auth_epochs: AppliedAuthEpochsTable;
  sync_cursors: SyncCursorsTable;
  login_logs: LoginLogsTable;
  user_audit_logs: UserAuditLogsTable;
  user_variables: UserVariablesTable;
}
