/**
 * First-run setup, fail-closed. Until it completes the CP serves only /admin/v1/setup/*. The
 * console token (printed once, kept in <data-dir>/console-token with mode 0600, stored here
 * only as a hash) authorises one initialize call, which creates the four CAs, the CP server
 * certificate, the password-hash server secret and the root agent in one transaction.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { CA_VALIDITY_DAYS } from "../../../shared/config/defaults.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { constantTimeEqual, randomToken, sha256Hex } from "../../../shared/ids.js";
import { CA_PROFILES, type CaProfile, createRootCa, type IssuedCertificate, openSecret, sealSecret } from "../../../shared/pki/index.js";
import { type AgentView, createAgent } from "../agents/agents.js";
import { assertPasswordPolicy } from "../agents/passwords.js";
import { writeAgentAudit } from "../audit/agent-audit.js";
import type { CpContext } from "../context.js";
import { issueCpServerCertificate, storeCpServerCertificate } from "../pki/cp-identity.js";
import { recordCa } from "../pki/inventory.js";
import { assertKeyCheck, sealKeyCheck } from "./master-key.js";

export const CONSOLE_TOKEN_FILE_NAME = "console-token";
export const PASSWORD_HASH_SECRET_NAME = "password-hash-secret";
const SETUP_ROW_ID = 1;

const DEFAULT_CA_NAMES: Record<CaProfile, string> = {
  cp_server_ca: "CP Server CA",
  cp_node_client_ca: "CP Node Client CA",
  tcp_server_ca: "TCP Server CA",
  app_client_ca: "App Client CA",
};

export interface SetupStatus {
  requires_setup: boolean;
}

export async function ensureSetupRow(ctx: CpContext): Promise<void> {
  await ctx.controlDb
    .insertInto("setup_state")
    .values({
      id: SETUP_ROW_ID,
      console_token_hash: null,
      console_token_created_at: null,
      completed_at: null,
      completed_by: null,
      organisation_name: null,
      master_key_check: null,
      created_at: ctx.clock.now(),
    })
    .onConflict((oc) => oc.column("id").doNothing())
    .execute();
}

async function readSetupRow(ctx: CpContext) {
  return ctx.controlDb.selectFrom("setup_state").selectAll().where("id", "=", SETUP_ROW_ID).executeTakeFirstOrThrow();
}

export async function isSetupComplete(ctx: CpContext): Promise<boolean> {
  return (await readSetupRow(ctx)).completed_at !== null;
}

export async function getSetupStatus(ctx: CpContext): Promise<SetupStatus> {
  return { requires_setup: !(await isSetupComplete(ctx)) };
}

/** Fails at start when the master key cannot open what setup sealed. */
export async function verifyMasterKey(ctx: CpContext): Promise<void> {
  const row = await readSetupRow(ctx);
  if (row.master_key_check) assertKeyCheck(ctx.masterKey, Buffer.from(row.master_key_check));
}

export function consoleTokenPath(dataDir: string): string {
  return path.resolve(dataDir, CONSOLE_TOKEN_FILE_NAME);
}

/**
 * Makes sure a console token exists while setup is pending. Returns the token only when it was
 * newly minted (so the caller prints it once); an existing token whose file still matches the
 * stored hash is kept and not shown again.
 */
export async function prepareConsoleToken(ctx: CpContext): Promise<{ token: string | null; path: string }> {
  const file = consoleTokenPath(ctx.dataDir);
  const row = await readSetupRow(ctx);
  const onDisk = readTokenFile(file);
  if (row.console_token_hash && onDisk && constantTimeEqual(sha256Hex(onDisk), row.console_token_hash)) return { token: null, path: file };
  const token = randomToken(32);
  writeSecretFile(file, `${token}\n`);
  await ctx.controlDb
    .updateTable("setup_state")
    .set({ console_token_hash: sha256Hex(token), console_token_created_at: ctx.clock.now() })
    .where("id", "=", SETUP_ROW_ID)
    .where("completed_at", "is", null)
    .execute();
  return { token, path: file };
}

function readTokenFile(file: string): string | null {
  try {
    return fs.readFileSync(file, "utf8").trim() || null;
  } catch {
    return null;
  }
}

function writeSecretFile(file: string, content: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, content, { mode: 0o600 });
  fs.chmodSync(temp, 0o600);
  fs.renameSync(temp, file);
}

export interface SetupInput {
  consoleToken: string;
  adminUsername: string;
  adminPassword: string;
  organisationName?: string | undefined;
  caCommonNames?: Partial<Record<CaProfile, string>> | undefined;
  cpPublicHosts?: string[] | undefined;
}

export interface SetupResult {
  agent: AgentView;
  ca_fingerprints: Record<CaProfile, string>;
}

/** Control DBs with an initialize in flight in this process (the DB claim guards across processes). */
const initializing = new WeakSet<object>();

export async function initializeSetup(
  ctx: CpContext,
  input: SetupInput,
  remoteIp: string | null,
  requestId: string | null = null,
): Promise<SetupResult> {
  const row = await readSetupRow(ctx);
  if (row.completed_at !== null) throw new AuthNexusError("SETUP_ALREADY_COMPLETED");
  if (!row.console_token_hash || !constantTimeEqual(sha256Hex(input.consoleToken), row.console_token_hash)) {
    ctx.log.warn("setup.token_rejected", { ip: remoteIp });
    throw new AuthNexusError("SETUP_TOKEN_INVALID");
  }
  assertPasswordPolicy(input.adminPassword, input.adminUsername);
  if (initializing.has(ctx.controlDb)) throw new AuthNexusError("SETUP_IN_PROGRESS");
  initializing.add(ctx.controlDb);
  try {
    return await runInitialization(ctx, input, row.console_token_hash, remoteIp, requestId);
  } finally {
    initializing.delete(ctx.controlDb);
  }
}

async function runInitialization(
  ctx: CpContext,
  input: SetupInput,
  tokenHash: string,
  remoteIp: string | null,
  requestId: string | null,
): Promise<SetupResult> {
  const org = input.organisationName ?? "AuthNexus";
  const cas = await createCas(ctx, org, input.caCommonNames ?? {});
  const cpServer = await issueCpServerCertificate(
    ctx,
    { certPem: cas.cp_server_ca.certPem, keyPem: cas.cp_server_ca.keyPem ?? "" },
    input.cpPublicHosts ?? [],
  );
  const passwordHashSecret = randomBytes(32);
  const now = ctx.clock.now();

  const agent = await ctx.controlDb.transaction().execute(async (tx) => {
    // Claiming the row first makes a concurrent initialize (even from another CP process) lose cleanly.
    const claimed = await tx
      .updateTable("setup_state")
      .set({ completed_at: now, console_token_hash: null, organisation_name: org, master_key_check: sealKeyCheck(ctx.masterKey) })
      .where("id", "=", SETUP_ROW_ID)
      .where("completed_at", "is", null)
      .where("console_token_hash", "=", tokenHash)
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) !== 1) throw new AuthNexusError("SETUP_ALREADY_COMPLETED");

    const caIds = {} as Record<CaProfile, string>;
    for (const profile of CA_PROFILES) caIds[profile] = await recordCa(tx, ctx.clock, ctx.masterKey, profile, cas[profile], "setup");
    await storeCpServerCertificate(tx, ctx, cpServer, caIds.cp_server_ca, "setup");
    await tx
      .insertInto("server_secrets")
      .values({
        name: PASSWORD_HASH_SECRET_NAME,
        ciphertext: sealSecret(ctx.masterKey, passwordHashSecret, PASSWORD_HASH_SECRET_NAME),
        created_at: now,
      })
      .execute();
    const root = await createAgent(
      ctx,
      { username: input.adminUsername, password: input.adminPassword, role: "root", createdBy: null },
      tx,
    );
    await tx.updateTable("setup_state").set({ completed_by: root.id }).where("id", "=", SETUP_ROW_ID).execute();
    await writeAgentAudit(
      tx,
      ctx.clock,
      { agentId: root.id, username: root.username, ip: remoteIp, requestId },
      {
        action: "setup.initialize",
        targetType: "control_plane",
        targetId: "cp",
        result: "success",
        detail: { organisation: org },
      },
    );
    return root;
  });

  fs.rmSync(consoleTokenPath(ctx.dataDir), { force: true });
  const fingerprints = Object.fromEntries(CA_PROFILES.map((p) => [p, cas[p].fingerprintSha256])) as Record<CaProfile, string>;
  ctx.log.info("setup.completed", { root_agent_id: agent.id, organisation: org });
  for (const p of CA_PROFILES) ctx.log.category("PKI").info("ca.created", { profile: p, fingerprint_sha256: fingerprints[p] });
  return { agent, ca_fingerprints: fingerprints };
}

async function createCas(
  ctx: CpContext,
  org: string,
  names: Partial<Record<CaProfile, string>>,
): Promise<Record<CaProfile, IssuedCertificate>> {
  const out = {} as Record<CaProfile, IssuedCertificate>;
  for (const profile of CA_PROFILES) {
    out[profile] = await createRootCa({
      profile,
      commonName: names[profile] ?? `${org} ${DEFAULT_CA_NAMES[profile]}`,
      organisation: org,
      validityDays: CA_VALIDITY_DAYS,
      clock: ctx.clock,
    });
  }
  return out;
}

/**
 * The password-hash server secret: the key of every end-user password hash. Nodes get it in
 * their deploy package; the CP unseals it to set passwords from the admin API.
 */
export async function loadPasswordHashKey(ctx: Pick<CpContext, "controlDb" | "masterKey">): Promise<Buffer> {
  const row = await ctx.controlDb
    .selectFrom("server_secrets")
    .select("ciphertext")
    .where("name", "=", PASSWORD_HASH_SECRET_NAME)
    .executeTakeFirst();
  if (!row)
    throw new AuthNexusError("PKI_NOT_INITIALISED", { message: "The password-hash server secret is missing: setup has not completed." });
  return openSecret(ctx.masterKey, Buffer.from(row.ciphertext), PASSWORD_HASH_SECRET_NAME);
}
