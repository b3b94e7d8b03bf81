/**
 * AuthNexus's version, as `authnexus --version` prints it and nodes report it in checkins:
 * package.json's, found by walking up from this file (the depth differs between src/ under tsx
 * and dist/src/ when built). Read once per process.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

export function softwareVersion(): string {
  cached ??= readPackageVersion();
  return cached;
}

function readPackageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 6; depth++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "authnexus" && typeof pkg.version === "string") return pkg.version;
    } catch {
      // not here; keep walking up
    }
    dir = path.dirname(dir);
  }
  return "unknown";
}
