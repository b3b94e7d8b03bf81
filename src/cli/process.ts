import type { Logger } from "../shared/log/index.js";

/** Keeps a server running until SIGINT/SIGTERM, then stops it once and exits 0. */
export function runUntilSignal(log: Logger, stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      log.info("shutdown.started", { signal });
      stop()
        .then(() => log.info("shutdown.completed"))
        .catch((error: Error) => {
          log.error("shutdown.failed", { error: error.message });
          process.exitCode = 1;
        })
        .finally(resolve);
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
  });
}
