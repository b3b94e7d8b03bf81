/**
 * Per-user auth epochs (Channel 3) in memory: a session or token minted under an older epoch is
 * no longer valid. Epochs only move forward, so applying changes in any order, or twice, leaves
 * the same result: the maximum seen.
 */
export class AuthEpochCache {
  private readonly epochs = new Map<string, number>();

  /** Records `epoch` for the user unless a higher one is already known; true when it changed. */
  apply(userId: string, epoch: number): boolean {
    const current = this.epochs.get(userId);
    if (current !== undefined && current >= epoch) return false;
    this.epochs.set(userId, epoch);
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
