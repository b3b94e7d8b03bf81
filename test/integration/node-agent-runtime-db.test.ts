/**
 * What the node writes to its Runtime DB, on SQLite and PostgreSQL through the real migrator:
 * Channel 3 pages and their cursor commit together and replay idempotently (nodes of one
 * deployment may share the DB, each with its own cursor), DELTA_CURSOR_EXPIRED clears and
 * replays, and the command runner executes each command once, reports it, and only then moves
 * its persisted cursor — surviving failed reports and restarts.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Kysely } from "kysely";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import { CommandRunner, createCommandHandlers } from "../../src/node/agent/command-runner.js";
import { CpCallError } from "../../src/node/agent/cp-call-error.js";
import { DeltaPuller } from "../../src/node/agent/delta-puller.js";
import { BlacklistCache } from "../../src/node/state/blacklist-cache.js";
import { AuthEpochCache } from "../../src/node/state/epoch-cache.js";
import {
  applyBlacklistPage,
  applyEpochPage,
  BLACKLIST_REPLAY_MARKER,
  blacklistReplayPending,
  readCursor,
  resetStream,
  writeCursor,
} from "../../src/node/state/runtime-sync.js";
import { migrateDatabase, openDatabase, type RuntimeSchema } from "../../src/shared/db/index.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import type { AuthEpochChange, BlacklistChange, CommandResultRequest, PulledCommand } from "../../src/shared/node-protocol/index.js";
import { ManualClock } from "../../src/shared/time/index.js";
import { idleBusinessPlane } from "../helpers/business-plane.js";
import { dbVariants } from "../helpers/databases.js";

const epochChange = (id: number, userId: string, epoch: number): AuthEpochChange => ({
  id,
  user_id: userId,
  app_id: "app1",
  epoch,
  created_at: id,
});
const addChange = (id: number, entryId: string, value: string, expiresAt: number | null = null): BlacklistChange => ({
  id,
  entry_id: entryId,
  op: "add",
  kind: "ip",
  value,
  reason: "abuse",
  expires_at: expiresAt,
  created_at: id,
});
const removeChange = (id: number, added: BlacklistChange): BlacklistChange => ({ ...added, id, op: "remove", created_at: id });

async function snapshot(db: Kysely<RuntimeSchema>) {
  return {
    blacklist: await db
      .selectFrom("applied_blacklist")
      .select(["entry_id", "kind", "value", "reason", "expires_at", "change_id"])
      .where("removed_at", "is", null)
      .orderBy("entry_id")
      .execute(),
    epochs: await db.selectFrom("applied_auth_epochs").select(["user_id", "app_id", "epoch", "change_id"]).orderBy("user_id").execute(),
    cursors: await db.selectFrom("sync_cursors").select(["node_id", "stream", "cursor"]).orderBy("node_id").orderBy("stream").execute(),
  };
}

for (const variant of dbVariants()) {
  describe(`node Runtime DB on ${variant.name}`, { skip: variant.skip }, () => {
    let db: Kysely<RuntimeSchema>;
    const clock = new ManualClock(Date.UTC(2026, 5, 1));

    before(async () => {
      db = await openDatabase<RuntimeSchema>(await variant.fresh("node_runtime"));
      await migrateDatabase(db as Kysely<unknown>, runtimeMigrationSet, "node test runtime");
    });
    after(async () => {
      await db.destroy();
      await variant.cleanup();
    });

    const clear = async () => {
      await db.deleteFrom("applied_blacklist").execute();
      await db.deleteFrom("applied_auth_epochs").execute();
      await db.deleteFrom("sync_cursors").execute();
    };

    describe("delta appliers", () => {
      before(clear);

      test("epochs: the maximum wins whatever the order; page and cursor commit together; replays change nothing", async () => {
        await applyEpochPage(db, "node_a", [epochChange(1, "u1", 1), epochChange(2, "u2", 1), epochChange(3, "u1", 2)], 3, clock.now());
        const once = await snapshot(db);
        assert.deepEqual(
          once.epochs.map((e) => [e.user_id, e.epoch, e.change_id]),
          [
            ["u1", 2, 3],
            ["u2", 1, 2],
          ],
        );
        assert.equal(await readCursor(db, "node_a", "auth-epochs"), 3);
        // node_b shares the DB, is behind, and applies the same page later: nothing moves backwards.
        await applyEpochPage(db, "node_b", [epochChange(1, "u1", 1), epochChange(2, "u2", 1)], 2, clock.now());
        await applyEpochPage(db, "node_a", [epochChange(1, "u1", 1), epochChange(2, "u2", 1), epochChange(3, "u1", 2)], 3, clock.now());
        const twice = await snapshot(db);
        assert.deepEqual(twice.epochs, once.epochs);
        assert.equal(await readCursor(db, "node_b", "auth-epochs"), 2, "each node has its own cursor");
        assert.equal(await readCursor(db, "node_a", "auth-epochs"), 3);
      });

      test("blacklist: adds and removes, the last change per entry wins within a page, replays change nothing", async () => {
        const a = addChange(10, "bl_a", "10.0.0.1");
        const b = addChange(11, "bl_b", "10.0.0.2", clock.now() + 60_000);
        const c = addChange(12, "bl_c", "10.0.0.3");
        const effect = await applyBlacklistPage(db, "node_a", [a, b, c, removeChange(13, c)], 13, clock.now());
        assert.deepEqual(effect.added.map((e) => e.entryId).sort(), ["bl_a", "bl_b"]);
        assert.deepEqual(effect.removed, ["bl_c"]);
        const once = await snapshot(db);
        assert.deepEqual(
          once.blacklist.map((r) => r.entry_id),
          ["bl_a", "bl_b"],
        );
        assert.equal(once.blacklist[1]?.expires_at, clock.now() + 60_000);
        await applyBlacklistPage(db, "node_a", [a, b, c, removeChange(13, c)], 13, clock.now());
        assert.deepEqual(await snapshot(db), once);
        await applyBlacklistPage(db, "node_a", [removeChange(14, a)], 14, clock.now());
        assert.deepEqual(
          (await snapshot(db)).blacklist.map((r) => r.entry_id),
          ["bl_b"],
        );
        assert.equal(await readCursor(db, "node_a", "blacklist"), 14);
      });

      test("a replayed older add never overwrites what a newer change wrote to the same entry", async () => {
        const newer = { ...addChange(20, "bl_x", "1.2.3.4"), reason: "newer" };
        await applyBlacklistPage(db, "node_a", [newer], 20, clock.now());
        await applyBlacklistPage(db, "node_b", [{ ...addChange(19, "bl_x", "1.2.3.4"), reason: "older" }], 19, clock.now());
        const row = await db.selectFrom("applied_blacklist").selectAll().where("entry_id", "=", "bl_x").executeTakeFirstOrThrow();
        assert.equal(row.reason, "newer");
        assert.equal(row.change_id, 20);
      });

      test("resetStream keeps the shared rows, rewinds only that node's cursor and marks a blacklist replay due, in one go", async () => {
        const before = await snapshot(db);
        assert.ok(before.blacklist.length > 0);
        await resetStream(db, "node_a", "blacklist", clock.now());
        const after = await snapshot(db);
        assert.deepEqual(after.blacklist, before.blacklist, "other nodes sharing the DB still load every entry");
        assert.equal(await readCursor(db, "node_a", "blacklist"), 0);
        assert.equal(await blacklistReplayPending(db, "node_a"), true);
        assert.equal(await blacklistReplayPending(db, "node_b"), false);
        assert.equal(await readCursor(db, "node_a", "auth-epochs"), 3, "the other stream is untouched");
        await resetStream(db, "node_a", "auth-epochs", clock.now());
        assert.equal((await snapshot(db)).epochs.length, 2, "epochs are kept: the max-merge makes a replay safe");
        await db.deleteFrom("sync_cursors").where("stream", "=", BLACKLIST_REPLAY_MARKER).execute();
      });

      test("a node still behind never revives an entry another node sharing the DB already removed; the tombstone goes once both have passed it", async () => {
        await clear();
        const added = addChange(30, "bl_y", "192.0.2.50");
        await writeCursor(db, "node_slow", "blacklist", 29, clock.now());
        await applyBlacklistPage(db, "node_fast", [added, removeChange(31, added)], 31, clock.now());
        assert.ok(!(await snapshot(db)).blacklist.some((r) => r.entry_id === "bl_y"), "removed by the fast node");
        await applyBlacklistPage(db, "node_slow", [added], 30, clock.now());
        assert.ok(!(await snapshot(db)).blacklist.some((r) => r.entry_id === "bl_y"), "the slow node's older add does not bring it back");
        const tombstone = await db
          .selectFrom("applied_blacklist")
          .select(["change_id", "removed_at"])
          .where("entry_id", "=", "bl_y")
          .executeTakeFirstOrThrow();
        assert.equal(tombstone.change_id, 31);
        assert.notEqual(tombstone.removed_at, null);
        await applyBlacklistPage(db, "node_slow", [removeChange(31, added)], 31, clock.now());
        const left = await db.selectFrom("applied_blacklist").select("entry_id").where("entry_id", "=", "bl_y").execute();
        assert.deepEqual(left, [], "every node is past the removal: the tombstone is pruned");
      });
    });

    describe("DeltaPuller", () => {
      before(clear);

      /** A CP change log with retention: ids below `prunedThrough` are gone. */
      function fakeLog<T extends { id: number }>(changes: T[], pageSize = 2) {
        const state = { prunedThrough: 0, calls: [] as number[] };
        const client = {
          pullDelta: async (_stream: string, since: number) => {
            state.calls.push(since);
            const head = changes.at(-1)?.id ?? 0;
            if (since > 0 && since < state.prunedThrough) {
              const body = {
                error: "DELTA_CURSOR_EXPIRED",
                message: "replay from 0",
                details: { since, oldest_available: state.prunedThrough, head },
              };
              throw new CpCallError("http", "HTTP 410 DELTA_CURSOR_EXPIRED", { status: 410, code: "DELTA_CURSOR_EXPIRED", body });
            }
            const page = changes.filter((c) => c.id > since).slice(0, pageSize);
            const nextSince = page.at(-1)?.id ?? since;
            return { changes: page, next_since: nextSince, has_more: changes.some((c) => c.id > nextSince), head };
          },
        };
        return { client: client as never, state };
      }

      test("pulls every page, persists the cursor, and resumes from it after a restart", async () => {
        const changes = [
          epochChange(1, "u1", 1),
          epochChange(2, "u2", 1),
          epochChange(3, "u1", 2),
          epochChange(5, "u3", 1),
          epochChange(6, "u3", 2),
        ];
        const log = fakeLog(changes);
        const caches = { blacklist: new BlacklistCache(), epochs: new AuthEpochCache() };
        const memory = createMemoryLogger("Security");
        const make = () =>
          new DeltaPuller({ stream: "auth-epochs", nodeId: "node_p", db, client: log.client, clock, log: memory.logger, caches });
        const first = await make().pull();
        assert.deepEqual(
          { pages: first.pages, changes: first.changes, cursor: first.cursor, head: first.head },
          { pages: 3, changes: 5, cursor: 6, head: 6 },
        );
        assert.deepEqual(log.state.calls, [0, 2, 5]);
        assert.equal(caches.epochs.epochOf("u1"), 2);
        assert.equal(caches.epochs.epochOf("u3"), 2);
        changes.push(epochChange(7, "u1", 3));
        const restarted = make();
        await restarted.load();
        assert.equal(restarted.cursor, 6, "cursor read back from the Runtime DB");
        const second = await restarted.pull();
        assert.equal(second.changes, 1);
        assert.deepEqual(log.state.calls.slice(3), [6]);
        assert.equal(caches.epochs.epochOf("u1"), 3);
      });

      test("410 DELTA_CURSOR_EXPIRED: logged as a security error, replayed from 0, entries compacted away retired, cache rebuilt", async () => {
        const a = addChange(1, "bl_1", "1.1.1.1");
        const b = addChange(2, "bl_2", "2.2.2.2");
        const changes: BlacklistChange[] = [a, b];
        const log = fakeLog(changes, 10);
        const caches = { blacklist: new BlacklistCache(), epochs: new AuthEpochCache() };
        const memory = createMemoryLogger("Security");
        const puller = new DeltaPuller({
          stream: "blacklist",
          nodeId: "node_p",
          db,
          client: log.client,
          clock,
          log: memory.logger,
          caches,
        });
        await puller.pull();
        assert.equal(caches.blacklist.size, 2);
        // While the node was away: bl_1 removed, bl_3 added, and the CP compacted everything it could.
        changes.splice(0, changes.length, b, addChange(4, "bl_3", "3.3.3.3"));
        log.state.prunedThrough = 3;
        const result = await puller.pull();
        assert.equal(result.replayed, true);
        assert.deepEqual(log.state.calls, [0, 2, 0]);
        const error = memory.events().find((e) => e.msg === "delta.cursor_expired");
        assert.equal(error?.level, "error");
        assert.equal(error?.category, "Security");
        assert.equal(error?.since, 2);
        assert.equal(error?.oldest_available, 3);
        const rows = (await snapshot(db)).blacklist.map((r) => r.entry_id);
        assert.deepEqual(rows, ["bl_2", "bl_3"], "bl_1's removal was never seen as a change, yet it is retired");
        assert.equal(caches.blacklist.isBlocked("ip", "1.1.1.1", clock.now()), false);
        assert.equal(caches.blacklist.isBlocked("ip", "3.3.3.3", clock.now()), true);
        assert.equal(await readCursor(db, "node_p", "blacklist"), 4);
        assert.equal(await blacklistReplayPending(db, "node_p"), false, "the replay finished");
      });

      test("while one node replays, a node sharing the DB loads every entry; a replay cut by a restart starts again from 0 and still retires what was compacted", async () => {
        await clear();
        const keep = addChange(1, "bl_keep", "10.0.0.1");
        const gone = addChange(2, "bl_gone", "10.0.0.2");
        const later = [addChange(5, "bl_new1", "10.0.0.5"), addChange(6, "bl_new2", "10.0.0.6"), addChange(7, "bl_new3", "10.0.0.7")];
        const changes: BlacklistChange[] = [keep, gone];
        // Pages of two: each page after the first ends past the compacted range, as a real replay's would.
        const log = fakeLog(changes, 2);
        const memory = createMemoryLogger("Security");
        const make = () =>
          new DeltaPuller({
            stream: "blacklist",
            nodeId: "node_r",
            db,
            client: log.client,
            clock,
            log: memory.logger,
            caches: { blacklist: new BlacklistCache(), epochs: new AuthEpochCache() },
          });
        await make().pull();
        // Away: bl_gone removed and both its changes compacted; three entries added.
        changes.splice(0, changes.length, keep, ...later);
        log.state.prunedThrough = 4;
        // The replay fails after its first page (the CP goes away), then the node restarts.
        let pulls = 0;
        const flaky = {
          pullDelta: async (stream: string, since: number) => {
            pulls += 1;
            if (pulls === 3) throw new CpCallError("network", "connect ECONNREFUSED", { socketCode: "ECONNREFUSED" });
            return (log.client as { pullDelta: (s: string, n: number) => Promise<unknown> }).pullDelta(stream, since);
          },
        };
        const interrupted = new DeltaPuller({
          stream: "blacklist",
          nodeId: "node_r",
          db,
          client: flaky as never,
          clock,
          log: memory.logger,
          caches: { blacklist: new BlacklistCache(), epochs: new AuthEpochCache() },
        });
        await interrupted.load();
        await assert.rejects(interrupted.pull(), /ECONNREFUSED/);
        assert.equal(await blacklistReplayPending(db, "node_r"), true);
        assert.ok((await readCursor(db, "node_r", "blacklist")) > 0, "the replay got somewhere before it was cut");
        const shared = (await snapshot(db)).blacklist.map((r) => r.entry_id);
        assert.ok(shared.includes("bl_keep"), "mid-replay, another node loading the shared table still gets every live entry");

        const restarted = make();
        await restarted.load();
        assert.equal(restarted.cursor, 0, "an unfinished replay starts again from 0");
        assert.ok(memory.events().some((e) => e.msg === "delta.replay_resumed"));
        const result = await restarted.pull();
        assert.equal(result.replayed, true);
        assert.deepEqual(
          (await snapshot(db)).blacklist.map((r) => r.entry_id),
          ["bl_keep", "bl_new1", "bl_new2", "bl_new3"],
        );
        const retired = await db
          .selectFrom("applied_blacklist")
          .select(["change_id", "removed_at"])
          .where("entry_id", "=", "bl_gone")
          .executeTakeFirst();
        assert.ok(retired === undefined || retired.removed_at !== null, "bl_gone retired (a tombstone, or already pruned)");
        assert.equal(await blacklistReplayPending(db, "node_r"), false);
      });

      test("a CP that answers has_more without progress is refused instead of looping", async () => {
        const caches = { blacklist: new BlacklistCache(), epochs: new AuthEpochCache() };
        const client = { pullDelta: async (_s: string, since: number) => ({ changes: [], next_since: since, has_more: true, head: 99 }) };
        const puller = new DeltaPuller({
          stream: "auth-epochs",
          nodeId: "node_loop",
          db,
          client: client as never,
          clock,
          log: createMemoryLogger("Security").logger,
          caches,
        });
        await assert.rejects(puller.pull(), /has_more without progress/);
      });
    });

    describe("CommandRunner", () => {
      before(clear);

      const command = (
        seq: number,
        kind: PulledCommand["kind"],
        payload: Record<string, unknown>,
        expiresAt: number | null = null,
      ): PulledCommand => ({
        id: `cmd_${seq}`,
        seq,
        kind,
        payload,
        created_at: clock.now(),
        expires_at: expiresAt,
      });

      function fakeCp(commands: PulledCommand[]) {
        const cp = {
          reports: [] as { id: string; body: CommandResultRequest }[],
          failReports: 0,
          refuseReports: 0,
          pulls: [] as number[],
          client: {
            pullCommands: async (since: number) => {
              cp.pulls.push(since);
              const reported = new Set(cp.reports.map((r) => r.id));
              const page = commands.filter((c) => c.seq > since && !reported.has(c.id));
              return { commands: page, next_since: Math.max(since, ...page.map((c) => c.seq)), has_more: false };
            },
            reportCommandResult: async (id: string, body: CommandResultRequest) => {
              if (cp.failReports-- > 0) throw new CpCallError("network", "connect ECONNRESET");
              if (cp.refuseReports-- > 0) throw new CpCallError("http", "HTTP 409 CONFLICT", { status: 409, code: "CONFLICT" });
              cp.reports.push({ id, body });
            },
          },
        };
        return cp;
      }

      function runner(cp: ReturnType<typeof fakeCp>, reloads: { count: number }, nodeId = "node_c") {
        const memory = createMemoryLogger("CP Agent");
        const handlers = createCommandHandlers({
          business: idleBusinessPlane(db, clock).plane,
          reloadConfigs: async () => {
            reloads.count += 1;
            return { applied: 0, rejected: 0 };
          },
        });
        return { runner: new CommandRunner({ nodeId, db, client: cp.client, clock, log: memory.logger, handlers }), events: memory.events };
      }

      test("executes each command through its handler, reports the truthful outcome, then persists the cursor", async () => {
        const cp = fakeCp([
          command(1, "reload_configs", {}),
          command(2, "force_logout", { user_id: "u1" }),
          command(3, "announcement", { message: "maintenance at 10" }),
          command(4, "kill_process", { app_id: "app1" }),
          command(5, "force_logout", { user: "missing user_id" }),
          command(6, "announcement", { message: "too late" }, clock.now() - 1),
        ]);
        const reloads = { count: 0 };
        const { runner: r } = runner(cp, reloads);
        const result = await r.pull();
        assert.equal(result.executed, 6);
        assert.equal(reloads.count, 1, "reload_configs ran a config pull");
        assert.deepEqual(
          cp.reports.map((x) => [x.id, x.body.status]),
          [
            ["cmd_1", "succeeded"],
            ["cmd_2", "succeeded"],
            ["cmd_3", "succeeded"],
            ["cmd_4", "succeeded"],
            ["cmd_5", "rejected"],
            ["cmd_6", "rejected"],
          ],
        );
        assert.deepEqual(cp.reports[1]?.body.output, { delivered: 0 }, "no business listener: the push reached nobody, and says so");
        assert.match(JSON.stringify(cp.reports[4]?.body.output), /invalid payload/);
        assert.match(JSON.stringify(cp.reports[5]?.body.output), /expired/);
        assert.equal(await readCursor(db, "node_c", "commands"), 6);
      });

      test("a failed report is retried without running the command again; a restart resumes from the cursor", async () => {
        await db.deleteFrom("sync_cursors").execute();
        const cp = fakeCp([command(1, "reload_configs", {}), command(2, "reload_configs", {})]);
        const reloads = { count: 0 };
        const first = runner(cp, reloads);
        cp.failReports = 1;
        await assert.rejects(first.runner.pull(), /ECONNRESET/);
        assert.equal(reloads.count, 1);
        assert.equal(first.runner.pendingReports, 1);
        assert.equal(await readCursor(db, "node_c", "commands"), 0, "the cursor does not pass an unreported command");
        await first.runner.pull();
        assert.equal(reloads.count, 2, "command 1 was not executed twice; command 2 ran once");
        assert.deepEqual(
          cp.reports.map((x) => x.id),
          ["cmd_1", "cmd_2"],
        );
        assert.equal(await readCursor(db, "node_c", "commands"), 2);
        const restarted = runner(cp, reloads);
        await restarted.runner.pull();
        assert.equal(reloads.count, 2, "nothing re-executed after a restart");
        assert.equal(cp.pulls.at(-1), 2);
      });

      test("a report the CP refuses (4xx) is logged and the cursor moves on; a throwing handler reports 'failed'", async () => {
        await db.deleteFrom("sync_cursors").execute();
        const cp = fakeCp([command(1, "reload_configs", {}), command(2, "reload_configs", {})]);
        const reloads = { count: 0 };
        const memory = createMemoryLogger("CP Agent");
        const handlers = createCommandHandlers({
          business: idleBusinessPlane(db, clock).plane,
          reloadConfigs: async () => {
            reloads.count += 1;
            throw new Error("CP unreachable for configs");
          },
        });
        const r = new CommandRunner({ nodeId: "node_c", db, client: cp.client, clock, log: memory.logger, handlers });
        cp.refuseReports = 1;
        await r.pull();
        assert.ok(memory.events().some((e) => e.msg === "command.result_refused" && e.status === 409));
        assert.deepEqual(
          cp.reports.map((x) => [x.id, x.body.status, JSON.stringify(x.body.output)]),
          [["cmd_2", "failed", JSON.stringify({ error: "CP unreachable for configs" })]],
        );
        assert.equal(await readCursor(db, "node_c", "commands"), 2);
      });
    });
  });
}
