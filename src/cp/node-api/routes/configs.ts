/**
 * Channel 1 config delivery, node side: pull what is newer than what the node applied (plus the
 * cloud-function manifest), then ack what it applied or report what it rejected — three separate
 * calls so a partial failure is retried without replaying the whole sync (docs/node-api.md). Acks and
 * errors are validated as a whole batch and stored in one transaction, or not at all.
 */
import { Hono } from "hono";
import {
  configsAcksRequest,
  configsErrorsRequest,
  configsPullRequest,
  credentialsAckRequest,
} from "../../../shared/node-protocol/index.js";
import { readJson } from "../../http/json-body.js";
import { ackConfigs, pullConfigs, reportConfigErrors } from "../../services/configs/node-channel.js";
import type { CpContext } from "../../services/context.js";
import { ackCredentials, credentialsForPull } from "../../services/nodes/rotation.js";
import type { NodeApiEnv } from "../env.js";

export function nodeConfigRoutes(ctx: CpContext): Hono<NodeApiEnv> {
  const routes = new Hono<NodeApiEnv>();
  routes.post("/:id/configs/pull", async (c) => {
    const body = await readJson(c, configsPullRequest);
    const node = c.get("node");
    const [pulled, credentials] = await Promise.all([pullConfigs(ctx, node, body.applied), credentialsForPull(ctx, node)]);
    return c.json(credentials ? { ...pulled, credentials } : pulled);
  });
  // A rotation's new credentials are in force on the node (called with the new client certificate).
  routes.post("/:id/credentials/:rid/ack", async (c) => {
    const body = await readJson(c, credentialsAckRequest);
    return c.json(await ackCredentials(ctx, c.get("node"), c.req.param("rid"), body));
  });
  routes.post("/:id/configs/acks", async (c) => {
    const body = await readJson(c, configsAcksRequest);
    return c.json(await ackConfigs(ctx, c.get("node"), body.acks));
  });
  routes.post("/:id/configs/errors", async (c) => {
    const body = await readJson(c, configsErrorsRequest);
    return c.json(await reportConfigErrors(ctx, c.get("node"), body.errors));
  });
  return routes;
}
