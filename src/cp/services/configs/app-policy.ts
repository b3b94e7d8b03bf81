/**
 * The app_policy an application's nodes run, read on the CP side: the latest stored version,
 * parsed by the current schema (so fields added since it was stored take their defaults, as on
 * a node), or the defaults while the application has none.
 */
import { type AppPolicy, appScope, DEFAULT_APP_POLICY, parseConfigContent } from "../../../shared/node-protocol/index.js";
import type { CpContext } from "../context.js";
import { latestVersionRow } from "./items.js";

export async function currentAppPolicy(ctx: Pick<CpContext, "controlDb" | "log">, appId: string): Promise<AppPolicy> {
  const row = await latestVersionRow(ctx.controlDb, { type: "app_policy", scope: appScope(appId) });
  if (!row) return DEFAULT_APP_POLICY;
  const parsed = parseConfigContent("app_policy", JSON.parse(row.content));
  if (parsed.ok) return parsed.value;
  // Stored content was valid when written and the schema only gains defaulted fields; should it
  // ever fail, nodes refuse it too and keep running what they had, which the defaults stand for.
  ctx.log.category("CP Agent").warn("app_policy.unreadable", { app_id: appId, version: row.version, reason: parsed.reason });
  return DEFAULT_APP_POLICY;
}
