/**
 * Binds an http/https server and closes it gracefully: stop accepting, let in-flight requests
 * finish, drop idle keep-alive sockets at once, and cut whatever is still open after the grace
 * period so shutdown never hangs on a stuck client.
 */
import type { Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { HostPort } from "../config/host-port.js";
import { type Scheduler, systemScheduler } from "../time/index.js";

export interface BoundListener {
  name: string;
  address: HostPort;
  close(graceMs: number): Promise<void>;
}

export async function bindListener(
  name: string,
  server: HttpServer,
  requested: HostPort,
  scheduler: Scheduler = systemScheduler,
): Promise<BoundListener> {
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error) =>
      reject(new Error(`cannot listen on ${requested.host}:${requested.port} for ${name}: ${error.message}`, { cause: error }));
    server.once("error", onError);
    server.listen(requested.port, requested.host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return {
    name,
    address: { host: bound.address, port: bound.port },
    close: (graceMs) => closeGracefully(server, graceMs, scheduler),
  };
}

function closeGracefully(server: HttpServer, graceMs: number, scheduler: Scheduler): Promise<void> {
  return new Promise((resolve) => {
    const cancelCut = scheduler.setTimer(graceMs, () => server.closeAllConnections(), { background: true });
    server.close(() => {
      cancelCut();
      resolve();
    });
    server.closeIdleConnections();
  });
}
