/**
 * Where a V8 CPU profile's time went, as text: the functions with the most self time, and the
 * inclusive ("total") time of the functions whose names match a filter — for the business-port
 * benchmarks' profiles (BENCH_CPU_PROF=<dir>) or any `node --cpu-prof` output. Shares are of
 * all samples except (idle); a function's total counts each sample once even when it recurses.
 *
 * Usage: node --import tsx test/bench/support/cpuprofile-summary.ts <file.cpuprofile> [top=25] [total-filter regexp]
 */
import { readFileSync } from "node:fs";
import { relative } from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [file, topArg, filterArg] = process.argv.slice(2);
if (!file) throw new Error("usage: cpuprofile-summary.ts <file.cpuprofile> [top] [filter]");
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const top = Number(topArg ?? 25);
const filter = filterArg ? new RegExp(filterArg) : null;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const label = (n: ProfileNode) => {
  const { functionName, url, lineNumber } = n.callFrame;
  const where = url ? `${relative(process.cwd(), url.replace(/^file:\/\//, ""))}:${lineNumber + 1}` : "";
  return `${functionName || "(anonymous)"}${where ? ` ${where}` : ""}`;
};

const self = new Map<string, number>();
const total = new Map<string, number>();
let busy = 0;
let idle = 0;
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i] ?? 0;
  const node = byId.get(id);
  if (!node) return;
  if (node.callFrame.functionName === "(idle)") {
    idle += dt;
    return;
  }
  busy += dt;
  const name = label(node);
  self.set(name, (self.get(name) ?? 0) + dt);
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const frame = byId.get(at);
    if (!frame) break;
    const key = label(frame);
    if (seen.has(key)) continue;
    seen.add(key);
    total.set(key, (total.get(key) ?? 0) + dt);
  }
});

const pct = (v: number) => `${((100 * v) / busy).toFixed(1).padStart(5)}%`;
console.log(`${file}: busy ${(busy / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms`);
console.log(`top ${top} by self time:`);
for (const [name, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(v)}  ${name}`);
if (filter) {
  console.log(`total (inclusive) time of frames matching /${filter.source}/:`);
  for (const [name, v] of [...total]
    .filter(([name]) => filter.test(name))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top * 2))
    console.log(`  ${pct(v)}  ${name}`);
}
