/**
 * Agent roles and what each may do. Every admin route names the permission it needs; nothing
 * else decides access.
 */
export const AGENT_ROLES = ["root", "admin", "operator"] as const;
export type AgentRole = (typeof AGENT_ROLES)[number];

export type Permission = "read" | "write" | "manage_agents";

const GRANTS: Record<AgentRole, readonly Permission[]> = {
  root: ["read", "write", "manage_agents"],
  admin: ["read", "write"],
  operator: ["read"],
};

export function roleAllows(role: string, permission: Permission): boolean {
  return (GRANTS as Record<string, readonly Permission[] | undefined>)[role]?.includes(permission) ?? false;
}

export function isAgentRole(value: string): value is AgentRole {
  return (AGENT_ROLES as readonly string[]).includes(value);
}
