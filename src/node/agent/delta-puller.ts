/**
 * Channel 3, node side: follows one change log ("auth-epochs" or "blacklist") from this node's
 * persisted cursor. Each page and the cursor after it commit in one Runtime DB transaction, and
 * only then reach the in-memory cache, so a restart resumes exactly where the last commit left
 * off. When the CP says the cursor is older than what it still keeps (410
 * DELTA_CURSOR_EXPIRED), the puller says so loudly and replays from 0: the retained log always
 * rebuilds the full current state. A blacklist replay remembers every entry it sees and, on its
 * last page, retires the rows it never saw (their add and remove were compacted away); a replay
 * cut short by a restart starts again from 0 (a marker row in the Runtime DB says one is due).
 */
import type { Kysely } from "kysely";
import type { RuntimeSchema } from "../../shared/db/index.js";
import type { Logger } from "../../shared/log/index.js";
import { type AuthEpochChange, type BlacklistChange, cursorExpiredBody, type DeltaStream } from "../../shared/node-protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { BlacklistCache } from "../state/blacklist-cache.js";
import type { AuthEpochCache } from "../state/epoch-cache.js";
import {
  applyBlacklistPage,
  applyEpochPage,
  blacklistReplayPending,
  loadBlacklist,
  loadEpochs,
  readCursor,
  resetStream,
} from "../state/runtime-sync.js";
import { CpCallError } from "./cp-call-error.js";
import type { CpClient } from "./cp-client.js";

export interface DeltaPullResult {
  pages: number;
  changes: number;
  cursor: number;
  head: number;
  /** True when this pull started over from 0 after DELTA_CURSOR_EXPIRED. */
  replayed: boolean;
}

export interface DeltaPullerOptions {
  stream: DeltaStream;
  nodeId: string;
  db: Kysely<RuntimeSchema>;
  client: Pick<CpClient, "pullDelta">;
  clock: Clock;
  log: Logger;
  caches: { blacklist: BlacklistCache; epochs: AuthEpochCache };
  /** Page size asked of the CP; the CP's default when absent. */
  pageLimit?: number;
  /** After each committed page (for waiters and the business plane). */
  onApplied?: (result: { stream: DeltaStream; changes: number; cursor: number }) => void;
}

/** A pull that keeps getting has_more without moving is a CP bug; stop rather than spin. */
const MAX_PAGES_PER_PULL = 10_000;

export class DeltaPuller {
  private cursor_ = 0;
  private head_ = 0;
  private loaded = false;
  /** Entry ids seen since a blacklist replay from 0 began; null when no replay is under way. */
  private replaySeen: Set<string> | null = null;

  constructor(private readonly options: DeltaPullerOptions) {}

  get stream(): DeltaStream {
    return this.options.stream;
  }

  get cursor(): number {
    return this.cursor_;
  }

  /** Newest id the CP reported for this log (from a pull or a checkin's heads). */
  get head(): number {
    return this.head_;
  }

  noteHead(head: number): void {
    this.head_ = Math.max(this.head_, head);
  }

  /** Reads the persisted cursor (once, at startup); an unfinished blacklist replay starts again from 0. */
  async load(): Promise<void> {
    const { db, nodeId, stream } = this.options;
    this.cursor_ = await readCursor(db, nodeId, stream);
    if (stream === "blacklist" && (await blacklistReplayPending(db, nodeId))) {
      this.options.log.warn("delta.replay_resumed", { stream, cursor: this.cursor_, action: "replaying from 0" });
      this.cursor_ = 0;
      this.replaySeen = new Set();
    }
    this.loaded = true;
  }

  /** Pulls and applies every page after the cursor. */
  async pull(): Promise<DeltaPullResult> {
    if (!this.loaded) await this.load();
    const result: DeltaPullResult = { pages: 0, changes: 0, cursor: this.cursor_, head: this.head_, replayed: false };
    for (;;) {
      if (result.pages >= MAX_PAGES_PER_PULL)
        throw new CpCallError("invalid_response", `${this.stream} delta: more than ${MAX_PAGES_PER_PULL} pages in one pull`);
      let page: Awaited<ReturnType<CpClient["pullDelta"]>>;
      try {
        page = await this.options.client.pullDelta(this.options.stream, this.cursor_, this.options.pageLimit);
      } catch (error) {
        if (!isCursorExpired(error) || this.cursor_ === 0) throw error;
        await this.startOver(error);
        result.replayed = true;
        continue;
      }
      if (page.has_more && page.next_since <= this.cursor_) {
        throw new CpCallError(
          "invalid_response",
          `${this.stream} delta: has_more without progress (since ${this.cursor_}, next_since ${page.next_since})`,
        );
      }
      if (await this.applyPage(page.changes, page.next_since, page.has_more)) result.replayed = true;
      this.noteHead(page.head);
      result.pages += 1;
      result.changes += page.changes.length;
      if (!page.has_more) break;
    }
    if (result.replayed) await this.reloadCache();
    result.cursor = this.cursor_;
    result.head = this.head_;
    return result;
  }

  /** Commits one page and its cursor, then updates the cache; true when the page ended a blacklist replay. */
  private async applyPage(changes: readonly (AuthEpochChange | BlacklistChange)[], nextSince: number, hasMore: boolean): Promise<boolean> {
    const { db, nodeId, clock, caches, log } = this.options;
    const now = clock.now();
    let replayEnded = false;
    if (this.options.stream === "blacklist") {
      const seen = this.replaySeen;
      for (const change of changes as BlacklistChange[]) seen?.add(change.entry_id);
      const replayEnd = seen !== null && !hasMore ? { seen, through: nextSince } : undefined;
      const effect = await applyBlacklistPage(db, nodeId, changes as BlacklistChange[], nextSince, now, replayEnd);
      for (const id of effect.removed) caches.blacklist.remove(id);
      for (const entry of effect.added) caches.blacklist.add(entry);
      if (replayEnd) {
        this.replaySeen = null;
        replayEnded = true;
      }
    } else {
      const effect = await applyEpochPage(db, nodeId, changes as AuthEpochChange[], nextSince, now);
      for (const change of effect) caches.epochs.apply(change.user_id, change.epoch);
    }
    const from = this.cursor_;
    this.cursor_ = nextSince;
    if (changes.length > 0) {
      log.info("delta.applied", { stream: this.options.stream, changes: changes.length, from_cursor: from, cursor: nextSince });
      this.options.onApplied?.({ stream: this.options.stream, changes: changes.length, cursor: nextSince });
    }
    return replayEnded;
  }

  private async startOver(error: CpCallError): Promise<void> {
    const parsed = cursorExpiredBody.safeParse(error.details.body);
    this.options.log.error("delta.cursor_expired", {
      stream: this.options.stream,
      since: this.cursor_,
      oldest_available: parsed.success ? parsed.data.details.oldest_available : undefined,
      head: parsed.success ? parsed.data.details.head : undefined,
      action: "replaying from 0",
    });
    await resetStream(this.options.db, this.options.nodeId, this.options.stream, this.options.clock.now());
    this.cursor_ = 0;
    if (this.options.stream === "blacklist") this.replaySeen = new Set();
  }

  /**
   * After a replay the cache is rebuilt from the Runtime DB in one swap: until then the old
   * entries kept blocking, which is the safe direction for a blacklist.
   */
  private async reloadCache(): Promise<void> {
    const { db, caches, log } = this.options;
    if (this.options.stream === "blacklist") caches.blacklist.replaceAll(await loadBlacklist(db));
    else caches.epochs.replaceAll(await loadEpochs(db));
    log.warn("delta.replayed", {
      stream: this.options.stream,
      cursor: this.cursor_,
      entries: this.options.stream === "blacklist" ? caches.blacklist.size : caches.epochs.size,
    });
  }
}

export function isCursorExpired(error: unknown): error is CpCallError {
  return error instanceof CpCallError && error.status === 410 && error.code === "DELTA_CURSOR_EXPIRED";
}
