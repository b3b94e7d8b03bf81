/**
 * The admin API (/admin/v1, port 9090). Routes translate HTTP into service calls; middleware
 * owns request ids, access logs, the setup gate, authentication, roles and auditing; one error
 * handler owns every error body.
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ADMIN_MAX_BODY_BYTES } from "../../shared/config/defaults.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import { newId } from "../../shared/ids.js";
import { errorToResponse } from "../http/error-response.js";
import type { CpContext } from "../services/context.js";
import type { AdminEnv } from "./env.js";
import { requestContext, setupGate } from "./middleware.js";
import { agentLogRoutes } from "./routes/agent-logs.js";
import { agentRoutes } from "./routes/agents.js";
import { applicationRoutes } from "./routes/applications.js";
import { authRoutes } from "./routes/auth.js";
import { pkiRoutes } from "./routes/pki.js";
import { setupRoutes } from "./routes/setup.js";

export interface AdminAppOptions {
  /** May consult the database while setup is pending (another CP process may complete it). */
  isSetupComplete: () => boolean | Promise<boolean>;
  onSetupComplete: () => Promise<void>;
}

export function createAdminApp(ctx: CpContext, options: AdminAppOptions): Hono<AdminEnv> {
  const log = ctx.log.category("Admin");
  const app = new Hono<AdminEnv>();
  app.onError((error, c) => errorToResponse(c, error, log));
  app.notFound(() => {
    throw new AuthNexusError("ROUTE_NOT_FOUND");
  });
  app.use(requestContext(log, () => newId("req")));
  app.use(
    bodyLimit({
      maxSize: ADMIN_MAX_BODY_BYTES,
      onError: () => {
        throw new AuthNexusError("BODY_TOO_LARGE", { message: `Request body is larger than ${ADMIN_MAX_BODY_BYTES} bytes.` });
      },
    }),
  );
  app.use(setupGate(options.isSetupComplete));

  const v1 = new Hono<AdminEnv>();
  v1.route("/setup", setupRoutes(ctx, { onSetupComplete: options.onSetupComplete }));
  v1.route("/auth", authRoutes(ctx));
  v1.route("/agents", agentRoutes(ctx));
  v1.route("/applications", applicationRoutes(ctx));
  v1.route("/pki", pkiRoutes(ctx));
  v1.route("/", agentLogRoutes(ctx));
  app.route("/admin/v1", v1);
  return app;
}
