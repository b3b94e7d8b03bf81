/**
 * Row types of the Control DB, owned by the Control Plane. Timestamps are epoch milliseconds,
 * booleans 0/1, JSON columns are text. Keep in step with migrations/control/.
 */
import type { Generated } from "kysely";
import type { ChainColumns } from "./audit-chains.js";

export interface SetupStateTable {
  id: number;
  console_token_hash: string | null;
  console_token_created_at: number | null;
  completed_at: number | null;
  completed_by: string | null;
  organisation_name: string | null;
  master_key_check: Buffer | null;
  created_at: number;
}

export interface ServerSecretsTable {
  name: string;
  ciphertext: Buffer;
  created_at: number;
}

export interface AgentsTable {
  id: string;
  username: string;
  display_name: string | null;
  password_hash: string;
  role: string;
  status: string;
  created_at: number;
  updated_at: number;
  created_by: string | null;
  password_changed_at: number;
  last_login_at: number | null;
}

export interface AgentSessionsTable {
  id: string;
  agent_id: string;
  access_token_hash: string;
  access_expires_at: number;
  refresh_token_hash: string;
  refresh_expires_at: number;
  created_at: number;
  last_used_at: number;
  revoked_at: number | null;
  revoke_reason: string | null;
  ip: string | null;
  user_agent: string | null;
}

export interface AgentSpentRefreshTokensTable {
  token_hash: string;
  session_id: string;
  spent_at: number;
}

/** Audit-chained: chain_id/chain_seq/chain_hash (shared/db/audit-chains.ts), null on rows older than the chains. */
export interface AgentLoginLogsTable extends ChainColumns {
  id: string;
  created_at: number;
  username: string;
  agent_id: string | null;
  ip: string | null;
  user_agent: string | null;
  result: string;
  reason: string | null;
}

/** Audit-chained: chain_id/chain_seq/chain_hash (shared/db/audit-chains.ts), null on rows older than the chains. */
export interface AgentAuditLogsTable extends ChainColumns {
  id: string;
  created_at: number;
  agent_id: string | null;
  agent_username: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  result: string;
  error_code: string | null;
  request_id: string | null;
  ip: string | null;
  detail: string | null;
}

export interface ApplicationsTable {
  id: string;
  name: string;
  description: string | null;
  secret_hash: string;
  status: string;
  created_at: number;
  updated_at: number;
  created_by: string | null;
  deleted_at: number | null;
  deleted_by: string | null;
}

export interface CertificateAuthoritiesTable {
  id: string;
  profile: string;
  status: string;
  subject: string;
  serial_hex: string;
  cert_pem: string;
  key_ciphertext: Buffer;
  not_before: number;
  not_after: number;
  fingerprint_sha256: string;
  created_at: number;
}

export interface CertificatesTable {
  id: string;
  ca_id: string;
  ca_profile: string;
  leaf_profile: string;
  serial_hex: string;
  subject: string;
  sans: string;
  not_before: number;
  not_after: number;
  purpose: string;
  owner_type: string | null;
  owner_id: string | null;
  status: string;
  revoked_at: number | null;
  revocation_reason: string | null;
  cert_pem: string;
  fingerprint_sha256: string;
  created_at: number;
}

/** Audit-chained: chain_id/chain_seq/chain_hash (shared/db/audit-chains.ts), null on rows older than the chains. */
export interface PkiAuditLogsTable extends ChainColumns {
  id: string;
  created_at: number;
  event: string;
  certificate_id: string | null;
  ca_profile: string | null;
  serial_hex: string | null;
  actor: string;
  detail: string | null;
  /** The PKI job the row belongs to (job state changes, what a job built); null otherwise. */
  job_id: string | null;
  /** The certificate's leaf profile, or the CA profile for a CA row; null for job rows. */
  profile: string | null;
}

export interface PkiJobsTable {
  id: string;
  kind: string;
  status: string;
  target_type: string | null;
  target_id: string | null;
  payload: string;
  result: string | null;
  attempts: number;
  max_attempts: number;
  last_error: string | null;
  run_after: number;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  finished_at: number | null;
  created_by: string | null;
  /** The CP process holding the job while it runs, and until when (a dead holder's job is reclaimed). */
  claimed_by: string | null;
  lease_expires_at: number | null;
}

export interface NodesTable {
  id: string;
  name: string;
  host: string;
  business_port: number;
  status: string;
  created_at: number;
  updated_at: number;
  created_by: string | null;
  server_cert_id: string | null;
  client_cert_id: string | null;
  previous_client_cert_id: string | null;
  /** After this instant the previous CP client certificate is refused (null: accepted until a rotation's ack sets it). */
  previous_client_cert_retire_at: number | null;
  /** The rotation whose new credentials wait for this node (its checkin then reports configs pending). */
  pending_rotation_id: string | null;
  last_checkin_at: number | null;
  sse_connected: number;
  sse_changed_at: number | null;
  ocsp_last_applied_at: number | null;
  software_version: string | null;
  metadata: string | null;
  metrics: string | null;
  app_versions: string | null;
  online_users: number;
  disabled_at: number | null;
}

export interface NodeCertRotationsTable {
  id: string;
  node_id: string;
  /** "manual" | "renewal" | "ca_rotation" */
  reason: string;
  created_by: string | null;
  created_at: number;
  updated_at: number;
  issue_job_id: string;
  retire_job_id: string | null;
  old_server_cert_id: string | null;
  old_client_cert_id: string | null;
  new_server_cert_id: string | null;
  new_client_cert_id: string | null;
  package_id: string | null;
  /** The new certificates and keys, sealed with the master key; dropped once the node acked. */
  credentials_ciphertext: Buffer | null;
  /** JSON array of the cp_server_ca ids in the CP trust bundle the delivery carries (set at issue). */
  cp_ca_ids: string | null;
  issued_at: number | null;
  delivered_at: number | null;
  acked_at: number | null;
  retire_at: number | null;
  completed_at: number | null;
  superseded_at: number | null;
}

export interface DeployPackagesTable {
  id: string;
  node_id: string;
  job_id: string | null;
  created_at: number;
  sha256: string;
  size_bytes: number;
  archive_ciphertext: Buffer;
  downloaded_at: number | null;
  superseded_at: number | null;
}

export interface CommandsTable {
  seq: Generated<number>;
  id: string;
  kind: string;
  payload: string;
  target_node_id: string | null;
  created_at: number;
  created_by: string | null;
  expires_at: number | null;
}

export interface CommandResultsTable {
  command_seq: number;
  node_id: string;
  status: string;
  output: string | null;
  reported_at: number;
}

export interface ConfigVersionsTable {
  id: string;
  config_type: string;
  scope: string;
  version: number;
  content: string;
  created_at: number;
  created_by: string | null;
}

export interface NodeConfigStatesTable {
  node_id: string;
  config_type: string;
  scope: string;
  sent_version: number | null;
  sent_at: number | null;
  applied_version: number | null;
  applied_at: number | null;
  error_version: number | null;
  error_message: string | null;
  error_at: number | null;
}

export interface CloudFunctionsTable {
  id: string;
  app_id: string;
  name: string;
  script: string;
  version: number;
  timeout_ms: number;
  /** 1: listed in the manifest nodes pull and served; 0: kept but not served. */
  enabled: Generated<number>;
  created_at: number;
  updated_at: number;
  created_by: string | null;
}

export interface AuthEpochChangesTable {
  id: Generated<number>;
  app_id: string | null;
  user_id: string;
  epoch: number;
  reason: string | null;
  created_at: number;
  created_by: string | null;
}

export interface ServerBlacklistEntriesTable {
  id: string;
  kind: string;
  value: string;
  reason: string | null;
  expires_at: number | null;
  created_at: number;
  created_by: string | null;
  removed_at: number | null;
}

export interface ServerBlacklistChangesTable {
  id: Generated<number>;
  entry_id: string;
  op: string;
  kind: string;
  value: string;
  reason: string | null;
  expires_at: number | null;
  created_at: number;
}

export interface NodeDeltaCursorsTable {
  node_id: string;
  stream: string;
  cursor: number;
  updated_at: number;
}

export interface DeltaRetentionTable {
  stream: string;
  pruned_through: number;
  pruned_at: number;
}

/** Audit-chained: chain_id/chain_seq/chain_hash (shared/db/audit-chains.ts), null on rows older than the chains. */
export interface NodeAuthEventsTable extends ChainColumns {
  id: string;
  created_at: number;
  node_id: string | null;
  event: string;
  peer: string | null;
  cert_serial: string | null;
  detail: string | null;
}

/** Audit-chained: chain_id/chain_seq/chain_hash (shared/db/audit-chains.ts), null on rows older than the chains. */
export interface NodeAuditLogsTable extends ChainColumns {
  id: string;
  created_at: number;
  node_id: string;
  event: string;
  actor: string;
  detail: string | null;
}

export interface CaRotationsTable {
  id: string;
  ca_profile: string;
  /** prepared | published | switched | retired | rolled_back (the last two are finished). */
  phase: string;
  old_ca_id: string;
  new_ca_id: string;
  /** JSON [{type, scope, version}]: the config versions the last publication wrote; null before it. */
  published_versions: string | null;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  created_by: string | null;
  /** JSON object: what each phase reported. */
  detail: string | null;
}

export interface ControlSchema {
  setup_state: SetupStateTable;
  server_secrets: ServerSecretsTable;
  agents: AgentsTable;
  agent_sessions: AgentSessionsTable;
  agent_spent_refresh_tokens: AgentSpentRefreshTokensTable;
  agent_login_logs: AgentLoginLogsTable;
  agent_audit_logs: AgentAuditLogsTable;
  applications: ApplicationsTable;
  certificate_authorities: CertificateAuthoritiesTable;
  certificates: CertificatesTable;
  pki_audit_logs: PkiAuditLogsTable;
  pki_jobs: PkiJobsTable;
  nodes: NodesTable;
  deploy_packages: DeployPackagesTable;
  node_cert_rotations: NodeCertRotationsTable;
  commands: CommandsTable;
  command_results: CommandResultsTable;
  config_versions: ConfigVersionsTable;
  node_config_states: NodeConfigStatesTable;
  cloud_functions: CloudFunctionsTable;
  auth_epoch_changes: AuthEpochChangesTable;
  server_blacklist_entries: ServerBlacklistEntriesTable;
  server_blacklist_changes: ServerBlacklistChangesTable;
  node_delta_cursors: NodeDeltaCursorsTable;
  delta_retention: DeltaRetentionTable;
  node_auth_events: NodeAuthEventsTable;
  node_audit_logs: NodeAuditLogsTable;
  ca_rotations: CaRotationsTable;
}
