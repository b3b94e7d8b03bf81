import type { Context } from "hono";
import { AuthNexusError } from "../../../shared/errors/index.js";
import { ID_PATTERN } from "../schemas.js";

/** A path id that cannot be one of ours is a 404 without touching the database. */
export function idParam(c: Context, name = "id"): string {
  const value = c.req.param(name);
  if (!value || !ID_PATTERN.test(value)) throw new AuthNexusError("NOT_FOUND");
  return value;
}
