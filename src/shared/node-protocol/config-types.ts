/**
 * The six config types delivered by Channel 1 (configs/pull → apply → acks | errors).
 *
 * Each item is identified by (type, scope): global types have scope "global", per-application
 * types have scope "app:<app_id>". Every item carries a version that increases by one with each
 * change; the node acks the version it applied or reports the one it rejected. The same schema
 * validates content on the CP (when an admin sets it) and on the node (when it applies it).
 */
import { z } from "zod";
import { DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS, MAX_CLOUD_FUNCTION_TIMEOUT_MS, MIN_CLOUD_FUNCTION_TIMEOUT_MS } from "../config/defaults.js";

export const CONFIG_TYPES = [
  "server_runtime_settings",
  "app_policy",
  "app_variables",
  "app_client_ca_bundle",
  "app_mtls_trust_bundle",
  "cp_agent_runtime",
] as const;
export type ConfigType = (typeof CONFIG_TYPES)[number];

export const GLOBAL_CONFIG_TYPES = ["server_runtime_settings", "cp_agent_runtime"] as const satisfies readonly ConfigType[];
export const APP_CONFIG_TYPES = [
  "app_policy",
  "app_variables",
  "app_client_ca_bundle",
  "app_mtls_trust_bundle",
] as const satisfies readonly ConfigType[];

export const GLOBAL_SCOPE = "global";
const APP_SCOPE = /^app:([A-Za-z0-9_-]{1,64})$/;

export function isConfigType(value: string): value is ConfigType {
  return (CONFIG_TYPES as readonly string[]).includes(value);
}

export function isAppConfigType(type: ConfigType): boolean {
  return (APP_CONFIG_TYPES as readonly string[]).includes(type);
}

export function appScope(appId: string): string {
  return `app:${appId}`;
}

/** The application a scope names, or null for the global scope; undefined when malformed. */
export function appIdOfScope(scope: string): string | null | undefined {
  if (scope === GLOBAL_SCOPE) return null;
  return APP_SCOPE.exec(scope)?.[1];
}

/** Whether `scope` is the right kind for `type` (global types only global, app types only app:<id>). */
export function scopeFitsType(type: ConfigType, scope: string): boolean {
  const appId = appIdOfScope(scope);
  if (appId === undefined) return false;
  return isAppConfigType(type) ? appId !== null : appId === null;
}

const ms = (min: number, max: number) => z.number().int().min(min).max(max);
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/;

/** Server runtime parameters: limits and timeouts of the business plane. */
export const serverRuntimeSettingsSchema = z.strictObject({
  session_ttl_seconds: z
    .number()
    .int()
    .min(60)
    .max(90 * 86_400)
    .default(7 * 86_400),
  /** How often SDKs are asked to send a heartbeat (seconds); told to them in hello_ok. */
  heartbeat_interval_seconds: z.number().int().min(1).max(600).default(30),
  /** A connection with no frame for this long is closed (IDLE_TIMEOUT). */
  heartbeat_timeout_seconds: z.number().int().min(5).max(3600).default(90),
  /** How long a client has, from accepting its TCP connection, to complete TLS and send hello (ms). */
  handshake_timeout_ms: ms(100, 60_000).default(5_000),
  max_connections: z.number().int().min(1).max(1_000_000).default(50_000),
  max_connections_per_ip: z.number().int().min(1).max(100_000).default(200),
  cloud_function_timeout_ms: ms(MIN_CLOUD_FUNCTION_TIMEOUT_MS, MAX_CLOUD_FUNCTION_TIMEOUT_MS).default(DEFAULT_CLOUD_FUNCTION_TIMEOUT_MS),
  login_attempts_per_minute: z.number().int().min(1).max(100_000).default(30),
});

/** The CP agent's own timing; tightening these in tests and benchmarks is what they are for. */
export const cpAgentRuntimeSchema = z.strictObject({
  checkin_interval_ms: ms(200, 600_000).default(15_000),
  epoch_poll_ms: ms(50, 600_000).default(5_000),
  blacklist_poll_ms: ms(50, 600_000).default(30_000),
  degraded_epoch_poll_ms: ms(50, 600_000).default(800),
  degraded_blacklist_poll_ms: ms(50, 600_000).default(5_000),
  command_poll_ms: ms(50, 600_000).default(30_000),
  config_poll_ms: ms(50, 600_000).default(60_000),
  ocsp_refresh_ms: ms(1_000, 86_400_000).default(15 * 60_000),
  backoff_base_ms: ms(10, 60_000).default(500),
  backoff_max_ms: ms(100, 600_000).default(30_000),
  request_timeout_ms: ms(100, 120_000).default(10_000),
});

/** Per-application policy enforced by nodes for that application's clients. */
export const appPolicySchema = z.strictObject({
  registration_enabled: z.boolean().default(true),
  invite_code_required: z.boolean().default(false),
  password_login_enabled: z.boolean().default(true),
  card_login_enabled: z.boolean().default(true),
  token_login_enabled: z.boolean().default(true),
  max_devices_per_user: z.number().int().min(1).max(1000).default(3),
  session_ttl_seconds: z
    .number()
    .int()
    .min(60)
    .max(90 * 86_400)
    .optional(),
  /** Most variables one user may keep (getvar/setvar); 0 switches per-user variables off. */
  user_variables_max_count: z.number().int().min(0).max(10_000).default(100),
  /** Largest value of one per-user variable, in UTF-8 bytes. */
  user_variable_max_bytes: z.number().int().min(1).max(65_536).default(4096),
});

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;
/**
 * Cloud variables SDK clients may read: a flat map of scalars. A logged-in session reads them
 * all; `public` names the ones a client may read before it logs in (a banner, the latest
 * version). Cloud functions read every one.
 */
export const appVariablesSchema = z
  .strictObject({
    variables: z
      .record(z.string().regex(VARIABLE_NAME), z.union([z.string().max(4096), z.number().finite(), z.boolean()]))
      .refine((v) => Object.keys(v).length <= 1000, "at most 1000 variables"),
    public: z.array(z.string().regex(VARIABLE_NAME)).max(1000).default([]),
  })
  .refine((content) => content.public.every((name) => Object.hasOwn(content.variables, name)), {
    message: "every name in public must be one of the variables",
    path: ["public"],
  });
export type AppVariablesContent = z.output<typeof appVariablesSchema>;

/** A PEM bundle of CA certificates (shape only here; the node parses each certificate). */
const pemBundleSchema = z.strictObject({
  pem: z
    .string()
    .max(256 * 1024)
    .regex(PEM_CERT, "must contain at least one PEM certificate"),
});
export const appClientCaBundleSchema = pemBundleSchema;
export const appMtlsTrustBundleSchema = pemBundleSchema;

export const CONFIG_SCHEMAS = {
  server_runtime_settings: serverRuntimeSettingsSchema,
  app_policy: appPolicySchema,
  app_variables: appVariablesSchema,
  app_client_ca_bundle: appClientCaBundleSchema,
  app_mtls_trust_bundle: appMtlsTrustBundleSchema,
  cp_agent_runtime: cpAgentRuntimeSchema,
} as const satisfies Record<ConfigType, z.ZodType>;

export type ConfigContent<T extends ConfigType> = z.output<(typeof CONFIG_SCHEMAS)[T]>;
export type CpAgentRuntime = z.output<typeof cpAgentRuntimeSchema>;
export type ServerRuntimeSettings = z.output<typeof serverRuntimeSettingsSchema>;
export type AppPolicy = z.output<typeof appPolicySchema>;

/** Defaults a node runs with before (or without) a delivered config of that type. */
export const DEFAULT_CP_AGENT_RUNTIME: CpAgentRuntime = cpAgentRuntimeSchema.parse({});
export const DEFAULT_SERVER_RUNTIME_SETTINGS: ServerRuntimeSettings = serverRuntimeSettingsSchema.parse({});
export const DEFAULT_APP_POLICY: AppPolicy = appPolicySchema.parse({});

/** Validates content for a type: the parsed value, or a one-line reason. */
export function parseConfigContent<T extends ConfigType>(
  type: T,
  content: unknown,
): { ok: true; value: ConfigContent<T> } | { ok: false; reason: string } {
  const result = CONFIG_SCHEMAS[type].safeParse(content);
  if (result.success) return { ok: true, value: result.data as ConfigContent<T> };
  const issue = result.error.issues[0];
  const where = issue?.path.length ? `${issue.path.join(".")}: ` : "";
  return { ok: false, reason: `${where}${issue?.message ?? "invalid"}` };
}

/** Largest serialized config content the CP stores or a node accepts (bytes). */
export const MAX_CONFIG_CONTENT_BYTES = 512 * 1024;
