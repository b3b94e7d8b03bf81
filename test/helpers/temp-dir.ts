import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type TempDir = {
  /** Absolute path of the new, empty directory. */
  path: string;
  /** Removes the directory and everything in it. Safe to call more than once. */
  cleanup(): Promise<void>;
};

/**
 * A fresh directory under os.tmpdir(), named `<prefix>XXXXXX` (a `-` is added to a prefix that
 * does not end in one).
 */
export async function makeTempDir(prefix: string): Promise<TempDir> {
  const safe = prefix.replace(/[^A-Za-z0-9._-]+/g, "_");
  const path = await mkdtemp(join(tmpdir(), safe.endsWith("-") ? safe : `${safe}-`));
  return {
    path,
    cleanup: () => rm(path, { recursive: true, force: true, maxRetries: 3 }),
  };
}
