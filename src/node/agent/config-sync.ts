/**
 * Channel 1 configs, node side: pull what is newer than the applied versions, validate and
 * apply each item on its own (one bad item never blocks the others), ack the applied ones in
 * one batch and report the rejected ones in one batch, with the version still in force. A
 * rejected item leaves the previous version in force. Acks and error reports that fail to
 * reach the CP are kept and sent again on the next run, so the CP's SYNCED / ERROR view
 * converges even across CP outages. Cloud function bodies are fetched when their manifest
 * SHA-256 changes, kept only if they hash to it, and served only if they compile: a body that
 * does not is reported like a rejected item (type "cloud_function") and the previous version
 * stays in force.
 */
import { createHash } from "node:crypto";
import type { Logger } from "../../shared/log/index.js";
import { checkLuaSyntax, type LuaSyntaxCheck } from "../../shared/lua/syntax.js";
import {
  appScope,
  CLOUD_FUNCTION_ERROR_TYPE,
  type CloudFunctionError,
  type CloudFunctionManifest,
  type ConfigError,
  type ConfigItem,
  type ConfigType,
  type ConfigVersionRef,
  MAX_BATCH_ITEMS,
  MAX_CONFIG_CONTENT_BYTES,
  type NodeCredentialsDelivery,
  parseConfigContent,
  scopeFitsType,
} from "../../shared/node-protocol/index.js";
import { parseCertificate, splitPemBundle } from "../../shared/pki/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { AppliedConfig, AppliedConfigStore, CloudFunction } from "../state/config-store.js";
import { CpCallError } from "./cp-call-error.js";
import type { CpClient } from "./cp-client.js";

const PEM_BUNDLE_TYPES: readonly ConfigType[] = ["app_client_ca_bundle", "app_mtls_trust_bundle"];

/** Validates one delivered item the way the node will use it; never throws. */
export function validateConfigItem(item: ConfigItem): { ok: true; content: unknown } | { ok: false; reason: string } {
  if (!scopeFitsType(item.type, item.scope)) return { ok: false, reason: `scope "${item.scope}" does not fit type ${item.type}` };
  const size = Buffer.byteLength(JSON.stringify(item.content ?? null));
  if (size > MAX_CONFIG_CONTENT_BYTES) return { ok: false, reason: `content is ${size} bytes, more than ${MAX_CONFIG_CONTENT_BYTES}` };
  const parsed = parseConfigContent(item.type, item.content);
  if (!parsed.ok) return parsed;
  if (PEM_BUNDLE_TYPES.includes(item.type)) {
    const problem = checkCaBundle((parsed.value as { pem: string }).pem);
    if (problem) return { ok: false, reason: problem };
  }
  return { ok: true, content: parsed.value };
}

/** Every certificate in a trust bundle must parse and be a CA certificate. */
function checkCaBundle(pem: string): string | null {
  let certs: string[];
  try {
    certs = splitPemBundle(pem);
  } catch (error) {
    return `pem: ${(error as Error).message}`;
  }
  if (certs.length === 0) return "pem: no certificate";
  for (const [index, cert] of certs.entries()) {
    try {
      if (!parseCertificate(cert).isCa) return `pem: certificate #${index + 1} is not a CA certificate`;
    } catch (error) {
      return `pem: certificate #${index + 1}: ${(error as Error).message}`;
    }
  }
  return null;
}

export interface CloudFunctionSyncResult {
  /** New bodies downloaded, verified and compiled: now served. */
  fetched: number;
  /** Downloads that failed or did not hash to the manifest: retried on the next run. */
  failed: number;
  /** Functions whose newest body does not compile (newly or still): the previous version, if any, is served. */
  rejected: number;
}

export interface ConfigSyncResult {
  applied: ConfigVersionRef[];
  rejected: ConfigError[];
  cloudFunctions: CloudFunctionSyncResult;
}

export interface ConfigSyncOptions {
  client: Pick<CpClient, "pullConfigs" | "ackConfigs" | "reportConfigErrors" | "fetchCloudFunction">;
  store: AppliedConfigStore;
  clock: Clock;
  log: Logger;
  onSynced?: (result: ConfigSyncResult) => void;
  /** A rotation's new credentials came with the pull (./credential-rotation.ts). */
  onCredentials?: (delivery: NodeCredentialsDelivery) => Promise<void>;
}

const keyOf = (type: ConfigType, scope: string) => `${type} ${scope}`;
const functionKeyOf = (fn: { app_id: string; name: string }) => `${CLOUD_FUNCTION_ERROR_TYPE} ${appScope(fn.app_id)} ${fn.name}`;
const errorKeyOf = (error: ConfigError) =>
  error.type === CLOUD_FUNCTION_ERROR_TYPE ? `${error.type} ${error.scope} ${error.name}` : keyOf(error.type, error.scope);

/** The report's message: the compiler's, with its line when it gave one (never empty, at most 2000 characters). */
function describeCompileError(compiled: { line: number | null; message: string }): string {
  const message = compiled.message.trim() || "does not compile";
  return (compiled.line === null ? message : `line ${compiled.line}: ${message}`).slice(0, 2000);
}

type FunctionOutcome = { counted: keyof CloudFunctionSyncResult | null; serve: CloudFunction | undefined };

export class ConfigSync {
  /** Applied but not yet acknowledged by the CP. */
  private readonly unackedApplied = new Map<string, ConfigVersionRef>();
  /** Rejected but not yet reported to the CP. */
  private readonly unreportedErrors = new Map<string, ConfigError>();
  /** Rejected versions the CP already knows about: not re-validated or re-reported. */
  private readonly reportedRejections = new Map<string, number>();
  /** SHA-256 of each function's body that did not compile: not fetched or reported again until the manifest changes it. */
  private readonly refusedBodies = new Map<string, string>();
  private chain: Promise<unknown> = Promise.resolve();
  private resolveFirstApplied!: () => void;
  /** Settles once a pull was applied and its acks/errors reached the CP (staged startup waits for it). */
  readonly firstApplied: Promise<void> = new Promise((resolve) => {
    this.resolveFirstApplied = resolve;
  });
  private lastResult: ConfigSyncResult | null = null;

  constructor(private readonly options: ConfigSyncOptions) {}

  /** One pull/apply/ack cycle; concurrent callers (loop, reload command) queue behind each other. */
  run(): Promise<ConfigSyncResult> {
    const next = this.chain.then(() => this.runOnce());
    this.chain = next.catch(() => undefined);
    return next;
  }

  get last(): ConfigSyncResult | null {
    return this.lastResult;
  }

  /** Functions in the manifest whose newest body did not compile on this node. */
  get rejectedCloudFunctions(): number {
    return this.refusedBodies.size;
  }

  /** True while some item's newest version is one this node rejected (so the CP keeps saying "pending"). */
  get holdsRejections(): boolean {
    if (this.reportedRejections.size > 0) return true;
    // A refused cloud function body plays no part in the CP's "pending", which concerns config items only.
    return [...this.unreportedErrors.values()].some((error) => error.type !== CLOUD_FUNCTION_ERROR_TYPE);
  }

  private async runOnce(): Promise<ConfigSyncResult> {
    const { client, store } = this.options;
    await this.flushReports();
    const pulled = await client.pullConfigs({ applied: store.refs() });
    const applied: ConfigVersionRef[] = [];
    const rejected: ConfigError[] = [];
    for (const item of pulled.configs) {
      const outcome = this.applyItem(item);
      if (outcome === "applied") applied.push({ type: item.type, scope: item.scope, version: item.version });
      else if (outcome) rejected.push(outcome);
    }
    await this.flushReports();
    store.replaceApplications(pulled.applications);
    this.resolveFirstApplied();
    if (pulled.credentials) await this.options.onCredentials?.(pulled.credentials);
    const cloudFunctions = await this.syncCloudFunctions(pulled.cloud_functions);
    const result = { applied, rejected, cloudFunctions };
    this.lastResult = result;
    this.options.onSynced?.(result);
    // Bodies refused just now are reported in this run, not a pull interval later.
    await this.flushReports();
    if (cloudFunctions.failed > 0)
      throw new CpCallError("network", `${cloudFunctions.failed} cloud function bodies could not be fetched; retrying`);
    return result;
  }

  /** Applies one item or records why not; returns "applied", the error, or null (nothing to do). */
  private applyItem(item: ConfigItem): "applied" | ConfigError | null {
    const { store, clock, log } = this.options;
    const key = keyOf(item.type, item.scope);
    const current = store.version(item.type, item.scope);
    if (current !== null && current >= item.version) {
      // The CP re-sent what is already in force: its ack was probably lost, so ack it again.
      if (current === item.version) this.unackedApplied.set(key, { type: item.type, scope: item.scope, version: current });
      return null;
    }
    if (this.reportedRejections.get(key) === item.version) return null;
    const validated = validateConfigItem(item);
    if (!validated.ok) {
      const error: ConfigError = {
        type: item.type,
        scope: item.scope,
        version: item.version,
        applied_version: current,
        message: validated.reason.slice(0, 2000),
      };
      this.unreportedErrors.set(key, error);
      log.warn("config.rejected", {
        type: item.type,
        scope: item.scope,
        version: item.version,
        applied_version: current,
        reason: validated.reason,
      });
      return error;
    }
    store.apply({
      type: item.type,
      scope: item.scope,
      version: item.version,
      content: validated.content,
      appliedAt: clock.now(),
    } as AppliedConfig);
    this.unreportedErrors.delete(key);
    this.reportedRejections.delete(key);
    this.unackedApplied.set(key, { type: item.type, scope: item.scope, version: item.version });
    log.info("config.applied", { type: item.type, scope: item.scope, version: item.version, previous_version: current });
    return "applied";
  }

  /** Sends pending acks and error reports, in batches; a retryable failure leaves them pending. */
  private async flushReports(): Promise<void> {
    const { client, log } = this.options;
    const acks = [...this.unackedApplied.values()];
    for (let i = 0; i < acks.length; i += MAX_BATCH_ITEMS) {
      const batch = acks.slice(i, i + MAX_BATCH_ITEMS);
      await this.sendBatch(() => client.ackConfigs({ acks: batch }), "acks");
      for (const ref of batch)
        if (this.unackedApplied.get(keyOf(ref.type, ref.scope))?.version === ref.version)
          this.unackedApplied.delete(keyOf(ref.type, ref.scope));
      log.info("config.acked", { items: batch.length });
    }
    const errors = [...this.unreportedErrors.values()];
    for (let i = 0; i < errors.length; i += MAX_BATCH_ITEMS) {
      const batch = errors.slice(i, i + MAX_BATCH_ITEMS);
      await this.sendBatch(() => client.reportConfigErrors({ errors: batch }), "errors");
      for (const error of batch) {
        const key = errorKeyOf(error);
        if (this.unreportedErrors.get(key)?.version === error.version) this.unreportedErrors.delete(key);
        // Refused function bodies are skipped by their SHA-256 (refusedBodies), not by version.
        if (error.type !== CLOUD_FUNCTION_ERROR_TYPE) this.reportedRejections.set(key, error.version);
      }
      log.info("config.errors_reported", { items: batch.length });
    }
  }

  /** A 4xx answer to a report will not change by repeating it: log and drop the batch. */
  private async sendBatch(send: () => Promise<number>, what: "acks" | "errors"): Promise<void> {
    try {
      await send();
    } catch (error) {
      if (!(error instanceof CpCallError) || error.retryable) throw error;
      this.options.log.warn("config.report_refused", { what, status: error.status, code: error.code, error: error.message });
    }
  }

  /** Brings the served functions in line with the manifest; a function whose new body is not usable keeps its previous one. */
  private async syncCloudFunctions(manifest: CloudFunctionManifest[]): Promise<CloudFunctionSyncResult> {
    const { store } = this.options;
    const next: CloudFunction[] = [];
    const tally: CloudFunctionSyncResult = { fetched: 0, failed: 0, rejected: 0 };
    for (const entry of manifest) {
      const { counted, serve } = await this.syncCloudFunction(entry, store.cloudFunction(entry.app_id, entry.name));
      if (counted) tally[counted] += 1;
      if (serve) next.push(serve);
    }
    this.forgetFunctionsNotIn(manifest);
    store.replaceCloudFunctions(next);
    return tally;
  }

  private async syncCloudFunction(entry: CloudFunctionManifest, held: CloudFunction | undefined): Promise<FunctionOutcome> {
    const { log } = this.options;
    if (held && held.manifest.sha256 === entry.sha256) return { counted: null, serve: { manifest: entry, body: held.body } };
    const key = functionKeyOf(entry);
    if (this.refusedBodies.get(key) === entry.sha256) return { counted: "rejected", serve: held };
    let body: Buffer;
    let compiled: LuaSyntaxCheck;
    try {
      body = await this.fetchVerifiedBody(entry);
      compiled = await checkLuaSyntax(body.toString("utf8"));
    } catch (error) {
      // The previous version (if any) stays in force until the new body arrives intact and can be
      // checked (a compiler that failed to start says nothing about the body, so it is retried too).
      log.warn("cloud_function.fetch_failed", {
        app_id: entry.app_id,
        name: entry.name,
        version: entry.version,
        error: (error as Error).message,
      });
      return { counted: "failed", serve: held };
    }
    if (!compiled.ok) {
      this.refuseBody(entry, held, compiled);
      return { counted: "rejected", serve: held };
    }
    this.refusedBodies.delete(key);
    this.unreportedErrors.delete(key);
    log.info("cloud_function.fetched", { app_id: entry.app_id, name: entry.name, version: entry.version, bytes: body.length });
    return { counted: "fetched", serve: { manifest: entry, body } };
  }

  private async fetchVerifiedBody(entry: CloudFunctionManifest): Promise<Buffer> {
    const body = await this.options.client.fetchCloudFunction(entry.name, entry.app_id);
    const digest = createHash("sha256").update(body).digest("hex");
    if (digest !== entry.sha256) throw new Error(`body hashes to ${digest}, manifest says ${entry.sha256}`);
    return body;
  }

  /** Remembers a body that does not compile, so it is neither served nor fetched again, and queues its report. */
  private refuseBody(
    entry: CloudFunctionManifest,
    held: CloudFunction | undefined,
    compiled: { line: number | null; message: string },
  ): void {
    const error: CloudFunctionError = {
      type: CLOUD_FUNCTION_ERROR_TYPE,
      scope: appScope(entry.app_id),
      name: entry.name,
      version: entry.version,
      applied_version: held?.manifest.version ?? null,
      message: describeCompileError(compiled),
    };
    this.refusedBodies.set(functionKeyOf(entry), entry.sha256);
    this.unreportedErrors.set(errorKeyOf(error), error);
    this.options.log.warn("cloud_function.rejected", {
      app_id: entry.app_id,
      name: entry.name,
      version: entry.version,
      applied_version: error.applied_version,
      line: compiled.line,
      message: compiled.message,
    });
  }

  /** A function gone from the manifest (deleted, disabled) needs no memory of a refused body; if it comes back, it is checked anew. */
  private forgetFunctionsNotIn(manifest: readonly CloudFunctionManifest[]): void {
    const live = new Set(manifest.map(functionKeyOf));
    for (const key of this.refusedBodies.keys()) if (!live.has(key)) this.refusedBodies.delete(key);
  }
}
