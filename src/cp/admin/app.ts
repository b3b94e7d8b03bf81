/**
 * The admin API (/admin/v1, port 9090). Routes translate HTTP into service calls; middleware
 * owns request ids, access logs, the setup gate, authentication, roles and auditing; one error
 * handler owns every error body.
 */
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ADMIN_MAX_BODY_BYTES, MAX_CLOUD_FUNCTION_SCRIPT_BYTES } from "../../shared/config/defaults.js";
import { AuthNexusError } from "../../shared/errors/index.js";
import { newId } from "../../shared/ids.js";
import { PROMETHEUS_CONTENT_TYPE } from "../../shared/metrics/index.js";
import { MAX_CONFIG_CONTENT_BYTES } from "../../shared/node-protocol/index.js";
import { errorToResponse } from "../http/error-response.js";
import type { CpMetrics } from "../metrics.js";
import type { CpContext } from "../services/context.js";
import type { AdminEnv } from "./env.js";
import { requestContext, setupGate } from "./middleware.js";
import { agentLogRoutes } from "./routes/agent-logs.js";
import { agentRoutes } from "./routes/agents.js";
import { applicationRoutes } from "./routes/applications.js";
import { auditRoutes } from "./routes/audit-logs.js";
import { authRoutes } from "./routes/auth.js";
import { businessRoutes } from "./routes/business.js";
import { caRotationRoutes } from "./routes/ca-rotations.js";
import { clientCertRoutes } from "./routes/client-certs.js";
import { cloudFunctionRoutes } from "./routes/cloud-functions.js";
import { commandRoutes } from "./routes/commands.js";
import { configRoutes } from "./routes/configs.js";
import { nodeRoutes } from "./routes/nodes.js";
import { pkiRoutes } from "./routes/pki.js";
import { pkiJobRoutes } from "./routes/pki-jobs.js";
import { reportRoutes } from "./routes/reports.js";
import { securityRoutes } from "./routes/security.js";
import { setupRoutes } from "./routes/setup.js";

export interface AdminAppOptions {
  /** May consult the database while setup is pending (another CP process may complete it). */
  isSetupComplete: () => boolean | Promise<boolean>;
  onSetupComplete: () => Promise<void>;
  /**
   * Counts every answer and serves GET /metrics (Prometheus text format) without a token, ahead
   * of the setup gate and the access log: scrapers cannot log in, and the listener binds
   * 127.0.0.1 by default (docs/operations.md, "Metrics").
   */
  metrics?: CpMetrics;
}

export function createAdminApp(ctx: CpContext, options: AdminAppOptions): Hono<AdminEnv> {
  const log = ctx.log.category("Admin");
  const app = new Hono<AdminEnv>();
  app.onError((error, c) => errorToResponse(c, error, log));
  app.notFound(() => {
    throw new AuthNexusError("ROUTE_NOT_FOUND");
  });
  const { metrics } = options;
  if (metrics) {
    app.use(metrics.middleware("admin"));
    app.get("/metrics", async (c) => c.body(await metrics.registry.exposition(), 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE }));
  }
  app.use(requestContext(log, () => newId("req")));
  app.use(adminBodyLimit());
  app.use(setupGate(options.isSetupComplete));

  const v1 = new Hono<AdminEnv>();
  v1.route("/setup", setupRoutes(ctx, { onSetupComplete: options.onSetupComplete }));
  v1.route("/auth", authRoutes(ctx));
  v1.route("/agents", agentRoutes(ctx));
  v1.route("/applications", applicationRoutes(ctx));
  v1.route("/applications", businessRoutes(ctx));
  v1.route("/applications", clientCertRoutes(ctx));
  v1.route("/applications", cloudFunctionRoutes(ctx));
  v1.route("/pki", pkiRoutes(ctx));
  v1.route("/security", securityRoutes(ctx));
  v1.route("/pki/jobs", pkiJobRoutes(ctx));
  v1.route("/pki/ca-rotations", caRotationRoutes(ctx));
  v1.route("/nodes", nodeRoutes(ctx));
  v1.route("/", agentLogRoutes(ctx));
  v1.route("/", auditRoutes(ctx));
  v1.route("/", configRoutes(ctx));
  v1.route("/", commandRoutes(ctx));
  v1.route("/", reportRoutes(ctx));
  app.route("/admin/v1", v1);
  return app;
}

/** Config content (trust bundles, cloud variables) may be far larger than any other admin body. */
const CONFIG_PUT_PATH = /^\/admin\/v1\/(applications\/[^/]+\/)?configs\/[^/]+$/;
const ADMIN_MAX_CONFIG_BODY_BYTES = MAX_CONFIG_CONTENT_BYTES + 16 * 1024;
/**
 * A cloud function's script travels as a JSON string: sized for the largest script even when
 * every byte needs a six-byte escape, so the script limit (checked by the service, answered as
 * 400 naming the field) is the one a vendor meets.
 */
const CLOUD_FUNCTION_SAVE_PATH = /^\/admin\/v1\/applications\/[^/]+\/cloud-functions(\/[^/]+)?$/;
const ADMIN_MAX_CLOUD_FUNCTION_BODY_BYTES = 6 * MAX_CLOUD_FUNCTION_SCRIPT_BYTES + 16 * 1024;

function adminBodyLimit(): MiddlewareHandler<AdminEnv> {
  const limit = (maxSize: number) =>
    bodyLimit({
      maxSize,
      onError: () => {
        throw new AuthNexusError("BODY_TOO_LARGE", { message: `Request body is larger than ${maxSize} bytes.` });
      },
    });
  const standard = limit(ADMIN_MAX_BODY_BYTES);
  const configs = limit(ADMIN_MAX_CONFIG_BODY_BYTES);
  const cloudFunctions = limit(ADMIN_MAX_CLOUD_FUNCTION_BODY_BYTES);
  return function adminBodyLimitStep(c, next) {
    const { method, path } = c.req;
    if (method === "PUT" && CONFIG_PUT_PATH.test(path)) return configs(c, next);
    if ((method === "POST" || method === "PATCH") && CLOUD_FUNCTION_SAVE_PATH.test(path)) return cloudFunctions(c, next);
    return standard(c, next);
  };
}
