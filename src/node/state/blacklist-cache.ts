/**
 * The node's in-memory view of the server blacklist (Channel 3), indexed for the hot path:
 * kind → value → entries. Several entries may name the same kind and value (added twice with
 * different reasons or expiries); the value stays blocked while any of them is live. An entry
 * whose expires_at has passed no longer blocks, even before the CP's removal reaches the node.
 */
import type { BlacklistKind } from "../../shared/node-protocol/index.js";

export interface BlacklistEntry {
  entryId: string;
  kind: BlacklistKind;
  value: string;
  reason: string | null;
  /** Epoch ms, or null for no expiry. */
  expiresAt: number | null;
  /** The change that added it. */
  changeId: number;
}

export class BlacklistCache {
  private readonly byKind = new Map<string, Map<string, Map<string, BlacklistEntry>>>();
  private readonly byId = new Map<string, BlacklistEntry>();
  private readonly addListeners = new Set<(entry: BlacklistEntry) => void>();

  /** Called for every entry added (also by replaceAll): the business plane ends the connections it now blocks. */
  onAdded(listener: (entry: BlacklistEntry) => void): () => void {
    this.addListeners.add(listener);
    return () => this.addListeners.delete(listener);
  }

  /** Adds or replaces the entry with this id. */
  add(entry: BlacklistEntry): void {
    this.insert(entry);
    for (const listener of this.addListeners) listener(entry);
  }

  private insert(entry: BlacklistEntry): void {
    this.remove(entry.entryId);
    this.byId.set(entry.entryId, entry);
    const values = this.byKind.get(entry.kind) ?? new Map<string, Map<string, BlacklistEntry>>();
    this.byKind.set(entry.kind, values);
    const entries = values.get(entry.value) ?? new Map<string, BlacklistEntry>();
    values.set(entry.value, entries);
    entries.set(entry.entryId, entry);
  }

  /** Removes the entry with this id; unknown ids are ignored (removals replay idempotently). */
  remove(entryId: string): void {
    const existing = this.byId.get(entryId);
    if (!existing) return;
    this.byId.delete(entryId);
    const values = this.byKind.get(existing.kind);
    const entries = values?.get(existing.value);
    entries?.delete(entryId);
    if (entries?.size === 0) values?.delete(existing.value);
    if (values?.size === 0) this.byKind.delete(existing.kind);
  }

  /** The live entry blocking `value` of `kind` at `now`, or null. */
  lookup(kind: BlacklistKind, value: string, now: number): BlacklistEntry | null {
    const entries = this.byKind.get(kind)?.get(value);
    if (!entries) return null;
    for (const entry of entries.values()) if (entry.expiresAt === null || entry.expiresAt > now) return entry;
    return null;
  }

  isBlocked(kind: BlacklistKind, value: string, now: number): boolean {
    return this.lookup(kind, value, now) !== null;
  }

  /** Replaces the whole content (after a rebuild from the Runtime DB). */
  replaceAll(entries: Iterable<BlacklistEntry>): void {
    this.byKind.clear();
    this.byId.clear();
    const added = [...entries];
    for (const entry of added) this.insert(entry);
    for (const entry of added) for (const listener of this.addListeners) listener(entry);
  }

  /** Drops entries that expired at or before `now`; returns how many. */
  pruneExpired(now: number): number {
    let pruned = 0;
    for (const entry of [...this.byId.values()]) {
      if (entry.expiresAt !== null && entry.expiresAt <= now) {
        this.remove(entry.entryId);
        pruned += 1;
      }
    }
    return pruned;
  }

  get size(): number {
    return this.byId.size;
  }
}
