/**
 * The CP's side of the audit hash chains: its writes to the Control DB trails are chained under
 * a key derived from the master key, its writes to the Runtime DB trails (the user audit log)
 * under the key every node derives from the deployment's password-hash key, so the CP verifies
 * the chains nodes write too. Chain ids start with the CP's instance id.
 */
import { deriveAuditKey } from "../../../shared/audit/chain-hash.js";
import { configureAuditChains } from "../../../shared/db/audit-chains.js";
import type { CpContext } from "../context.js";
import { loadPasswordHashKey } from "../setup/setup.js";

/** The Control DB's chain key. */
export function controlAuditKey(ctx: Pick<CpContext, "masterKey">): Buffer {
  return deriveAuditKey(ctx.masterKey, "control");
}

/** The Runtime DB's chain key (needs setup to have created the password-hash secret). */
export async function runtimeAuditKey(ctx: Pick<CpContext, "controlDb" | "masterKey">): Promise<Buffer> {
  return deriveAuditKey(await loadPasswordHashKey(ctx), "runtime");
}

/** Turns chaining on for every trail this CP process writes. */
export function startAuditChains(ctx: CpContext): void {
  configureAuditChains(ctx.controlDb, { writerId: ctx.instanceId, key: controlAuditKey(ctx) });
  configureAuditChains(ctx.runtimeDb, { writerId: ctx.instanceId, key: () => runtimeAuditKey(ctx) });
}
