/**
 * The in-process event bus behind Channel 2. Services publish a hint when the data behind it
 * changes (after their transaction commits); the SSE hub subscribes per node. Hints are not
 * data: a node that misses one still catches up through its periodic pulls, so delivery here is
 * best-effort and synchronous, and a throwing subscriber never affects the publisher.
 *
 * One process only: with several CP processes sharing a Control DB, nodes connected to another
 * process see the change on their next poll (5 s / 30 s healthy) instead of at once.
 */
import type { HintEvent } from "../../shared/node-protocol/index.js";

/** A hint for one node, or for every node (`nodeId: null`). */
export interface HintMessage {
  event: HintEvent;
  nodeId: string | null;
}

/** Lifecycle notices the SSE hub acts on: a deleted node, or one whose client certificate was revoked, loses its stream. */
export interface NodeNotice {
  kind: "node.deleted" | "node.credentials_changed";
  nodeId: string;
}

export type HintListener = (message: HintMessage) => void;
export type NoticeListener = (notice: NodeNotice) => void;

export interface EventBus {
  publish(event: HintEvent, nodeId?: string | null): void;
  notice(notice: NodeNotice): void;
  /** A PKI job became due (created or retried): the job worker looks at once instead of at its next poll. */
  jobQueued(): void;
  onHint(listener: HintListener): () => void;
  onNotice(listener: NoticeListener): () => void;
  onJobQueued(listener: () => void): () => void;
  /** The CP's node API TLS identity changed in the Control DB (its certificate, or the CAs it trusts): reload it. */
  tlsIdentityChanged(): void;
  onTlsIdentityChanged(listener: () => void): () => void;
}

export function createEventBus(onListenerError: (error: unknown) => void = () => {}): EventBus {
  const hintListeners = new Set<HintListener>();
  const noticeListeners = new Set<NoticeListener>();
  const jobListeners = new Set<() => void>();
  const tlsListeners = new Set<() => void>();
  const deliver = <T>(listeners: Set<(value: T) => void>, value: T) => {
    for (const listener of listeners) {
      try {
        listener(value);
      } catch (error) {
        onListenerError(error);
      }
    }
  };
  return {
    publish: (event, nodeId = null) => deliver(hintListeners, { event, nodeId }),
    notice: (notice) => deliver(noticeListeners, notice),
    jobQueued: () => deliver(jobListeners, undefined),
    tlsIdentityChanged: () => deliver(tlsListeners, undefined),
    onTlsIdentityChanged(listener) {
      tlsListeners.add(listener);
      return () => tlsListeners.delete(listener);
    },
    onHint(listener) {
      hintListeners.add(listener);
      return () => hintListeners.delete(listener);
    },
    onNotice(listener) {
      noticeListeners.add(listener);
      return () => noticeListeners.delete(listener);
    },
    onJobQueued(listener) {
      jobListeners.add(listener);
      return () => jobListeners.delete(listener);
    },
  };
}
