/**
 * The node API's paths (port 9091, mTLS). Both the CP routes and the node's client build paths
 * from here, so the two cannot drift.
 */
export const CP_API_PREFIX = "/cp/v2";

export const nodePaths = {
  checkin: (nodeId: string) => `${CP_API_PREFIX}/nodes/${nodeId}/checkin`,
  commandsPull: (nodeId: string, since: number) => `${CP_API_PREFIX}/nodes/${nodeId}/commands/pull?since=${since}`,
  commandResult: (nodeId: string, commandId: string) => `${CP_API_PREFIX}/nodes/${nodeId}/commands/${commandId}/result`,
  configsPull: (nodeId: string) => `${CP_API_PREFIX}/nodes/${nodeId}/configs/pull`,
  configsAcks: (nodeId: string) => `${CP_API_PREFIX}/nodes/${nodeId}/configs/acks`,
  configsErrors: (nodeId: string) => `${CP_API_PREFIX}/nodes/${nodeId}/configs/errors`,
  credentialsAck: (nodeId: string, rotationId: string) => `${CP_API_PREFIX}/nodes/${nodeId}/credentials/${rotationId}/ack`,
  events: (nodeId: string) => `${CP_API_PREFIX}/nodes/${nodeId}/events`,
  delta: (nodeId: string, stream: DeltaStream, since: number, limit?: number) =>
    `${CP_API_PREFIX}/nodes/${nodeId}/deltas/${stream}?since=${since}${limit === undefined ? "" : `&limit=${limit}`}`,
  cloudFunction: (name: string, appId: string) =>
    `${CP_API_PREFIX}/objects/cloud-functions/${encodeURIComponent(name)}?app_id=${encodeURIComponent(appId)}`,
} as const;

/** Channel 3's two change logs, named as the node's cursors and the delta path segment. */
export const DELTA_STREAMS = ["auth-epochs", "blacklist"] as const;
export type DeltaStream = (typeof DELTA_STREAMS)[number];
