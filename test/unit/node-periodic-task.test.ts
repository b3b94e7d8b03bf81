/**
 * The loop under every agent channel, driven by a ManualClock: it runs at its interval, a wake
 * runs it at once (and a wake during a run is not lost), a failure waits for the backoff, and
 * a reschedule re-plans the current wait with a new interval.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Backoff } from "../../src/node/agent/backoff.js";
import { PeriodicTask } from "../../src/node/agent/periodic-task.js";
import { ManualClock, ManualScheduler, settle } from "../../src/shared/time/index.js";

function setup(options: { intervalMs?: () => number; run?: () => Promise<void> } = {}) {
  const clock = new ManualClock(1_000_000);
  const scheduler = new ManualScheduler(clock);
  const runs: number[] = [];
  const failures: { attempt: number; retryInMs: number }[] = [];
  const task = new PeriodicTask({
    name: "test",
    scheduler,
    backoff: new Backoff(
      () => ({ baseMs: 100, maxMs: 1000 }),
      () => 0,
    ),
    intervalMs: options.intervalMs ?? (() => 5000),
    run:
      options.run ??
      (async () => {
        runs.push(clock.now());
      }),
    onFailure: (_error, info) => failures.push(info),
  });
  return { clock, scheduler, task, runs, failures, start: clock.now() };
}

describe("ManualScheduler", () => {
  test("fires timers in deadline order, each at its own time", async () => {
    const clock = new ManualClock(0);
    const scheduler = new ManualScheduler(clock);
    const fired: [string, number][] = [];
    scheduler.setTimer(300, () => fired.push(["c", clock.now()]));
    scheduler.setTimer(100, () => fired.push(["a", clock.now()]));
    const cancel = scheduler.setTimer(200, () => fired.push(["cancelled", clock.now()]));
    scheduler.setTimer(100, () => fired.push(["b", clock.now()]));
    cancel();
    await scheduler.advance(250);
    assert.deepEqual(fired, [
      ["a", 100],
      ["b", 100],
    ]);
    assert.equal(clock.now(), 250);
    await scheduler.advance(100);
    assert.deepEqual(fired.at(-1), ["c", 300]);
    assert.equal(scheduler.pending, 0);
  });
});

describe("PeriodicTask", () => {
  test("runs at once, then every interval", async () => {
    const { scheduler, task, runs, start } = setup();
    task.start();
    await settle();
    assert.deepEqual(runs, [start]);
    await scheduler.advance(4999);
    assert.equal(runs.length, 1);
    await scheduler.advance(1);
    await scheduler.advance(5000);
    assert.deepEqual(runs, [start, start + 5000, start + 10_000]);
    await task.stop();
    assert.equal(scheduler.pending, 0, "stop leaves no timer behind");
  });

  test("wake() runs at once and the next interval counts from that run", async () => {
    const { scheduler, task, runs, start } = setup();
    task.start();
    await scheduler.advance(1000);
    task.wake();
    await settle();
    assert.deepEqual(runs, [start, start + 1000]);
    await scheduler.advance(4999);
    assert.equal(runs.length, 2);
    await scheduler.advance(1);
    assert.deepEqual(runs.at(-1), start + 6000);
    await task.stop();
  });

  test("a wake during a run is not lost: the task runs again right after", async () => {
    let release!: () => void;
    let count = 0;
    const { task } = setup({
      run: () => {
        count += 1;
        return count === 1 ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve();
      },
    });
    task.start();
    await settle();
    task.wake();
    release();
    await settle();
    assert.equal(count, 2);
    await task.stop();
  });

  test("failures wait for the backoff; success returns to the interval and reports recovery", async () => {
    let fail = true;
    const recovered: number[] = [];
    const clock = new ManualClock(0);
    const scheduler = new ManualScheduler(clock);
    const runs: number[] = [];
    const task = new PeriodicTask({
      name: "flaky",
      scheduler,
      backoff: new Backoff(
        () => ({ baseMs: 100, maxMs: 1000 }),
        () => 1,
      ),
      intervalMs: () => 5000,
      run: async () => {
        runs.push(clock.now());
        if (fail) throw new Error("CP down");
      },
      onRecovered: ({ failures }) => recovered.push(failures),
    });
    task.start();
    await settle();
    await scheduler.advance(300); // backoff 300 (base 100 .. 3×100, random 1)
    await scheduler.advance(900); // then 900
    assert.deepEqual(runs, [0, 300, 1200]);
    assert.equal(task.state().consecutiveFailures, 3);
    assert.equal(task.state().lastError, "CP down");
    fail = false;
    await scheduler.advance(1000); // capped at max
    assert.deepEqual(runs.at(-1), 2200);
    assert.deepEqual(recovered, [3]);
    assert.equal(task.state().consecutiveFailures, 0);
    await scheduler.advance(5000);
    assert.deepEqual(runs.at(-1), 7200);
    await task.stop();
  });

  test("reschedule() re-plans the current wait with the new interval", async () => {
    let interval = 30_000;
    const { scheduler, task, runs, start } = setup({ intervalMs: () => interval });
    task.start();
    await scheduler.advance(1000);
    interval = 800; // SSE went down: degraded interval
    task.reschedule();
    await scheduler.advance(0);
    assert.equal(runs.length, 2, "the wait was already past 800 ms: runs at once");
    assert.equal(runs[1], start + 1000);
    await scheduler.advance(800);
    assert.equal(runs[2], start + 1800);
    interval = 30_000;
    task.reschedule();
    await scheduler.advance(29_000);
    assert.equal(runs.length, 3);
    await task.stop();
  });

  test("firstSuccess settles only after a successful run; stop() waits for the run in progress", async () => {
    let fail = true;
    let finished = false;
    const { scheduler, task } = setup({
      run: async () => {
        if (fail) throw new Error("no");
        await new Promise((resolve) => setImmediate(resolve));
        finished = true;
      },
    });
    let succeeded = false;
    void task.firstSuccess.then(() => (succeeded = true));
    task.start();
    await scheduler.advance(50);
    assert.equal(succeeded, false);
    fail = false;
    await scheduler.advance(1000);
    assert.equal(succeeded, true);
    task.wake();
    await task.stop();
    assert.equal(finished, true);
  });
});
