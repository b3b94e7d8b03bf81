import { Hono } from "hono";
import { z } from "zod";
import { CA_PROFILES } from "../../../shared/pki/index.js";
import { readJson } from "../../http/json-body.js";
import type { CpContext } from "../../services/context.js";
import { getSetupStatus, initializeSetup } from "../../services/setup/setup.js";
import type { AdminEnv } from "../env.js";
import { displayName, hostName, opaqueToken, password, username } from "../schemas.js";

const initializeBody = z.strictObject({
  console_token: opaqueToken,
  admin_username: username,
  admin_password: password,
  // CA names default to "<organisation> CP Node Client CA": keep them inside X.509's 64.
  organisation_name: displayName(40).optional(),
  ca_common_names: z.strictObject(Object.fromEntries(CA_PROFILES.map((p) => [p, displayName(64).optional()]))).optional(),
  cp_public_hosts: z.array(hostName).max(32).optional(),
});

export interface SetupRouteHooks {
  /** Called once setup has committed: starts the node and OCSP listeners. */
  onSetupComplete: () => Promise<void>;
}

export function setupRoutes(ctx: CpContext, hooks: SetupRouteHooks): Hono<AdminEnv> {
  const routes = new Hono<AdminEnv>();
  routes.get("/status", async (c) => c.json(await getSetupStatus(ctx)));
  routes.post("/initialize", async (c) => {
    const body = await readJson(c, initializeBody);
    const log = ctx.log.category("Setup");
    const result = await initializeSetup(
      { ...ctx, log },
      {
        consoleToken: body.console_token,
        adminUsername: body.admin_username,
        adminPassword: body.admin_password,
        organisationName: body.organisation_name,
        caCommonNames: body.ca_common_names as Partial<Record<(typeof CA_PROFILES)[number], string>> | undefined,
        cpPublicHosts: body.cp_public_hosts,
      },
      c.get("remoteIp"),
      c.get("requestId"),
    );
    await hooks.onSetupComplete();
    return c.json({ requires_setup: false, root_agent: result.agent, ca_fingerprints: result.ca_fingerprints }, 201);
  });
  return routes;
}
