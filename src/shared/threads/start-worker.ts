/**
 * Starts a worker thread from a module beside its caller, compiled (.js, the built program) or
 * not (.ts, the test runner). Node 20 does not apply the parent's `--import` loader to a
 * worker's entry module, so a .ts entry is loaded through a small bootstrap that registers the
 * TypeScript loader in the worker first.
 */
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker, type WorkerOptions } from "node:worker_threads";

/** `name` (without extension) in the folder of `callerUrl` (the caller's import.meta.url), with the caller's extension. */
export function siblingModule(callerUrl: string, name: string): URL {
  const caller = fileURLToPath(callerUrl);
  return pathToFileURL(path.join(path.dirname(caller), `${name}${path.extname(caller)}`));
}

export function startWorker(entry: URL, options: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith(".ts")) return new Worker(entry, options);
  const loader = import.meta.resolve("tsx/esm/api");
  const bootstrap = `import(${JSON.stringify(loader)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(bootstrap, { ...options, eval: true });
}
