/** The CP's PKI job worker with every job kind it knows, as serve-cp starts it once setup is complete. */
import type { CpContext } from "../services/context.js";
import { NODE_ONBOARD_JOB_KIND } from "../services/nodes/lifecycle.js";
import { nodeOnboardHandler } from "./node-onboard.js";
import { createJobWorker, type JobWorker, type JobWorkerOptions } from "./worker.js";

export { nodeOnboardHandler } from "./node-onboard.js";
export * from "./worker.js";

export function createPkiJobWorker(ctx: CpContext, options: Partial<JobWorkerOptions> = {}): JobWorker {
  return createJobWorker(ctx, { [NODE_ONBOARD_JOB_KIND]: nodeOnboardHandler(ctx) }, options);
}
