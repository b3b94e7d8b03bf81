/**
 * Every timer and every reading of the wall clock in src/ goes through src/shared/time (the
 * Scheduler and the Clock), so tests can drive time instead of waiting for it. This test keeps
 * it so: outside that module no source file may call the runtime's timers or read Date.now.
 * performance.now() stays allowed: it measures durations for logs and decides nothing.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, it } from "node:test";

const ROOT = join(import.meta.dirname, "..", "..");
const TIME_MODULE = "src/shared/time/";
const FORBIDDEN: Array<[RegExp, string]> = [
  [/\bsetTimeout\s*\(/, "setTimeout"],
  [/\bsetInterval\s*\(/, "setInterval"],
  [/\bsetImmediate\s*\(/, "setImmediate"],
  [/\bDate\.now\b/, "Date.now"],
  [/\bnew Date\(\s*\)/, "new Date() (the current time)"],
  [/\bAbortSignal\.timeout\s*\(/, "AbortSignal.timeout"],
  [/\btimers\/promises\b/, "node:timers/promises"],
];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });
}

/** The code without comments, so documentation may still name what it avoids. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
}

describe("time discipline", () => {
  it("src/ outside src/shared/time uses no runtime timer and never reads the wall clock itself", () => {
    const offences: string[] = [];
    for (const file of sourceFiles(join(ROOT, "src"))) {
      const path = relative(ROOT, file).split("\\").join("/");
      if (path.startsWith(TIME_MODULE)) continue;
      const lines = code(readFileSync(file, "utf8")).split("\n");
      lines.forEach((line, index) => {
        for (const [pattern, name] of FORBIDDEN) if (pattern.test(line)) offences.push(`${path}:${index + 1}: ${name}`);
      });
    }
    assert.deepEqual(offences, [], "use the injected Scheduler / Clock (src/shared/time) instead");
  });

  it("the check itself finds each forbidden call", () => {
    const sample = "setTimeout(f, 1); setInterval(f, 1); setImmediate(f); Date.now(); new Date(); AbortSignal.timeout(5)";
    for (const [pattern, name] of FORBIDDEN.slice(0, 6)) assert.ok(pattern.test(code(sample)), name);
    assert.equal(/\bDate\.now\b/.test(code("// Date.now() in a comment\n/* setTimeout( */")), false);
  });
});
