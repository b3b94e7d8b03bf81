/**
 * The five ports of a development deployment, all on 127.0.0.1: their flags, defaults (those of
 * serve-cp and serve-node) and what each serves, a check that they are free before anything
 * starts, and the one-line error that names a taken port and the flag that moves it.
 */
import net from "node:net";
import { DEFAULT_ADMIN_LISTEN, DEFAULT_CP_PORT, DEFAULT_HEALTH_LISTEN, DEFAULT_OCSP_PORT } from "../../shared/config/defaults.js";
import { parseHostPort } from "../../shared/config/host-port.js";
import { DevError } from "./errors.js";

/** Every listener of a development deployment binds here: nothing is reachable from another host. */
export const DEV_HOST = "127.0.0.1";
/** The node's business port when --business-port is not given (the product's SDK port). */
export const DEV_BUSINESS_PORT = 8443;

export type DevPortName = "admin" | "cp" | "ocsp" | "business" | "health";
export type DevPorts = Record<DevPortName, number>;

export interface DevPortSpec {
  name: DevPortName;
  flag: string;
  what: string;
  defaultPort: number;
}

const portOf = (listen: string) => parseHostPort(listen, "default", []).port;

export const DEV_PORT_SPECS: readonly DevPortSpec[] = [
  { name: "admin", flag: "admin-port", what: "admin API", defaultPort: portOf(DEFAULT_ADMIN_LISTEN) },
  { name: "cp", flag: "cp-port", what: "node API", defaultPort: DEFAULT_CP_PORT },
  { name: "ocsp", flag: "ocsp-port", what: "OCSP responder", defaultPort: DEFAULT_OCSP_PORT },
  { name: "business", flag: "business-port", what: "node business port", defaultPort: DEV_BUSINESS_PORT },
  { name: "health", flag: "health-port", what: "node health endpoint", defaultPort: portOf(DEFAULT_HEALTH_LISTEN) },
];

export function portSpec(name: DevPortName): DevPortSpec {
  const spec = DEV_PORT_SPECS.find((s) => s.name === name);
  if (!spec) throw new TypeError(`unknown dev port ${name}`);
  return spec;
}

/** Flag values → ports; problems (not a port, the same port twice) are added to `problems`. */
export function resolvePorts(values: Partial<Record<DevPortName, string>>, problems: string[]): DevPorts {
  const ports = {} as DevPorts;
  for (const spec of DEV_PORT_SPECS) {
    const raw = values[spec.name];
    if (raw === undefined) {
      ports[spec.name] = spec.defaultPort;
      continue;
    }
    if (!/^\d{1,5}$/.test(raw) || Number(raw) > 65535) {
      problems.push(`--${spec.flag} must be a port from 0 to 65535 (0: any free port), got "${raw}"`);
      ports[spec.name] = 0;
      continue;
    }
    ports[spec.name] = Number(raw);
  }
  const seen = new Map<number, DevPortSpec>();
  for (const spec of DEV_PORT_SPECS) {
    const port = ports[spec.name];
    if (port === 0) continue;
    const first = seen.get(port);
    if (first) problems.push(`--${first.flag} and --${spec.flag} are both ${port}: every listener needs its own port`);
    else seen.set(port, spec);
  }
  return ports;
}

/** The error for a port that could not be bound: one line naming the port and the flag that moves it. */
export function listenError(name: DevPortName, port: number, reason: string | undefined): DevError {
  const spec = portSpec(name);
  if (reason?.includes("EADDRINUSE")) {
    return new DevError(
      `port ${port} on ${DEV_HOST} is already in use (${spec.what}): choose another with --${spec.flag} <port>, or 0 for a free one`,
    );
  }
  if (reason?.includes("EACCES")) {
    return new DevError(`not allowed to listen on port ${port} on ${DEV_HOST} (${spec.what}): choose another with --${spec.flag} <port>`);
  }
  return new DevError(`cannot listen on ${DEV_HOST}:${port} (${spec.what}, --${spec.flag}): ${reason ?? "unknown error"}`);
}

/**
 * Binds and releases each fixed port in turn, so a taken one is reported before anything has
 * started. Only a first line of defence: the real binds map their failures the same way.
 */
export async function assertPortsFree(ports: DevPorts): Promise<void> {
  for (const spec of DEV_PORT_SPECS) {
    const port = ports[spec.name];
    if (port === 0) continue;
    const failure = await tryBind(port);
    if (failure) throw listenError(spec.name, port, failure);
  }
}

function tryBind(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", (error: NodeJS.ErrnoException) => resolve(`${error.code ?? ""} ${error.message}`));
    server.listen({ port, host: DEV_HOST, exclusive: true }, () => server.close(() => resolve(null)));
  });
}
