/**
 * The configuration in force on this node: the last successfully applied version of every
 * (type, scope) item delivered by Channel 1, already validated and typed, plus the cloud
 * functions (manifest entry and verified body). Replacing an item is one Map write, so readers
 * see either the old or the new version, never a mix; a rejected version never gets here.
 */
import {
  type ApplicationManifest,
  type AppPolicy,
  type AppVariablesContent,
  appScope,
  type CloudFunctionManifest,
  type ConfigContent,
  type ConfigType,
  type ConfigVersionRef,
  type CpAgentRuntime,
  DEFAULT_APP_POLICY,
  DEFAULT_CP_AGENT_RUNTIME,
  DEFAULT_SERVER_RUNTIME_SETTINGS,
  GLOBAL_SCOPE,
  type ServerRuntimeSettings,
} from "../../shared/node-protocol/index.js";

const NO_APP_VARIABLES: AppVariablesContent = { variables: {}, public: [] };

export interface AppliedConfig<T extends ConfigType = ConfigType> {
  type: T;
  scope: string;
  version: number;
  content: ConfigContent<T>;
  /** Epoch ms. */
  appliedAt: number;
}

export interface CloudFunction {
  manifest: CloudFunctionManifest;
  /** The script, its SHA-256 checked against the manifest. */
  body: Buffer;
}

export type ConfigListener = (applied: AppliedConfig) => void;

const itemKey = (type: ConfigType, scope: string) => `${type}\u0000${scope}`;
const functionKey = (appId: string, name: string) => `${appId}\u0000${name}`;

export class AppliedConfigStore {
  private readonly items = new Map<string, AppliedConfig>();
  private functions = new Map<string, CloudFunction>();
  private applications = new Map<string, ApplicationManifest>();
  private readonly applicationListeners = new Set<(applications: ReadonlyMap<string, ApplicationManifest>) => void>();
  private readonly listeners = new Set<ConfigListener>();

  get<T extends ConfigType>(type: T, scope: string): AppliedConfig<T> | undefined {
    return this.items.get(itemKey(type, scope)) as AppliedConfig<T> | undefined;
  }

  /** The applied version of an item, or null when none was ever applied. */
  version(type: ConfigType, scope: string): number | null {
    return this.items.get(itemKey(type, scope))?.version ?? null;
  }

  apply<T extends ConfigType>(applied: AppliedConfig<T>): void {
    this.items.set(itemKey(applied.type, applied.scope), applied as AppliedConfig);
    for (const listener of this.listeners) listener(applied as AppliedConfig);
  }

  /** What the node has applied, as the CP's version snapshot wants it. */
  refs(): ConfigVersionRef[] {
    return [...this.items.values()]
      .map(({ type, scope, version }) => ({ type, scope, version }))
      .sort((a, b) => a.type.localeCompare(b.type) || a.scope.localeCompare(b.scope));
  }

  onApplied(listener: ConfigListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The agent's timing: the delivered cp_agent_runtime, or the defaults until one arrives. */
  cpAgentRuntime(): CpAgentRuntime {
    return this.get("cp_agent_runtime", GLOBAL_SCOPE)?.content ?? DEFAULT_CP_AGENT_RUNTIME;
  }

  serverRuntimeSettings(): ServerRuntimeSettings {
    return this.get("server_runtime_settings", GLOBAL_SCOPE)?.content ?? DEFAULT_SERVER_RUNTIME_SETTINGS;
  }

  /** An application's policy: the delivered app_policy, or the defaults until one arrives. */
  appPolicy(appId: string): AppPolicy {
    return this.get("app_policy", appScope(appId))?.content ?? DEFAULT_APP_POLICY;
  }

  /** An application's cloud variables: the delivered app_variables, or none until one arrives. */
  appVariables(appId: string): AppVariablesContent {
    return this.get("app_variables", appScope(appId))?.content ?? NO_APP_VARIABLES;
  }

  /** Every published client CA trust bundle of every application (the business port's TLS anchors). */
  allTrustBundlePems(): string[] {
    const pems: string[] = [];
    for (const item of this.items.values()) {
      if (item.type === "app_client_ca_bundle" || item.type === "app_mtls_trust_bundle") pems.push((item.content as { pem: string }).pem);
    }
    return pems;
  }

  /** PEMs of the CAs an application's client certificates may chain to: its two published trust bundles. */
  appTrustPems(appId: string): string[] {
    const scope = appScope(appId);
    return [this.get("app_client_ca_bundle", scope)?.content.pem, this.get("app_mtls_trust_bundle", scope)?.content.pem].filter(
      (pem): pem is string => pem !== undefined,
    );
  }

  get size(): number {
    return this.items.size;
  }

  // ---- cloud functions ---------------------------------------------------------------------

  cloudFunction(appId: string, name: string): CloudFunction | undefined {
    return this.functions.get(functionKey(appId, name));
  }

  cloudFunctions(): CloudFunction[] {
    return [...this.functions.values()];
  }

  /** Swaps in the full set of functions at once (the manifest lists every live function). */
  replaceCloudFunctions(functions: CloudFunction[]): void {
    this.functions = new Map(functions.map((f) => [functionKey(f.manifest.app_id, f.manifest.name), f]));
  }

  get cloudFunctionCount(): number {
    return this.functions.size;
  }

  // ---- applications ------------------------------------------------------------------------

  /** A live application (status and secret verifier), or undefined when the CP lists no such application. */
  application(appId: string): ApplicationManifest | undefined {
    return this.applications.get(appId);
  }

  /** Swaps in the full list at once (every pull carries every live application). */
  replaceApplications(applications: readonly ApplicationManifest[]): void {
    this.applications = new Map(applications.map((a) => [a.app_id, a]));
    for (const listener of this.applicationListeners) listener(this.applications);
  }

  onApplicationsReplaced(listener: (applications: ReadonlyMap<string, ApplicationManifest>) => void): () => void {
    this.applicationListeners.add(listener);
    return () => this.applicationListeners.delete(listener);
  }

  get applicationCount(): number {
    return this.applications.size;
  }
}
