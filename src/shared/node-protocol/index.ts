/** The contract between the Control Plane and server nodes (Channels 1–4 and the deploy package). */
export * from "./agent-package.js";
export * from "./config-types.js";
export * from "./hints.js";
export * from "./messages.js";
export * from "./paths.js";
