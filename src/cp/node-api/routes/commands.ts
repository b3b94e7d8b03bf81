/**
 * Channel 1 commands, node side: `POST /:id/commands/pull?since=N` (a page of commands after
 * seq N; the body, if any, must be `{}`) and `POST /:id/commands/:cmd_id/result`.
 */
import { Hono } from "hono";
import { z } from "zod";
import { commandResultRequest } from "../../../shared/node-protocol/index.js";
import { readJson } from "../../http/json-body.js";
import { parseSince, pullCommands, recordCommandResult } from "../../services/commands/node-channel.js";
import type { CpContext } from "../../services/context.js";
import type { NodeApiEnv } from "../env.js";

const pullBody = z.strictObject({});

export function nodeCommandRoutes(ctx: CpContext): Hono<NodeApiEnv> {
  const routes = new Hono<NodeApiEnv>();
  routes.post("/:id/commands/pull", async (c) => {
    const since = parseSince(c.req.query("since"));
    await readJson(c, pullBody);
    return c.json(await pullCommands(ctx, c.get("node"), since));
  });
  routes.post("/:id/commands/:cmd_id/result", async (c) => {
    const result = await readJson(c, commandResultRequest);
    return c.json(await recordCommandResult(ctx, c.get("node"), c.req.param("cmd_id") ?? "", result));
  });
  return routes;
}
