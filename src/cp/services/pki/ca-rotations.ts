/**
 * CA rotation as an operation with visible phases (docs/operations.md, "Rotating the
 * application client CA"), one open rotation per CA profile at a time:
 *
 *   prepare   the successor CA is created `pending`; the old one stays `active` and signs;
 *   publish   the successor becomes `next` and the profile's trust is published holding both
 *             (for app_client_ca: every live application's app_client_ca_bundle); the config
 *             versions written are recorded, and GET shows per node whether it applied them;
 *   switch    refused (CA_ROTATION_NODES_PENDING) until every node that is neither provisioning
 *             nor deleted applied those versions, unless forced; then the successor is `active`
 *             (it signs from now on) and the old CA `retiring` (still trusted);
 *   retire    the trust is published holding only the successor, the old CA is `retired`, and
 *             optionally its still-valid certificates are revoked;
 *   rollback  before retire, at any phase: the old CA is `active` again, the trust is published
 *             holding only it, the successor is `abandoned` and every certificate it issued is
 *             revoked (superseded).
 *
 * Which CAs a trust holds follows from the CA statuses alone (inventory.ts TRUSTED_CA_STATUSES),
 * so an application created in the middle of a rotation gets the same bundle as the others.
 * Each step is one transaction: the phase, the CA statuses, the configs it publishes and its PKI
 * audit rows commit together or not at all; nodes are hinted after the commit.
 *
 * Profiles are plugged in through ROTATION_PLANS: where the profile's trust is published, what
 * per-node progress means and which step waits for it. For tcp_server_ca nothing is delivered to
 * the nodes (they get the issuer with each new certificate): publish changes the SDK trust
 * material (client-cert answers and SDK config files read the trusted CAs live), the switch then
 * requests a node certificate rotation for every node so its business certificate comes from the
 * new CA, retire waits until every node serves one, and rollback is refused once switched (the
 * nodes would need a second fleet-wide rotation back while programs may already trust only the
 * new root). cp_node_client_ca: publish makes the CP's node API trust both CAs, the switch rotates
 * every node onto a client certificate of the new CA, retire (gated on that) drops the old CA
 * from the node API's trust. cp_server_ca: publish rotates every node with a CP trust bundle
 * holding both CAs, the switch (gated on that) makes the CP serve a certificate of the new CA,
 * retire rotates the nodes again with only the new one; rollback after the switch is allowed.
 */
import type { Kysely } from "kysely";
import { CP_TLS_IDENTITY_CHECK_MS } from "../../../shared/config/defaults.js";
import type { CaRotationsTable, ControlSchema } from "../../../shared/db/control-schema.js";
import { dialectOf, isUniqueViolation } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { newId } from "../../../shared/ids.js";
import { appIdOfScope, appScope, type ConfigType, GLOBAL_SCOPE } from "../../../shared/node-protocol/index.js";
import { CA_PROFILES, type CaProfile, createRootCa, type RevocationReason, x509 } from "../../../shared/pki/index.js";
import { writePkiAudit } from "../audit/pki-audit.js";
import { appendConfigVersionIn } from "../configs/admin-write.js";
import type { Actor, CpContext } from "../context.js";
import { type RotationStatus, requestNodeRotation, rotationStatus } from "../nodes/rotation.js";
import { type Page, type PageRequest, paginate } from "../pagination.js";
import { type CaStatus, loadActiveCa, recordCa, trustedCaBundle, trustedCas } from "./inventory.js";

export const CA_ROTATION_PHASES = ["prepared", "published", "switched", "retired", "rolled_back"] as const;
export type CaRotationPhase = (typeof CA_ROTATION_PHASES)[number];
export type CaRotationStep = "publish" | "switch" | "retire" | "rollback";

/** Which step each phase allows next; finished phases allow none. */
const NEXT_STEPS: Record<CaRotationPhase, CaRotationStep[]> = {
  prepared: ["publish", "rollback"],
  published: ["switch", "rollback"],
  switched: ["retire", "rollback"],
  retired: [],
  rolled_back: [],
};

/** The steps `phase` allows for `profile` (a plan may forbid rollback once switched). */
function nextSteps(profile: string, phase: CaRotationPhase): CaRotationStep[] {
  const steps = NEXT_STEPS[phase] ?? [];
  const plan = ROTATION_PLANS[profile as CaProfile];
  if (phase === "switched" && plan && !plan.rollbackAfterSwitch) return steps.filter((s) => s !== "rollback");
  return steps;
}

/** Beyond one check interval, before nodes may move onto a newly trusted CA (a CP process's check may just have run). */
const TRUST_PROPAGATION_MARGIN_MS = 5_000;

/** Certificates revoked by a rollback (the successor's) and by retire with revoke_leaves (the old CA's). */
const ROTATION_REVOCATION_REASON: RevocationReason = "superseded";
/** Node certificate rotations that have not reached the node yet (rotation.ts UNFINISHED). */
const UNFINISHED_NODE_ROTATION: readonly RotationStatus[] = ["issuing", "delivering", "delivered"];
/** Node statuses whose progress a switch waits for: every node except those still provisioning (deleted ones are gone). */
const WAITING_NODE_EXCLUDED_STATUSES = ["provisioning", "deleted"];

/** One config version a publication wrote (or found already current). */
export interface PublishedVersion {
  type: ConfigType;
  scope: string;
  version: number;
}

/** What rotating one CA profile involves beyond its CA rows. */
interface RotationPlan {
  /** Publishes `bundlePem` wherever the profile's trust is published, inside `trx`; the versions now current. */
  publishTrust(trx: Kysely<ControlSchema>, now: number, actor: Actor, bundlePem: string): Promise<PublishedVersion[]>;
  /** Per node, where it stands for the rotation's phase; null when there is nothing to show yet. */
  progress(db: Kysely<ControlSchema>, row: RotationRow, versions: PublishedVersion[] | null): Promise<RotationProgress | null>;
  /** The step refused with CA_ROTATION_NODES_PENDING (unless forced) while a node is not done. */
  gatedStep: "switch" | "retire";
  /** Whether a switched rotation may still be rolled back. */
  rollbackAfterSwitch: boolean;
  /** Why rollback is refused once switched (when it is). */
  noRollbackReason?: string;
  /** The earliest instant the switch may run without force (after publish). */
  switchNotBefore?(ctx: CpContext, row: CaRotationView): number | undefined;
  /** What publish records for the operator beside the step (detail.published). */
  publishNote?: string;
  /** Runs after the switch committed (the successor signs): what it did, recorded in detail.switched. */
  afterSwitch?: StepHook;
  /** Run after publish, retire and rollback committed, each recorded in that step's detail. */
  afterPublish?: StepHook;
  afterRetire?: StepHook;
  afterRollback?: StepHook;
}

type StepHook = (ctx: CpContext, actor: Actor, row: RotationRow) => Promise<Record<string, unknown>>;

const appClientCaPlan: RotationPlan = {
  async publishTrust(trx, now, actor, bundlePem) {
    const apps = await trx.selectFrom("applications").select("id").where("deleted_at", "is", null).orderBy("id").execute();
    const out: PublishedVersion[] = [];
    for (const app of apps) {
      const item = { type: "app_client_ca_bundle" as const, scope: appScope(app.id), appId: app.id };
      const written = await appendConfigVersionIn(trx, now, actor, item, { pem: bundlePem });
      out.push({ type: item.type, scope: item.scope, version: written.version });
    }
    return out;
  },
  progress: async (db, _row, versions) => (versions ? rotationProgress(db, versions) : null),
  gatedStep: "switch",
  rollbackAfterSwitch: true,
};

/**
 * tcp_server_ca: the nodes need no trust in it (each new certificate comes with its issuer), the
 * SDK does. Its trust material (client-cert answers, SDK config files) is read live from the CA
 * statuses, so publish writes no config; the switch moves every node onto the new CA by a node
 * certificate rotation, and retire waits until each one serves a new-CA certificate.
 */
const tcpServerCaPlan: RotationPlan = {
  publishTrust: async () => [],
  progress: (db, row) => certificateCaProgress(db, row, "server_cert_id"),
  gatedStep: "retire",
  rollbackAfterSwitch: false,
  noRollbackReason: "the nodes were rotated onto certificates of the new CA, and programs may already trust only the new CA",
  publishNote:
    "Redistribute the SDK trust bundle (server_ca.pem and ocsp_signer_ca.pem, now holding both CAs: pki issue-client or POST /admin/v1/applications/:app_id/client-certs) to every program before the switch; after it, a program trusting only the old CA is refused on its next new connection.",
  afterSwitch: (ctx, actor, row) => rotateNodes(ctx, actor, row, "server_cert_id"),
};

/** Tells every CP process's node API to reload its TLS identity (this one at once, the others within a minute). */
const reloadCpTls: StepHook = async (ctx) => {
  ctx.events.tlsIdentityChanged();
  return { cp_tls_reloaded_at: ctx.clock.now() };
};

/**
 * cp_node_client_ca: the CP's node API is the only party that trusts it. Publish makes the node
 * API trust both CAs; the switch rotates every node onto a client certificate of the new CA (the
 * old one stays accepted through each rotation's grace); retire waits until every node presents a
 * new-CA certificate, then the node API trusts only the new CA. Rollback is refused once nodes
 * were moved: the old CA would have to issue them all again.
 */
const cpNodeClientCaPlan: RotationPlan = {
  publishTrust: async () => [],
  progress: (db, row) => certificateCaProgress(db, row, "client_cert_id"),
  gatedStep: "retire",
  rollbackAfterSwitch: false,
  noRollbackReason: "the nodes were moved onto CP client certificates of the new CA",
  // Other CP processes pick the new trust up within a check interval of the publish.
  switchNotBefore: (_ctx, row) => {
    const at = (row.detail.published as { at?: unknown } | undefined)?.at;
    return typeof at === "number" ? at + CP_TLS_IDENTITY_CHECK_MS + TRUST_PROPAGATION_MARGIN_MS : undefined;
  },
  afterPublish: reloadCpTls,
  afterSwitch: (ctx, actor, row) => rotateNodes(ctx, actor, row, "client_cert_id"),
  afterRetire: reloadCpTls,
  afterRollback: reloadCpTls,
};

/**
 * cp_server_ca: the nodes trust it for the CP's node API certificate (their files.cp_ca). Publish
 * rotates every node's certificates with a CP trust bundle holding both CAs (the one way new
 * trust reaches a node); the switch waits until every node applied that, then the CP serves a
 * certificate of the new CA; retire rotates the nodes again with only the new CA. A rollback
 * after the switch is safe (the nodes trust both): the CP goes back to a certificate of the old CA.
 */
const cpServerCaPlan: RotationPlan = {
  publishTrust: async () => [],
  progress: trustDeliveryProgress,
  gatedStep: "switch",
  rollbackAfterSwitch: true,
  afterPublish: (ctx, actor, row) => rotateNodes(ctx, actor, row, null),
  afterSwitch: reloadCpTls,
  afterRetire: (ctx, actor, row) => rotateNodes(ctx, actor, row, null),
  // Back to a certificate of the old CA; nodes that got the both-CA bundle get one without the abandoned CA.
  afterRollback: async (ctx, actor, row) => ({
    ...(await reloadCpTls(ctx, actor, row)),
    ...(row.phase === "prepared" ? {} : await rotateNodes(ctx, actor, row, null)),
  }),
};

const ROTATION_PLANS: Record<CaProfile, RotationPlan> = {
  app_client_ca: appClientCaPlan,
  tcp_server_ca: tcpServerCaPlan,
  cp_node_client_ca: cpNodeClientCaPlan,
  cp_server_ca: cpServerCaPlan,
};

function planFor(profile: string): { profile: CaProfile; plan: RotationPlan } {
  if (!(CA_PROFILES as readonly string[]).includes(profile)) {
    throw new AuthNexusError("VALIDATION_FAILED", { message: `ca must be one of ${CA_PROFILES.join(", ")}.` });
  }
  const known = profile as CaProfile;
  return { profile: known, plan: ROTATION_PLANS[known] };
}

export interface CaSummary {
  id: string;
  status: string;
  subject: string;
  serial: string;
  not_after: number;
  fingerprint_sha256: string;
}

export interface CaRotationView {
  id: string;
  ca_profile: string;
  phase: CaRotationPhase;
  open: boolean;
  /** The steps this phase allows. */
  next_steps: CaRotationStep[];
  old_ca: CaSummary;
  new_ca: CaSummary;
  /** The config versions the last publication wrote (publish, retire or rollback); null before the first. */
  published_versions: PublishedVersion[] | null;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  created_by: string | null;
  /** What each step reported, by phase name. */
  detail: Record<string, unknown>;
}

export interface NodeProgress {
  node_id: string;
  name: string;
  status: string;
  last_checkin_at: number | null;
  /** Published versions this node applied (that version or a later one). */
  applied: number;
  /** Published versions it has not applied yet. */
  pending: number;
  /** Of the pending ones, those it reported it could not apply. */
  errors: number;
  /** The node is where the rotation's current phase needs it. */
  done: boolean;
  /** tcp_server_ca: the CA that issued the node's current business server certificate. */
  server_ca_id?: string | null;
  /** cp_node_client_ca: the CA that issued the node's current CP client certificate. */
  client_ca_id?: string | null;
  /** cp_server_ca: the CP trust the node's newest applied rotation delivered (null: its package's). */
  cp_ca_ids?: string[] | null;
  /** tcp_server_ca: whether that CA is the rotation's new CA (done once the node also acked the rotation that brought it). */
  on_new_ca?: boolean;
  /** tcp_server_ca, once switched: the node's newest certificate rotation and its status. */
  rotation_id?: string | null;
  rotation_status?: RotationStatus | null;
}

export interface RotationProgress {
  /**
   * Published versions counted (those of applications since deleted are not delivered and not
   * counted); for tcp_server_ca, 1 once switched (each node's server certificate), else 0.
   */
  items: number;
  nodes_total: number;
  nodes_done: number;
  /** Every node is done: the step the profile gates (switch, or retire for tcp_server_ca) is allowed without force. */
  ready: boolean;
  nodes: NodeProgress[];
}

export interface CaRotationDetail extends CaRotationView {
  /** Per node, against published_versions; null before anything was published. */
  progress: RotationProgress | null;
}

type RotationRow = CaRotationsTable;

const actorName = (actor: Actor) => actor.agentId ?? "system";

// ---------------------------------------------------------------------------------------------
// Steps

/** prepare: a new CA for `profile`, `pending`. One open rotation per profile (CA_ROTATION_IN_PROGRESS). */
export async function prepareCaRotation(ctx: CpContext, actor: Actor, profile: string): Promise<CaRotationDetail> {
  const { profile: caProfile } = planFor(profile);
  await assertNoOpenRotation(ctx.controlDb, caProfile);
  const old = await loadActiveCa(ctx, caProfile);
  const generation =
    Number(
      (
        await ctx.controlDb
          .selectFrom("certificate_authorities")
          .select((eb) => eb.fn.countAll<number>().as("n"))
          .where("profile", "=", caProfile)
          .executeTakeFirstOrThrow()
      ).n,
    ) + 1;
  const oldName = new x509.X509Certificate(old.certPem).subjectName;
  const organisation = oldName.getField("O")[0];
  const issued = await createRootCa({
    profile: caProfile,
    commonName: successorName(oldName.getField("CN")[0] ?? caProfile, generation),
    ...(organisation ? { organisation } : {}),
    clock: ctx.clock,
  });

  const id = newId("car");
  const now = ctx.clock.now();
  let newCaId: string;
  try {
    newCaId = await ctx.controlDb.transaction().execute(async (trx) => {
      const caId = await recordCa(trx, ctx.clock, ctx.masterKey, caProfile, issued, actorName(actor), "pending");
      await trx
        .insertInto("ca_rotations")
        .values({
          id,
          ca_profile: caProfile,
          phase: "prepared",
          old_ca_id: old.id,
          new_ca_id: caId,
          published_versions: null,
          created_at: now,
          updated_at: now,
          finished_at: null,
          created_by: actor.agentId,
          detail: JSON.stringify({ prepared: { at: now, subject: issued.subject } }),
        })
        .execute();
      await writePkiAudit(trx, ctx.clock, {
        event: "ca_rotation.prepared",
        caProfile,
        profile: caProfile,
        serialHex: issued.serialHex,
        actor: actorName(actor),
        detail: { rotation_id: id, old_ca_id: old.id, new_ca_id: caId, subject: issued.subject },
      });
      return caId;
    });
  } catch (error) {
    // The partial unique index: another prepare of this profile committed first.
    if (isUniqueViolation(error)) throw inProgress(caProfile);
    throw error;
  }
  ctx.log.category("PKI").info("ca_rotation.prepared", {
    rotation_id: id,
    ca_profile: caProfile,
    old_ca_id: old.id,
    new_ca_id: newCaId,
    serial: issued.serialHex,
    agent_id: actor.agentId,
  });
  return getCaRotation(ctx, id);
}

/** publish: the successor joins the trust, published for every place the profile is trusted. */
export async function publishCaRotation(ctx: CpContext, actor: Actor, id: string): Promise<CaRotationDetail> {
  if (await repeatedStep(ctx, actor, id, "published")) return getCaRotation(ctx, id);
  const now = ctx.clock.now();
  const published = await ctx.controlDb.transaction().execute(async (trx) => {
    const row = await advance(trx, id, "publish", "published", now);
    const { plan } = planFor(row.ca_profile);
    await setCaStatus(trx, row.new_ca_id, ["pending"], "next");
    const versions = await publishTrust(trx, plan, row, now, actor);
    const note = plan.publishNote ? { operator_action: plan.publishNote } : {};
    await recordStep(trx, row, now, { published_versions: versions }, "published", { at: now, items: versions.length, ...note });
    await auditStep(trx, ctx, actor, row, "ca_rotation.published", { items: versions.length });
    return { row, versions };
  });
  ctx.events.publish("config.pending", null);
  ctx.log.category("PKI").info("ca_rotation.published", {
    rotation_id: id,
    ca_profile: published.row.ca_profile,
    items: published.versions.length,
    agent_id: actor.agentId,
  });
  await runHook(ctx, actor, published.row, "published", planFor(published.row.ca_profile).plan.afterPublish);
  return getCaRotation(ctx, id);
}

/** switch: the successor signs from now on; refused while a node has not applied the published trust, unless forced. */
export async function switchCaRotation(
  ctx: CpContext,
  actor: Actor,
  id: string,
  options: { force?: boolean } = {},
): Promise<CaRotationDetail> {
  if (await repeatedStep(ctx, actor, id, "switched")) return getCaRotation(ctx, id);
  const before = await getCaRotation(ctx, id);
  requireStep(before.ca_profile, before.phase, "switch");
  const notBefore = planFor(before.ca_profile).plan.switchNotBefore?.(ctx, before);
  if (notBefore !== undefined && notBefore > ctx.clock.now() && !options.force) {
    throw new AuthNexusError("CA_ROTATION_NODES_PENDING", {
      message: `Every CP process must trust the new CA before nodes move onto it: they reload their node API trust within ${CP_TLS_IDENTITY_CHECK_MS / 1000} s of the publish. Switch after ${new Date(notBefore).toISOString()}, or with force when this is the only CP process.`,
      publicDetail: { not_before: notBefore },
    });
  }
  const gated = planFor(before.ca_profile).plan.gatedStep === "switch";
  const waiting = gated ? (before.progress?.nodes ?? []).filter((n) => !n.done) : [];
  if (waiting.length > 0 && !options.force) {
    throw new AuthNexusError("CA_ROTATION_NODES_PENDING", {
      message: `${waiting.length} of ${before.progress?.nodes_total ?? 0} node(s) have not applied the published trust bundles yet (${waiting
        .slice(0, 5)
        .map((n) => n.name)
        .join(
          ", ",
        )}${waiting.length > 5 ? ", …" : ""}); wait until GET /admin/v1/pki/ca-rotations/${id} shows every node done, or switch with force.`,
      publicDetail: { pending_nodes: waiting.map((n) => ({ node_id: n.node_id, name: n.name, pending: n.pending, errors: n.errors })) },
    });
  }
  const forced = waiting.length > 0;
  const now = ctx.clock.now();
  const row = await ctx.controlDb.transaction().execute(async (trx) => {
    const current = await advance(trx, id, "switch", "switched", now);
    // Old first: at most one CA per profile is active.
    await setCaStatus(trx, current.old_ca_id, ["active"], "retiring");
    await setCaStatus(trx, current.new_ca_id, ["next"], "active");
    const pendingNodes = waiting.map((n) => n.node_id);
    await recordStep(trx, current, now, {}, "switched", { at: now, forced, pending_nodes: pendingNodes });
    await auditStep(trx, ctx, actor, current, "ca_rotation.switched", { forced, pending_nodes: pendingNodes });
    return current;
  });
  const log = ctx.log.category("PKI");
  log.info("ca_rotation.switched", {
    rotation_id: id,
    ca_profile: row.ca_profile,
    new_ca_id: row.new_ca_id,
    forced,
    agent_id: actor.agentId,
  });
  if (forced) log.warn("ca_rotation.switch_forced", { rotation_id: id, pending_nodes: waiting.map((n) => n.node_id).join(",") });
  await runHook(ctx, actor, row, "switched", planFor(row.ca_profile).plan.afterSwitch);
  return getCaRotation(ctx, id);
}

/** retire: the trust holds only the successor; the old CA is retired, and with revokeLeaves its valid certificates are revoked. */
export async function retireCaRotation(
  ctx: CpContext,
  actor: Actor,
  id: string,
  options: { revokeLeaves?: boolean; force?: boolean } = {},
): Promise<CaRotationDetail & { revoked_certificates: number }> {
  if (await repeatedStep(ctx, actor, id, "retired")) return { ...(await getCaRotation(ctx, id)), revoked_certificates: 0 };
  const before = await getCaRotation(ctx, id);
  requireStep(before.ca_profile, before.phase, "retire");
  const gated = planFor(before.ca_profile).plan.gatedStep === "retire";
  const waiting = gated ? (before.progress?.nodes ?? []).filter((n) => !n.done) : [];
  if (waiting.length > 0 && !options.force) {
    throw new AuthNexusError("CA_ROTATION_NODES_PENDING", {
      message: `${waiting.length} of ${before.progress?.nodes_total ?? 0} node(s) do not serve a server certificate of the new CA yet (${waiting
        .slice(0, 5)
        .map((n) => n.name)
        .join(
          ", ",
        )}${waiting.length > 5 ? ", …" : ""}); wait until GET /admin/v1/pki/ca-rotations/${id} shows every node done (its certificate rotation applied), or retire with force.`,
      publicDetail: {
        pending_nodes: waiting.map((n) => ({
          node_id: n.node_id,
          name: n.name,
          server_ca_id: n.server_ca_id ?? null,
          rotation_id: n.rotation_id ?? null,
          rotation_status: n.rotation_status ?? null,
        })),
      },
    });
  }
  const forced = waiting.length > 0;
  const pendingNodes = waiting.map((n) => n.node_id);
  const now = ctx.clock.now();
  const done = await ctx.controlDb.transaction().execute(async (trx) => {
    const row = await advance(trx, id, "retire", "retired", now);
    const { plan } = planFor(row.ca_profile);
    await setCaStatus(trx, row.old_ca_id, ["retiring"], "retired");
    const versions = await publishTrust(trx, plan, row, now, actor);
    const revoked = options.revokeLeaves ? await revokeIssuedBy(trx, ctx, actor, row, row.old_ca_id, now) : 0;
    const step = {
      at: now,
      items: versions.length,
      revoke_leaves: options.revokeLeaves === true,
      revoked_certificates: revoked,
      ...(gated ? { forced, pending_nodes: pendingNodes } : {}),
    };
    await recordStep(trx, row, now, { published_versions: versions, finished_at: now }, "retired", step);
    await auditStep(trx, ctx, actor, row, "ca_rotation.retired", {
      revoke_leaves: options.revokeLeaves === true,
      revoked_certificates: revoked,
      ...(gated ? { forced, pending_nodes: pendingNodes } : {}),
    });
    return { row, revoked, versions };
  });
  if (forced) ctx.log.category("PKI").warn("ca_rotation.retire_forced", { rotation_id: id, pending_nodes: pendingNodes.join(",") });
  ctx.events.publish("config.pending", null);
  ctx.log.category("PKI").info("ca_rotation.retired", {
    rotation_id: id,
    ca_profile: done.row.ca_profile,
    old_ca_id: done.row.old_ca_id,
    items: done.versions.length,
    revoked_certificates: done.revoked,
    agent_id: actor.agentId,
  });
  await runHook(ctx, actor, done.row, "retired", planFor(done.row.ca_profile).plan.afterRetire);
  return { ...(await getCaRotation(ctx, id)), revoked_certificates: done.revoked };
}

/** rollback: before retire, the old CA is active again and alone in the trust; the successor's certificates are revoked. */
export async function rollbackCaRotation(
  ctx: CpContext,
  actor: Actor,
  id: string,
): Promise<CaRotationDetail & { revoked_certificates: number }> {
  const now = ctx.clock.now();
  const done = await ctx.controlDb.transaction().execute(async (trx) => {
    const row = await advance(trx, id, "rollback", "rolled_back", now);
    const { plan } = planFor(row.ca_profile);
    // Successor first: at most one CA per profile is active.
    await setCaStatus(trx, row.new_ca_id, ["pending", "next", "active"], "abandoned");
    await setCaStatus(trx, row.old_ca_id, ["active", "retiring"], "active");
    const versions = await publishTrust(trx, plan, row, now, actor);
    const revoked = await revokeIssuedBy(trx, ctx, actor, row, row.new_ca_id, now);
    const step = { at: now, from_phase: row.phase, items: versions.length, revoked_certificates: revoked };
    await recordStep(trx, row, now, { published_versions: versions, finished_at: now }, "rolled_back", step);
    await auditStep(trx, ctx, actor, row, "ca_rotation.rolled_back", { from_phase: row.phase, revoked_certificates: revoked });
    return { row, revoked, versions };
  });
  ctx.events.publish("config.pending", null);
  ctx.log.category("PKI").warn("ca_rotation.rolled_back", {
    rotation_id: id,
    ca_profile: done.row.ca_profile,
    from_phase: done.row.phase,
    items: done.versions.length,
    revoked_certificates: done.revoked,
    agent_id: actor.agentId,
  });
  await runHook(ctx, actor, done.row, "rolled_back", planFor(done.row.ca_profile).plan.afterRollback);
  return { ...(await getCaRotation(ctx, id)), revoked_certificates: done.revoked };
}

// ---------------------------------------------------------------------------------------------
// Reads

export interface CaRotationFilter {
  caProfile?: CaProfile | undefined;
  open?: boolean | undefined;
}

export async function listCaRotations(ctx: CpContext, filter: CaRotationFilter, request: PageRequest): Promise<Page<CaRotationView>> {
  const base = ctx.controlDb
    .selectFrom("ca_rotations")
    .$if(filter.caProfile !== undefined, (q) => q.where("ca_profile", "=", filter.caProfile as string))
    .$if(filter.open !== undefined, (q) => q.where("finished_at", filter.open ? "is" : "is not", null));
  const page = await paginate(base, request, (q) => q.selectAll().orderBy("created_at", "desc").orderBy("id"));
  const cas = await caSummaries(
    ctx.controlDb,
    page.items.flatMap((r) => [r.old_ca_id, r.new_ca_id]),
  );
  return { ...page, items: page.items.map((r) => toView(r, cas)) };
}

export async function getCaRotation(ctx: CpContext, id: string): Promise<CaRotationDetail> {
  const row = await ctx.controlDb.selectFrom("ca_rotations").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) throw notFound();
  const cas = await caSummaries(ctx.controlDb, [row.old_ca_id, row.new_ca_id]);
  const view = toView(row, cas);
  return { ...view, progress: await planFor(row.ca_profile).plan.progress(ctx.controlDb, row, view.published_versions) };
}

/** Per node (every node except provisioning ones), how many of `versions` it applied. */
async function rotationProgress(db: Kysely<ControlSchema>, versions: readonly PublishedVersion[]): Promise<RotationProgress> {
  const liveApps = new Set((await db.selectFrom("applications").select("id").where("deleted_at", "is", null).execute()).map((a) => a.id));
  const counted = versions.filter((v) => {
    if (v.scope === GLOBAL_SCOPE) return true;
    const appId = appIdOfScope(v.scope);
    return appId !== undefined && appId !== null && liveApps.has(appId);
  });
  const nodes = await db
    .selectFrom("nodes")
    .select(["id", "name", "status", "last_checkin_at"])
    .where("status", "not in", WAITING_NODE_EXCLUDED_STATUSES)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
  const types = [...new Set(counted.map((v) => v.type))];
  const states =
    nodes.length === 0 || types.length === 0
      ? []
      : await db
          .selectFrom("node_config_states")
          .select(["node_id", "config_type", "scope", "applied_version", "error_version"])
          .where("config_type", "in", types)
          .where(
            "node_id",
            "in",
            nodes.map((n) => n.id),
          )
          .execute();
  const stateOf = new Map(states.map((s) => [`${s.node_id}|${s.config_type}|${s.scope}`, s]));
  const progress = nodes.map((node): NodeProgress => {
    let applied = 0;
    let errors = 0;
    for (const v of counted) {
      const state = stateOf.get(`${node.id}|${v.type}|${v.scope}`);
      if ((state?.applied_version ?? 0) >= v.version) applied += 1;
      else if ((state?.error_version ?? 0) >= v.version) errors += 1;
    }
    const pending = counted.length - applied;
    return {
      node_id: node.id,
      name: node.name,
      status: node.status,
      last_checkin_at: node.last_checkin_at,
      applied,
      pending,
      errors,
      done: pending === 0,
    };
  });
  const done = progress.filter((n) => n.done).length;
  return { items: counted.length, nodes_total: progress.length, nodes_done: done, ready: done === progress.length, nodes: progress };
}

/**
 * tcp_server_ca progress, per node (every node except provisioning ones): the CA of its current
 * business certificate and, once switched, its newest certificate rotation. Before the switch
 * nothing waits on a node (done); from the switch on a node is done when its certificate comes
 * from the new CA and it acked the rotation that brought it (it serves that certificate), which
 * retire waits for.
 */
async function certificateCaProgress(
  db: Kysely<ControlSchema>,
  row: RotationRow,
  column: "server_cert_id" | "client_cert_id",
): Promise<RotationProgress | null> {
  const phase = row.phase as CaRotationPhase;
  if (phase === "prepared") return null;
  const afterSwitch = phase === "switched" || phase === "retired";
  const nodes = await db
    .selectFrom("nodes")
    .leftJoin("certificates", "certificates.id", `nodes.${column}`)
    .select(["nodes.id", "nodes.name", "nodes.status", "nodes.last_checkin_at", "certificates.ca_id as cert_ca_id"])
    .where("nodes.status", "not in", WAITING_NODE_EXCLUDED_STATUSES)
    .orderBy("nodes.created_at")
    .orderBy("nodes.id")
    .execute();
  const newest = afterSwitch
    ? await newestRotations(
        db,
        nodes.map((n) => n.id),
        null,
      )
    : new Map<string, NodeRotationState>();
  const progress = nodes.map((node): NodeProgress => {
    const onNewCa = node.cert_ca_id === row.new_ca_id;
    const rotation = newest.get(node.id);
    // The job records the new certificate as the node's when it issues it; the node uses it once it acked.
    const inUse = onNewCa && !(rotation && UNFINISHED_NODE_ROTATION.includes(rotation.status));
    const done = afterSwitch ? inUse : true;
    return {
      node_id: node.id,
      name: node.name,
      status: node.status,
      last_checkin_at: node.last_checkin_at,
      applied: afterSwitch && inUse ? 1 : 0,
      pending: done ? 0 : 1,
      errors: !done && (rotation?.status === "failed" || rotation?.status === "cancelled") ? 1 : 0,
      done,
      ...(column === "server_cert_id" ? { server_ca_id: node.cert_ca_id } : { client_ca_id: node.cert_ca_id }),
      on_new_ca: onNewCa,
      rotation_id: rotation?.id ?? null,
      rotation_status: rotation?.status ?? null,
    };
  });
  return summarize(progress, afterSwitch ? 1 : 0);
}

interface NodeRotationState {
  id: string;
  status: RotationStatus;
}

/** Each node's newest certificate rotation (created at or after `since`, when given). */
async function newestRotations(
  db: Kysely<ControlSchema>,
  nodeIds: string[],
  since: number | null,
): Promise<Map<string, NodeRotationState>> {
  const newest = new Map<string, NodeRotationState>();
  if (nodeIds.length > 0) {
    const rotations = await db
      .selectFrom("node_cert_rotations")
      .leftJoin("pki_jobs", "pki_jobs.id", "node_cert_rotations.issue_job_id")
      .selectAll("node_cert_rotations")
      .select("pki_jobs.status as issue_job_status")
      .where("node_cert_rotations.node_id", "in", nodeIds)
      .$if(since !== null, (q) => q.where("node_cert_rotations.created_at", ">=", since as number))
      .orderBy("node_cert_rotations.created_at", "desc")
      .orderBy("node_cert_rotations.id", "desc")
      .execute();
    for (const r of rotations) {
      if (newest.has(r.node_id)) continue;
      const { issue_job_status: jobStatus, ...rotation } = r;
      newest.set(r.node_id, { id: r.id, status: rotationStatus(rotation, jobStatus ?? "pending") });
    }
  }
  return newest;
}

function summarize(progress: NodeProgress[], items: number): RotationProgress {
  const done = progress.filter((n) => n.done).length;
  return { items, nodes_total: progress.length, nodes_done: done, ready: done === progress.length, nodes: progress };
}

/**
 * cp_server_ca progress, per node: whether the certificate rotation that brought it the CP trust
 * bundle of the current phase (both CAs after publish, only the new one after retire) is applied.
 * The switch waits for the publish's; after the switch nothing waits (the nodes trust both).
 */
async function trustDeliveryProgress(db: Kysely<ControlSchema>, row: RotationRow): Promise<RotationProgress | null> {
  const phase = row.phase as CaRotationPhase;
  if (phase !== "published" && phase !== "switched" && phase !== "retired") return null;
  const nodes = await db
    .selectFrom("nodes")
    .select(["id", "name", "status", "last_checkin_at"])
    .where("status", "not in", WAITING_NODE_EXCLUDED_STATUSES)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
  const [trust, newest] = await Promise.all([
    appliedCpTrust(
      db,
      nodes.map((n) => n.id),
    ),
    newestRotations(
      db,
      nodes.map((n) => n.id),
      null,
    ),
  ]);
  const progress = nodes.map((node): NodeProgress => {
    const held = trust.get(node.id) ?? null;
    const rotation = newest.get(node.id);
    const done = phase === "retired" ? held !== null && !held.includes(row.old_ca_id) : held?.includes(row.new_ca_id) === true;
    return {
      node_id: node.id,
      name: node.name,
      status: node.status,
      last_checkin_at: node.last_checkin_at,
      applied: done ? 1 : 0,
      pending: done ? 0 : 1,
      errors: !done && (rotation?.status === "failed" || rotation?.status === "cancelled") ? 1 : 0,
      done,
      cp_ca_ids: held,
      rotation_id: rotation?.id ?? null,
      rotation_status: rotation?.status ?? null,
    };
  });
  return summarize(progress, 1);
}

/**
 * The cp_server_ca ids each node trusts, as far as the CP knows: those its newest applied
 * rotation delivered (null: none since the package it was installed from).
 */
async function appliedCpTrust(db: Kysely<ControlSchema>, nodeIds: string[]): Promise<Map<string, string[]>> {
  const held = new Map<string, string[]>();
  if (nodeIds.length === 0) return held;
  const rows = await db
    .selectFrom("node_cert_rotations")
    .select(["node_id", "cp_ca_ids"])
    .where("node_id", "in", nodeIds)
    .where("acked_at", "is not", null)
    .where("cp_ca_ids", "is not", null)
    .orderBy("acked_at", "desc")
    .orderBy("id", "desc")
    .execute();
  for (const r of rows) if (!held.has(r.node_id)) held.set(r.node_id, JSON.parse(r.cp_ca_ids as string) as string[]);
  return held;
}

/** One node's outcome of a step's request to rotate its certificates. */
interface NodeRotationRequest {
  node_id: string;
  outcome: "requested" | "already_in_progress" | "not_provisioned" | "failed";
  rotation_id: string | null;
  message?: string;
}

/**
 * A certificate rotation for every node (neither provisioning nor deleted) holding certificates:
 * after a tcp_server_ca or cp_node_client_ca switch those whose certificate in `column` is not
 * from the new CA yet (the rotation job issues from the active CA, the successor by now); for a
 * cp_server_ca publish or retire (column null) every node, to deliver the CP trust bundle. A node
 * with a rotation already under way is listed as such (its job may still issue from the new CA;
 * progress shows where it ends up), as is any other refusal: the step itself has committed.
 */
async function rotateNodes(
  ctx: CpContext,
  actor: Actor,
  row: RotationRow,
  column: "server_cert_id" | "client_cert_id" | null,
): Promise<Record<string, unknown>> {
  const nodes = await ctx.controlDb
    .selectFrom("nodes")
    .leftJoin("certificates", "certificates.id", `nodes.${column ?? "server_cert_id"}`)
    .select(["nodes.id", "certificates.ca_id as cert_ca_id"])
    .where("nodes.status", "not in", WAITING_NODE_EXCLUDED_STATUSES)
    .where("nodes.server_cert_id", "is not", null)
    .where("nodes.client_cert_id", "is not", null)
    .orderBy("nodes.created_at")
    .orderBy("nodes.id")
    .execute();
  const requests: NodeRotationRequest[] = [];
  // cp_server_ca: a node whose applied CP trust is already the current one needs nothing (a step repeated).
  const current = column === null ? await trustedCas(ctx.controlDb, "cp_server_ca") : null;
  const applied =
    column === null
      ? await appliedCpTrust(
          ctx.controlDb,
          nodes.map((n) => n.id),
        )
      : new Map<string, string[]>();
  for (const node of nodes) {
    if (column !== null && node.cert_ca_id === row.new_ca_id) continue;
    if (current && applied.get(node.id)?.join(",") === current.ids.join(",")) continue;
    try {
      const rotation = await requestNodeRotation(ctx, actor, node.id, "ca_rotation");
      requests.push({ node_id: node.id, outcome: "requested", rotation_id: rotation.id });
    } catch (error) {
      const code = error instanceof AuthNexusError ? error.code : "INTERNAL";
      const message = error instanceof AuthNexusError ? error.message : "the rotation could not be requested";
      const detail = error instanceof AuthNexusError ? (error.publicDetail as { rotation_id?: unknown } | undefined) : undefined;
      const rotationId = detail?.rotation_id;
      const outcome =
        code === "NODE_ROTATION_IN_PROGRESS" ? "already_in_progress" : code === "NODE_NOT_PROVISIONED" ? "not_provisioned" : "failed";
      requests.push({ node_id: node.id, outcome, rotation_id: typeof rotationId === "string" ? rotationId : null, message });
      if (outcome === "failed") {
        ctx.log.category("PKI").error("ca_rotation.node_rotation_failed", { rotation_id: row.id, node_id: node.id, error: message });
      }
    }
  }
  ctx.log.category("PKI").info("ca_rotation.nodes_rotating", {
    rotation_id: row.id,
    ca_profile: row.ca_profile,
    requested: requests.filter((r) => r.outcome === "requested").length,
    already_in_progress: requests.filter((r) => r.outcome === "already_in_progress").length,
    other: requests.filter((r) => r.outcome === "not_provisioned" || r.outcome === "failed").length,
  });
  return { node_rotations: requests };
}

// ---------------------------------------------------------------------------------------------
// Helpers

function notFound(): AuthNexusError {
  return new AuthNexusError("NOT_FOUND", { message: "CA rotation not found." });
}

function inProgress(profile: string): AuthNexusError {
  return new AuthNexusError("CA_ROTATION_IN_PROGRESS", {
    message: `A rotation of ${profile} is already open; finish it (retire) or roll it back before preparing another.`,
  });
}

async function assertNoOpenRotation(db: Kysely<ControlSchema>, profile: CaProfile): Promise<void> {
  const open = await db
    .selectFrom("ca_rotations")
    .select("id")
    .where("ca_profile", "=", profile)
    .where("finished_at", "is", null)
    .executeTakeFirst();
  if (open) {
    throw new AuthNexusError("CA_ROTATION_IN_PROGRESS", {
      message: `A rotation of ${profile} is already open (${open.id}); finish it (retire) or roll it back before preparing another.`,
      publicDetail: { rotation_id: open.id },
    });
  }
}

function requireStep(profile: string, phase: CaRotationPhase, step: CaRotationStep): void {
  const allowed = nextSteps(profile, phase);
  if (allowed.includes(step)) return;
  if (step === "rollback" && phase === "switched") {
    throw new AuthNexusError("CA_ROTATION_WRONG_PHASE", {
      message: `Cannot roll back a ${profile} rotation after the switch: ${ROTATION_PLANS[profile as CaProfile]?.noRollbackReason ?? "it has switched"}. Finish it with retire (force for nodes that cannot be moved), then prepare another rotation if the new CA must go.`,
      publicDetail: { phase, next_steps: allowed },
    });
  }
  const hint = allowed.length === 0 ? "it has finished" : `the next step is ${allowed.join(" or ")}`;
  throw new AuthNexusError("CA_ROTATION_WRONG_PHASE", {
    message: `Cannot ${step} a rotation in phase ${phase}: ${hint}.`,
    publicDetail: { phase, next_steps: allowed },
  });
}

/**
 * Moves the rotation to `to` inside `trx`, if its phase allows `step`. The phase is part of the
 * UPDATE's WHERE, so of two concurrent steps only one moves it; on PostgreSQL the row is locked
 * first, so the loser waits and then sees the new phase.
 */
async function advance(
  trx: Kysely<ControlSchema>,
  id: string,
  step: CaRotationStep,
  to: CaRotationPhase,
  now: number,
): Promise<RotationRow> {
  const row = await trx
    .selectFrom("ca_rotations")
    .selectAll()
    .where("id", "=", id)
    .$if(dialectOf(trx) === "postgres", (q) => q.forUpdate())
    .executeTakeFirst();
  if (!row) throw notFound();
  requireStep(row.ca_profile, row.phase as CaRotationPhase, step);
  const updated = await trx
    .updateTable("ca_rotations")
    .set({ phase: to, updated_at: now })
    .where("id", "=", id)
    .where("phase", "=", row.phase)
    .executeTakeFirst();
  if (Number(updated.numUpdatedRows) !== 1) requireStep(row.ca_profile, to, step);
  return row;
}

/** A CA status change that must find the CA in one of `from` (anything else is a broken invariant, not a user error). */
async function setCaStatus(trx: Kysely<ControlSchema>, caId: string, from: CaStatus[], to: CaStatus): Promise<void> {
  const updated = await trx
    .updateTable("certificate_authorities")
    .set({ status: to })
    .where("id", "=", caId)
    .where("status", "in", from)
    .executeTakeFirst();
  if (Number(updated.numUpdatedRows) !== 1) {
    throw new AuthNexusError("INTERNAL", { message: "CA status changed outside its rotation", detail: { ca_id: caId, from, to } });
  }
}

async function publishTrust(trx: Kysely<ControlSchema>, plan: RotationPlan, row: RotationRow, now: number, actor: Actor) {
  const bundle = await trustedCaBundle(trx, row.ca_profile as CaProfile);
  return plan.publishTrust(trx, now, actor, bundle);
}

async function recordStep(
  trx: Kysely<ControlSchema>,
  row: RotationRow,
  now: number,
  patch: { published_versions?: PublishedVersion[]; finished_at?: number },
  phase: CaRotationPhase,
  step: Record<string, unknown>,
): Promise<void> {
  const detail = { ...parseObject(row.detail), [phase]: step };
  await trx
    .updateTable("ca_rotations")
    .set({
      updated_at: now,
      detail: JSON.stringify(detail),
      ...(patch.published_versions ? { published_versions: JSON.stringify(patch.published_versions) } : {}),
      ...(patch.finished_at !== undefined ? { finished_at: patch.finished_at } : {}),
    })
    .where("id", "=", row.id)
    .execute();
}

/**
 * A step asked again once its rotation reached that phase (the answer to the first was lost, or
 * the CP stopped before the step's follow-up finished): its hook runs again, which asks only the
 * nodes still not done. True when that was the case.
 */
async function repeatedStep(ctx: CpContext, actor: Actor, id: string, reached: CaRotationPhase): Promise<boolean> {
  const row = await ctx.controlDb.selectFrom("ca_rotations").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row || row.phase !== reached) return false;
  const { plan } = planFor(row.ca_profile);
  const hooks: Partial<Record<CaRotationPhase, StepHook | undefined>> = {
    published: plan.afterPublish,
    switched: plan.afterSwitch,
    retired: plan.afterRetire,
  };
  const hook = hooks[reached];
  if (!hook) return false;
  await runHook(ctx, actor, row, reached, hook);
  return true;
}

/** Runs a plan's hook after its step committed and records what it did in that step's detail. */
async function runHook(ctx: CpContext, actor: Actor, row: RotationRow, phase: CaRotationPhase, hook: StepHook | undefined): Promise<void> {
  if (!hook) return;
  const outcome = await hook(ctx, actor, row);
  await mergeStepDetail(ctx.controlDb, row.id, phase, outcome, ctx.clock.now());
}

/** Adds `patch` to what a step recorded (detail[phase]), after that step committed. */
async function mergeStepDetail(
  db: Kysely<ControlSchema>,
  id: string,
  phase: CaRotationPhase,
  patch: Record<string, unknown>,
  now: number,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const row = await trx
      .selectFrom("ca_rotations")
      .select("detail")
      .where("id", "=", id)
      .$if(dialectOf(trx) === "postgres", (q) => q.forUpdate())
      .executeTakeFirstOrThrow();
    const detail = parseObject(row.detail);
    const step = detail[phase];
    const merged = { ...detail, [phase]: { ...(step !== null && typeof step === "object" ? step : {}), ...patch } };
    await trx
      .updateTable("ca_rotations")
      .set({ detail: JSON.stringify(merged), updated_at: now })
      .where("id", "=", id)
      .execute();
  });
}

async function auditStep(
  trx: Kysely<ControlSchema>,
  ctx: CpContext,
  actor: Actor,
  row: RotationRow,
  event: string,
  detail: Record<string, unknown>,
): Promise<void> {
  await writePkiAudit(trx, ctx.clock, {
    event,
    caProfile: row.ca_profile,
    profile: row.ca_profile,
    actor: actorName(actor),
    detail: { rotation_id: row.id, old_ca_id: row.old_ca_id, new_ca_id: row.new_ca_id, ...detail },
  });
}

/** Revokes every certificate `caId` issued that is still valid (expired ones too: they can never be valid again anyway). */
async function revokeIssuedBy(
  trx: Kysely<ControlSchema>,
  ctx: CpContext,
  actor: Actor,
  row: RotationRow,
  caId: string,
  now: number,
): Promise<number> {
  const leaves = await trx
    .selectFrom("certificates")
    .select(["id", "serial_hex", "leaf_profile", "ca_profile"])
    .where("ca_id", "=", caId)
    .where("status", "=", "valid")
    .execute();
  if (leaves.length === 0) return 0;
  await trx
    .updateTable("certificates")
    .set({ status: "revoked", revoked_at: now, revocation_reason: ROTATION_REVOCATION_REASON })
    .where("ca_id", "=", caId)
    .where("status", "=", "valid")
    .where(
      "id",
      "in",
      leaves.map((l) => l.id),
    )
    .execute();
  for (const leaf of leaves) {
    await writePkiAudit(trx, ctx.clock, {
      event: "cert.revoked",
      certificateId: leaf.id,
      caProfile: leaf.ca_profile,
      serialHex: leaf.serial_hex,
      profile: leaf.leaf_profile,
      actor: actorName(actor),
      detail: { reason: ROTATION_REVOCATION_REASON, rotation_id: row.id },
    });
  }
  return leaves.length;
}

async function caSummaries(db: Kysely<ControlSchema>, ids: string[]): Promise<Map<string, CaSummary>> {
  if (ids.length === 0) return new Map();
  const rows = await db
    .selectFrom("certificate_authorities")
    .select(["id", "status", "subject", "serial_hex", "not_after", "fingerprint_sha256"])
    .where("id", "in", [...new Set(ids)])
    .execute();
  return new Map(
    rows.map((r) => [
      r.id,
      {
        id: r.id,
        status: r.status,
        subject: r.subject,
        serial: r.serial_hex,
        not_after: r.not_after,
        fingerprint_sha256: r.fingerprint_sha256,
      },
    ]),
  );
}

function toView(row: RotationRow, cas: Map<string, CaSummary>): CaRotationView {
  const ca = (caId: string): CaSummary => {
    const found = cas.get(caId);
    if (!found) throw new AuthNexusError("INTERNAL", { message: "a rotation names a CA that does not exist", detail: { ca_id: caId } });
    return found;
  };
  const phase = row.phase as CaRotationPhase;
  return {
    id: row.id,
    ca_profile: row.ca_profile,
    phase,
    open: row.finished_at === null,
    next_steps: nextSteps(row.ca_profile, phase),
    old_ca: ca(row.old_ca_id),
    new_ca: ca(row.new_ca_id),
    published_versions: row.published_versions ? (JSON.parse(row.published_versions) as PublishedVersion[]) : null,
    created_at: row.created_at,
    updated_at: row.updated_at,
    finished_at: row.finished_at,
    created_by: row.created_by,
    detail: parseObject(row.detail),
  };
}

function parseObject(text: string | null): Record<string, unknown> {
  if (!text) return {};
  const parsed = JSON.parse(text) as unknown;
  return parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
}

/**
 * The successor's CN: the old CN without its generation suffix, then " G<generation>" (the CAs
 * of one profile must differ by name: a node links a client certificate to its issuer by name).
 */
export function successorName(oldCommonName: string, generation: number): string {
  const suffix = ` G${generation}`;
  const base = oldCommonName.replace(/ G\d+$/, "");
  return `${base.slice(0, 64 - suffix.length).trimEnd()}${suffix}`;
}
