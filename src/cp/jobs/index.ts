/** The CP's PKI job worker with every job kind it knows (onboarding, and a rotation's two jobs), as serve-cp starts it once setup is complete. */
import type { CpContext } from "../services/context.js";
import { NODE_ONBOARD_JOB_KIND } from "../services/nodes/lifecycle.js";
import { NODE_CERT_RETIRE_JOB_KIND, NODE_CERT_ROTATE_JOB_KIND } from "../services/nodes/rotation.js";
import { nodeCertRetireHandler } from "./node-cert-retire.js";
import { nodeCertRotateHandler } from "./node-cert-rotate.js";
import { nodeOnboardHandler } from "./node-onboard.js";
import { createJobWorker, type JobWorker, type JobWorkerOptions } from "./worker.js";

export { nodeOnboardHandler } from "./node-onboard.js";
export * from "./worker.js";

export function createPkiJobWorker(ctx: CpContext, options: Partial<JobWorkerOptions> = {}): JobWorker {
  return createJobWorker(
    ctx,
    {
      [NODE_ONBOARD_JOB_KIND]: nodeOnboardHandler(ctx),
      [NODE_CERT_ROTATE_JOB_KIND]: nodeCertRotateHandler(ctx),
      [NODE_CERT_RETIRE_JOB_KIND]: nodeCertRetireHandler(ctx),
    },
    options,
  );
}
