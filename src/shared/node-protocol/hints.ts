/**
 * Channel 2: the SSE hint events. Hints carry no payload — each one only tells the node which
 * pull to run next; the data itself is always pulled. `ocsp.refresh` asks for a Channel 4
 * fetch: the node's OCSP status changed (disabled or enabled), so its staple is out of date.
 */
export const HINT_EVENTS = ["command.pending", "config.pending", "blacklist.changed", "epoch.bumped", "ocsp.refresh"] as const;
export type HintEvent = (typeof HINT_EVENTS)[number];

/** Keep-alive frame name; the node treats a silent stream as dead after PING_INTERVAL_MS × 2.5. */
export const PING_EVENT = "ping";
/**
 * The last frame of a stream the CP evicted because another connection presented the same node
 * identity. The node then waits as after a refusal before it reconnects, and says that another
 * instance holds its stream: two processes running one node's package would otherwise evict
 * each other in a tight loop.
 */
export const EVICTED_EVENT = "stream.evicted";

/** Frames a stream carries besides hints. */
export type ControlEvent = typeof PING_EVENT | typeof EVICTED_EVENT;
export const SSE_PING_INTERVAL_MS = 30_000;
/** A stream with no frame (ping or hint) for this long is considered dead by the node. */
export const SSE_SILENCE_TIMEOUT_MS = 75_000;

export function isHintEvent(value: string): value is HintEvent {
  return (HINT_EVENTS as readonly string[]).includes(value);
}

/** The SSE frame for one event: a name and an empty data line (no payload by design). */
export function sseFrame(event: HintEvent | ControlEvent): string {
  return `event: ${event}\ndata:\n\n`;
}
