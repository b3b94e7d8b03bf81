/**
 * Application client certificates: the `app_client` leaf a vendor's program presents to the
 * nodes (app_client_ca, clientAuth, exactly one URI SAN urn:authnexus:app:<app_id>), issued with
 * a generated key that is handed back once and never stored, together with what the SDK
 * configuration file needs (src/shared/sdk-config.ts): the nodes to reach and the server CA
 * bundle. Like every issuance it goes through the inventory, so OCSP and `POST
 * /pki/certs/:id/revoke` know the certificate from the moment it exists.
 *
 * Signing happens before the recording transaction and leaves no trace; the transaction re-checks
 * (on PostgreSQL under a row lock) that the application is still live, so a certificate is never
 * recorded for an application that went to the recycle bin meanwhile.
 */
import type { Kysely } from "kysely";
import { LEAF_VALIDITY_DAYS } from "../../../shared/config/defaults.js";
import { type ControlSchema, dialectOf } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { appUri, type IssuedCertificate, issueLeafCertificate } from "../../../shared/pki/index.js";
import { SDK_CONFIG_FILES, SDK_CONFIG_FORMAT, type SdkConfigFile } from "../../../shared/sdk-config.js";
import { requireApplication, requireLiveApplication } from "../applications/lookup.js";
import type { Actor, CpContext } from "../context.js";
import type { Page, PageRequest } from "../pagination.js";
import { type CertificateView, listCertificates, loadActiveCa, recordCertificate, trustedCaBundle } from "./inventory.js";

export const APP_CLIENT_PURPOSE = "app_client";
export const APP_OWNER_TYPE = "application";
/** X.520 ub-common-name. */
export const MAX_CLIENT_COMMON_NAME = 64;
/** The SDK configuration holds at most this many nodes (sdkConfigSchema); the first ones by creation win. */
export const MAX_SDK_NODES = 64;

export interface ClientCertificateOptions {
  /** Default: the application's name when it fits 64 characters, else its id. */
  commonName?: string;
  /** 1 … LEAF_VALIDITY_DAYS; default LEAF_VALIDITY_DAYS. */
  validityDays?: number;
}

export interface SdkNode {
  host: string;
  port: number;
}

export interface IssuedClientCertificate {
  certificate_id: string;
  serial: string;
  not_before: number;
  not_after: number;
  certificate_pem: string;
  /** PKCS#8 PEM of the generated key: returned this once, never stored anywhere. */
  private_key_pem: string;
  /** Every trusted tcp_server_ca certificate (inventory.ts TRUSTED_CA_STATUSES), concatenated: what a node's server certificate must chain to. */
  server_ca_pem: string;
  /** The CA that signs the nodes' stapled OCSP responses: the same tcp_server_ca bundle. */
  ocsp_signer_ca_pem: string;
  /**
   * A `sdkConfigSchema` object naming SDK_CONFIG_FILES. `nodes` is every active node (in creation
   * order, at most MAX_SDK_NODES); it is empty while no node is active, which the SDK refuses
   * until the operator adds one.
   */
  sdk_config: SdkConfigFile;
}

export async function issueClientCertificate(
  ctx: CpContext,
  actor: Actor,
  appId: string,
  options: ClientCertificateOptions = {},
): Promise<IssuedClientCertificate> {
  await requireLiveApplication(ctx.controlDb, appId);
  const validityDays = options.validityDays ?? LEAF_VALIDITY_DAYS;
  if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > LEAF_VALIDITY_DAYS) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: `validity_days must be an integer from 1 to ${LEAF_VALIDITY_DAYS}.` });
  }
  const commonName = options.commonName ?? (await defaultCommonName(ctx.controlDb, appId));
  if (commonName.trim().length === 0 || commonName.length > MAX_CLIENT_COMMON_NAME) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: `common_name must be 1 to ${MAX_CLIENT_COMMON_NAME} characters.` });
  }

  const issuer = await loadActiveCa(ctx, "app_client_ca");
  const serverCaPem = await trustedCaBundle(ctx.controlDb, "tcp_server_ca");
  const nodes = await activeNodes(ctx.controlDb);
  const issued = withKey(
    await issueLeafCertificate({
      profile: "app_client",
      issuer,
      commonName,
      sans: { uri: [appUri(appId)] },
      ocspUrl: ctx.publicOcspUrl,
      validityDays,
      clock: ctx.clock,
    }),
  );

  const actorName = actor.agentId ?? "system";
  const certificateId = await ctx.controlDb.transaction().execute(async (tx) => {
    await lockApplication(tx, appId);
    await requireLiveApplication(tx, appId);
    return recordCertificate(tx, ctx.clock, {
      issued,
      caId: issuer.id,
      leafProfile: "app_client",
      purpose: APP_CLIENT_PURPOSE,
      ownerType: APP_OWNER_TYPE,
      ownerId: appId,
      actor: actorName,
    });
  });

  ctx.log.category("PKI").info("cert.issued", {
    purpose: APP_CLIENT_PURPOSE,
    app_id: appId,
    certificate_id: certificateId,
    serial: issued.serialHex,
    not_after: issued.notAfter,
    nodes: nodes.length,
    agent_id: actor.agentId,
  });

  return {
    certificate_id: certificateId,
    serial: issued.serialHex,
    not_before: issued.notBefore,
    not_after: issued.notAfter,
    certificate_pem: issued.certPem,
    private_key_pem: issued.keyPem,
    server_ca_pem: serverCaPem,
    ocsp_signer_ca_pem: serverCaPem,
    sdk_config: {
      format: SDK_CONFIG_FORMAT,
      app_id: appId,
      nodes,
      files: { ...SDK_CONFIG_FILES },
      must_staple: true,
      spki_pins: [],
    },
  };
}

/** The application's client certificates from the inventory (newest first; never keys). 404 for an unknown application. */
export async function listClientCertificates(
  ctx: CpContext,
  appId: string,
  page: PageRequest,
  status?: CertificateView["status"],
): Promise<Page<CertificateView>> {
  await requireApplication(ctx.controlDb, appId);
  return listCertificates(ctx, { caProfile: "app_client_ca", ownerType: APP_OWNER_TYPE, ownerId: appId, status }, page);
}

async function defaultCommonName(db: Kysely<ControlSchema>, appId: string): Promise<string> {
  const row = await db.selectFrom("applications").select("name").where("id", "=", appId).executeTakeFirst();
  const name = row?.name.trim() ?? "";
  return name.length > 0 && name.length <= MAX_CLIENT_COMMON_NAME ? name : appId;
}

/** On PostgreSQL a concurrent soft delete waits for this transaction (or this one sees it); SQLite has one writer. */
async function lockApplication(tx: Kysely<ControlSchema>, appId: string): Promise<void> {
  if (dialectOf(tx) !== "postgres") return;
  await tx.selectFrom("applications").select("id").where("id", "=", appId).forUpdate().execute();
}

/** Nodes whose lifecycle status is active (disabled and provisioning ones are left out), in creation order. */
async function activeNodes(db: Kysely<ControlSchema>): Promise<SdkNode[]> {
  const rows = await db
    .selectFrom("nodes")
    .select(["host", "business_port"])
    .where("status", "=", "active")
    .orderBy("created_at")
    .orderBy("id")
    .limit(MAX_SDK_NODES)
    .execute();
  return rows.map((r) => ({ host: r.host, port: r.business_port }));
}

function withKey(issued: IssuedCertificate): IssuedCertificate & { keyPem: string } {
  if (issued.keyPem === null) throw new AuthNexusError("INTERNAL", { message: "issued client certificate came without its key" });
  return { ...issued, keyPem: issued.keyPem };
}
