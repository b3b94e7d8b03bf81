import type { HttpBindings } from "@hono/node-server";
import type { CallingNode } from "../services/nodes/identity.js";

/** Hono environment of the node API: the node is set by the identity middleware. */
export interface NodeApiEnv {
  Bindings: Partial<HttpBindings>;
  Variables: { requestId: string; node: CallingNode };
}
