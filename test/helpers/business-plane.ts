/**
 * A business plane with nobody connected, over a node state of its own: what agent and command
 * tests hand the CP agent when the business listener is not part of the test.
 */
import type { Kysely } from "kysely";
import { createNodeState, type NodeState } from "../../src/node/agent/agent.js";
import { ConnectionRegistry, LiveBusinessPlane } from "../../src/node/business/index.js";
import type { RuntimeSchema } from "../../src/shared/db/index.js";
import { createLogger } from "../../src/shared/log/index.js";
import type { Clock } from "../../src/shared/time/index.js";

export function idleBusinessPlane(
  db: Kysely<RuntimeSchema>,
  clock: Clock,
  state: NodeState = createNodeState(),
): { plane: LiveBusinessPlane; state: NodeState } {
  const log = createLogger({ category: "Server", level: "error", format: "json", sink: () => {} });
  const plane = new LiveBusinessPlane({
    registry: new ConnectionRegistry(),
    db,
    clock,
    log,
    store: state.store,
    blacklist: state.blacklist,
    epochs: state.epochs,
  });
  return { plane, state };
}
