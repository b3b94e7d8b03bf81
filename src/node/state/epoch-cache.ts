/**
 * Per-user auth epochs (Channel 3) in memory: a session or token minted under an older epoch is
 * no longer valid. Epochs only move forward, so applying changes in any order, or twice, leaves
 * the same result: the maximum seen.
 */
export class AuthEpochCache {
  private readonly epochs = new Map<string, number>();
  private readonly raiseListeners = new Set<(userId: string, epoch: number) => void>();

  /** Called whenever a user's epoch moves forward: the business plane ends that user's older sessions. */
  onRaised(listener: (userId: string, epoch: number) => void): () => void {
    this.raiseListeners.add(listener);
    return () => this.raiseListeners.delete(listener);
  }

  /** Records `epoch` for the user unless a higher one is already known; true when it changed. */
  apply(userId: string, epoch: number): boolean {
    const current = this.epochs.get(userId);
    if (current !== undefined && current >= epoch) return false;
    this.epochs.set(userId, epoch);
    for (const listener of this.raiseListeners) listener(userId, epoch);
    return true;
  }

  /** The newest epoch a bump delivered for the user, or null when none reached this node. */
  epochOf(userId: string): number | null {
    return this.epochs.get(userId) ?? null;
  }

  replaceAll(entries: Iterable<[string, number]>): void {
    this.epochs.clear();
    for (const [userId, epoch] of entries) this.apply(userId, epoch);
  }

  get size(): number {
    return this.epochs.size;
  }
}
