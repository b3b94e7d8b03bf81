/**
 * Field rules shared by admin request schemas. Free text is limited to letters, digits, spaces
 * and harmless punctuation: quotes, semicolons, backslashes, angle brackets and control
 * characters have no business in names, and refusing them keeps every downstream consumer
 * (logs, shells, HTML dashboards, SQL consoles) safe by construction.
 */
import { z } from "zod";
import { AGENT_ROLES } from "../services/agents/roles.js";

const SAFE_TEXT = /^[\p{L}\p{N}\p{Zs}.,:()&+@#!?/_-]*$/u;
const SAFE_TEXT_MESSAGE = "may contain only letters, digits, spaces and . , : ( ) & + @ # ! ? / _ -";

export const safeText = (max: number) =>
  z
    .string()
    .max(max, `must be at most ${max} characters`)
    .regex(SAFE_TEXT, SAFE_TEXT_MESSAGE)
    .transform((s) => s.trim());

export const displayName = (max = 100) => safeText(max).refine((s) => s.length > 0, "must not be empty");

export const username = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$/, "must be 3-64 characters: letters, digits, . _ - (starting with a letter or digit)");

/** Passwords are never stored or interpolated, so any printable text is allowed; the policy is checked by the service. */
export const password = z.string().min(1, "must not be empty").max(1024, "must be at most 1024 characters");

export const agentRole = z.enum(AGENT_ROLES);

export const hostName = z
  .string()
  .max(253)
  .regex(
    /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$|^[0-9.]+$|^[0-9A-Fa-f:]+$/,
    "must be a DNS name or IP address",
  );

export const opaqueToken = z
  .string()
  .min(1)
  .max(512)
  .regex(/^[A-Za-z0-9_-]+$/, "is not a valid token");

/** Path parameters that name a row: ids are generated as <prefix>_<base64url>. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
