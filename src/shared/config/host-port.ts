/** A listen address: "HOST:PORT", "[v6]:PORT" or ":PORT" (all interfaces). Port 0 picks a free port. */
export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(value: string, flag: string, problems: string[]): HostPort {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value.trim());
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || port > 65535) {
    problems.push(`${flag} must be HOST:PORT with a port from 0 to 65535, got "${value}"`);
    return { host: "127.0.0.1", port: 0 };
  }
  return { host: match[1] ?? (match[2] || "0.0.0.0"), port };
}

export function formatHostPort(address: HostPort): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}
