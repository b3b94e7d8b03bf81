/**
 * Who is calling the node API. The TLS layer has already checked the chain to
 * cp_node_client_ca; this decides whether the certificate still speaks for the node it names:
 * the node must exist, the certificate must be the node's current client certificate (or the
 * previous one during a rotation, until the rotation's grace period after the node's ack ends)
 * and must not be revoked. Refusals are recorded (hash-chained) in
 * node_auth_events and logged under [Security]. One precompiled query per request, no caching, so a
 * revocation or a deletion takes effect on the very next call.
 */

import type { Kysely } from "kysely";
import { type ControlSchema, precompiled } from "../../../shared/db/index.js";
import { AuthNexusError, type ErrorCode } from "../../../shared/errors/index.js";
import { writeNodeAuthEvent } from "../audit/node-audit.js";
import type { CpContext } from "../context.js";

export interface PeerCertificate {
  /** Node id from the certificate's `urn:authnexus:node:<nid>` URI SAN (null when absent). */
  nodeId: string | null;
  serialHex: string;
  ip: string | null;
}

export interface CallingNode {
  id: string;
  /** "provisioning" | "active" | "disabled": disabled nodes keep their management channels. */
  status: string;
  certificateId: string;
  createdAt: number;
  /** A rotation whose new credentials wait for this node (null: none). */
  pendingRotationId: string | null;
}

export async function authenticateNode(ctx: CpContext, peer: PeerCertificate, pathNodeId: string | null): Promise<CallingNode> {
  if (peer.nodeId === null) return refuse(ctx, peer, pathNodeId, "NODE_CERT_NOT_RECOGNISED", "no node identity in the certificate");
  if (pathNodeId !== null && pathNodeId !== peer.nodeId)
    return refuse(ctx, peer, pathNodeId, "NODE_IDENTITY_MISMATCH", "path names another node");
  const row = (await identityQuery(ctx.controlDb, { nodeId: peer.nodeId, serialHex: peer.serialHex })).rows[0];
  if (!row) return refuse(ctx, peer, pathNodeId, "NODE_UNKNOWN", "node does not exist (deleted?)");
  // Checked before "current or previous": a node that missed more than one reissue still holds a
  // certificate of its own that was revoked, and must be told so (its remedy is a new package).
  if (row.cert_status === "revoked" && row.cert_owner_id === row.id)
    return refuse(ctx, peer, pathNodeId, "NODE_CERT_REVOKED", "certificate revoked");
  if (!row.cert_id || (row.cert_id !== row.client_cert_id && row.cert_id !== row.previous_client_cert_id)) {
    return refuse(
      ctx,
      peer,
      pathNodeId,
      "NODE_CERT_NOT_RECOGNISED",
      "certificate is not the node's current or previous client certificate",
    );
  }
  if (row.cert_status === "revoked") return refuse(ctx, peer, pathNodeId, "NODE_CERT_REVOKED", "certificate revoked");
  if (
    row.cert_id === row.previous_client_cert_id &&
    row.previous_client_cert_retire_at !== null &&
    row.previous_client_cert_retire_at <= ctx.clock.now()
  ) {
    return refuse(ctx, peer, pathNodeId, "NODE_CERT_REVOKED", "certificate retired: the node rotated to a new client certificate");
  }
  if (row.not_after !== null && row.not_after < ctx.clock.now())
    return refuse(ctx, peer, pathNodeId, "NODE_CERT_NOT_RECOGNISED", "certificate expired");
  return {
    id: row.id,
    status: row.status,
    certificateId: row.cert_id,
    createdAt: row.created_at,
    pendingRotationId: row.pending_rotation_id,
  };
}

/** The node and the presented certificate, in one statement (precompiled: it runs on every node API call). */
const identityQuery = precompiled<{ nodeId: string; serialHex: string }, IdentityRow>((db: Kysely<ControlSchema>, p) =>
  db
    .selectFrom("nodes as n")
    .leftJoin("certificates as c", (join) => join.on("c.serial_hex", "=", p.serialHex).on("c.ca_profile", "=", "cp_node_client_ca"))
    .select([
      "n.id",
      "n.status",
      "n.created_at",
      "n.client_cert_id",
      "n.previous_client_cert_id",
      "n.previous_client_cert_retire_at",
      "n.pending_rotation_id",
      "c.id as cert_id",
      "c.status as cert_status",
      "c.owner_id as cert_owner_id",
      "c.not_after",
    ])
    .where("n.id", "=", p.nodeId),
);

interface IdentityRow {
  id: string;
  status: string;
  created_at: number;
  client_cert_id: string | null;
  previous_client_cert_id: string | null;
  previous_client_cert_retire_at: number | null;
  pending_rotation_id: string | null;
  cert_id: string | null;
  cert_status: string | null;
  cert_owner_id: string | null;
  not_after: number | null;
}

async function refuse(ctx: CpContext, peer: PeerCertificate, pathNodeId: string | null, code: ErrorCode, why: string): Promise<never> {
  const fields = { code, why, cert_node_id: peer.nodeId, path_node_id: pathNodeId, cert_serial: peer.serialHex, ip: peer.ip };
  ctx.log.category("Security").warn("node.auth_refused", fields);
  await writeNodeAuthEvent(ctx.controlDb, ctx.clock, {
    nodeId: peer.nodeId,
    event: code.toLowerCase(),
    peer: peer.ip,
    certSerial: peer.serialHex,
    detail: { why, path_node_id: pathNodeId },
  }).catch((error: unknown) => ctx.log.category("Security").error("node.auth_event_write_failed", { error: (error as Error).message }));
  throw new AuthNexusError(code);
}
