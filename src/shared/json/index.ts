export { canonicalJson } from "./canonical.js";
export { jsonNestingDepth, parseJson } from "./parse.js";
