/**
 * Following a node certificate rotation from the CLI (`authnexus pki rotate <nid>`): polls the
 * rotation's URL and reports each step it passed, once, in order (issuing → delivering →
 * delivered → applied). Done once the node applied the new certificates: it does not wait for
 * the grace period after which the retire job revokes the old ones. Free of commander and of
 * process I/O (the caller passes the GET, the clock, the sleep and where lines go), so it is
 * testable on its own.
 */
import type { RotationView } from "../cp/services/nodes/rotation.js";
import { orDash, time } from "./output.js";

/** The admin API's view of a rotation (GET /admin/v1/nodes/:nid/certs/rotations/:rid) and its jobs, as the CP defines them. */
export type { RotationView };

type RotationJob = RotationView["jobs"][number];

/** How often the rotation is read again while following it, ms. */
export const ROTATION_POLL_INTERVAL_MS = 500;
/** --timeout when not given, seconds. */
export const DEFAULT_ROTATION_TIMEOUT_S = 300;

/** The steps of a rotation that goes well, in order; "completed" follows "applied" after the grace period. */
const STEPS = ["issuing", "delivering", "delivered", "applied", "completed"] as const;
type Step = (typeof STEPS)[number];
/** Statuses after which there is nothing left to wait for. */
const DONE = new Set(["applied", "completed"]);
const ENDED_BADLY = new Set(["failed", "cancelled", "superseded"]);

export const rotationPath = (nodeId: string, rotationId: string) =>
  `/admin/v1/nodes/${encodeURIComponent(nodeId)}/certs/rotations/${encodeURIComponent(rotationId)}`;

export interface FollowOptions {
  get(path: string): Promise<RotationView>;
  /** One progress line (without its line break). */
  print(line: string): void;
  now(): number;
  sleep(ms: number): Promise<void>;
  timeoutMs: number;
  pollIntervalMs?: number;
  /** Whether a failed read is worth another try (the CP restarting); others end the follow. */
  transient?(error: unknown): boolean;
}

export type FollowOutcome = { ok: true; view: RotationView } | { ok: false; view: RotationView; message: string };

/** Follows `first` (the 202 answer or a read of it) until it is applied, ends badly or the timeout passes. */
export async function followRotation(first: RotationView, options: FollowOptions): Promise<FollowOutcome> {
  const deadline = options.now() + options.timeoutMs;
  const interval = options.pollIntervalMs ?? ROTATION_POLL_INTERVAL_MS;
  const path = rotationPath(first.node_id, first.id);
  let view = first;
  let printed = -1;
  let unreachableNoted = false;
  for (;;) {
    printed = printSteps(view, printed, options.print);
    if (DONE.has(view.status)) return { ok: true, view };
    if (ENDED_BADLY.has(view.status)) return { ok: false, view, message: endedBadly(view) };
    if (options.now() >= deadline) return { ok: false, view, message: timedOut(view, options.timeoutMs) };
    await options.sleep(Math.max(0, Math.min(interval, deadline - options.now())));
    try {
      view = await options.get(path);
      unreachableNoted = false;
    } catch (error) {
      if (!options.transient?.(error)) throw error;
      if (!unreachableNoted) options.print(`(cannot read the rotation right now: ${(error as Error).message}; trying again)`);
      unreachableNoted = true;
    }
  }
}

/** Prints the steps after index `printed` up to the view's own; returns the last index printed. */
function printSteps(view: RotationView, printed: number, print: (line: string) => void): number {
  const reached = STEPS.indexOf(view.status as Step);
  // A rotation that failed, was cancelled or superseded still passed the steps its timestamps show.
  const upTo = reached >= 0 ? reached : lastStepPassed(view);
  for (let i = printed + 1; i <= upTo; i++) print(stepLine(STEPS[i] as Step, view));
  return Math.max(printed, upTo);
}

function lastStepPassed(view: RotationView): number {
  if (view.acked_at !== null) return STEPS.indexOf("applied");
  if (view.delivered_at !== null) return STEPS.indexOf("delivered");
  if (view.issued_at !== null) return STEPS.indexOf("delivering");
  return STEPS.indexOf("issuing");
}

const jobOfKind = (view: RotationView, kind: string) => view.jobs.find((j) => j.kind === kind);
const jobName = (job: RotationJob | undefined) => (job ? `job ${job.id} (${job.kind})` : "its job");

function stepLine(step: Step, view: RotationView): string {
  const issue = jobOfKind(view, "node_cert_rotate");
  const retire = jobOfKind(view, "node_cert_retire");
  switch (step) {
    case "issuing":
      return `issuing: ${jobName(issue)} issues a new server and a new client certificate for node ${view.node_id}`;
    case "delivering":
      return `delivering: issued at ${time(view.issued_at)} (server ${orDash(view.new_server_cert_id)}, client ${orDash(view.new_client_cert_id)}, package ${orDash(view.package_id)}; new SPKI pin ${orDash(view.new_server_spki_pin)}); waiting for the node's next config pull`;
    case "delivered":
      return `delivered: the node received them at ${time(view.delivered_at)}; waiting for it to switch and acknowledge`;
    case "applied": {
      const grace =
        view.retire_at !== null && view.acked_at !== null
          ? ` (${Math.round((view.retire_at - view.acked_at) / 1000)} s after the ack)`
          : "";
      return `applied: the node serves and presents its new certificates since ${time(view.acked_at)}; the old client certificate ${orDash(view.old_client_cert_id)} is accepted until ${time(view.retire_at)}${grace}, then ${jobName(retire)} revokes the old certificates`;
    }
    case "completed":
      return `completed: the old certificates were revoked at ${time(view.completed_at)}`;
  }
}

function endedBadly(view: RotationView): string {
  const issue = jobOfKind(view, "node_cert_rotate");
  if (view.status === "failed") {
    const attempts = issue ? ` after ${issue.attempts} attempt(s)` : "";
    const retry = issue ? `; once the cause is fixed, retry it with \`authnexus pki jobs retry ${issue.id}\`` : "";
    return `rotation ${view.id} failed: ${jobName(issue)} failed${attempts}: ${orDash(issue?.last_error)}${retry}`;
  }
  if (view.status === "cancelled") {
    const retry = issue ? `retry its job with \`authnexus pki jobs retry ${issue.id}\` or ` : "";
    return `rotation ${view.id} was cancelled (${jobName(issue)} is cancelled); ${retry}start a new one with \`authnexus pki rotate ${view.node_id}\``;
  }
  return `rotation ${view.id} was superseded at ${time(view.superseded_at)}: a newer rotation of the node was requested, or its package was reissued (the node then gets its certificates from the new package); pki rotations ${view.node_id} lists them`;
}

function timedOut(view: RotationView, timeoutMs: number): string {
  const hint =
    view.status === "delivering"
      ? " (the node takes its new certificates on its next config pull: is it running and connected to the CP?)"
      : "";
  return `rotation ${view.id} is still ${view.status} after ${Math.round(timeoutMs / 1000)} s${hint}; it goes on without this command: follow it with \`authnexus pki rotations ${view.node_id}\` or GET ${rotationPath(view.node_id, view.id)}`;
}
