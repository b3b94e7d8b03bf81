/**
 * The agent's retry delays: decorrelated jitter stays within [base, max], grows from the
 * previous delay, starts over after a success, and follows a policy change at once.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Backoff, nextBackoffDelay } from "../../src/node/agent/backoff.js";

const policy = { baseMs: 500, maxMs: 30_000 };

/** A fixed sequence of "random" numbers, repeated. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length] as number;
}

describe("nextBackoffDelay", () => {
  test("first delay lies between base and 3 × base", () => {
    assert.equal(
      nextBackoffDelay(null, policy, () => 0),
      500,
    );
    assert.equal(
      nextBackoffDelay(null, policy, () => 0.999999),
      1500,
    );
    assert.equal(
      nextBackoffDelay(null, policy, () => 0.5),
      1000,
    );
  });

  test("grows from the previous delay and is capped at max", () => {
    assert.equal(
      nextBackoffDelay(4000, policy, () => 1),
      12_000,
    );
    assert.equal(
      nextBackoffDelay(20_000, policy, () => 1),
      30_000,
    );
    assert.equal(
      nextBackoffDelay(1_000_000, policy, () => 0.5),
      15_250,
    );
  });

  test("every delay stays within [base, max] whatever the random source says", () => {
    let previous: number | null = null;
    for (let i = 0; i < 1000; i++) {
      previous = nextBackoffDelay(previous, policy, Math.random);
      assert.ok(previous >= policy.baseMs && previous <= policy.maxMs, `delay ${previous}`);
    }
  });

  test("a max below the base is treated as the base (no negative range)", () => {
    assert.equal(
      nextBackoffDelay(null, { baseMs: 1000, maxMs: 10 }, () => 0.7),
      1000,
    );
  });
});

describe("Backoff", () => {
  test("counts failures, grows, and starts over after reset()", () => {
    const backoff = new Backoff(() => policy, sequence(1));
    assert.deepEqual([backoff.next(), backoff.next(), backoff.next(), backoff.next()], [1500, 4500, 13_500, 30_000]);
    assert.equal(backoff.attempts, 4);
    backoff.reset();
    assert.equal(backoff.attempts, 0);
    assert.equal(backoff.next(), 1500);
  });

  test("reads the policy on every step (a new cp_agent_runtime applies at the next failure)", () => {
    let current = policy;
    const backoff = new Backoff(() => current, sequence(0));
    assert.equal(backoff.next(), 500);
    current = { baseMs: 50, maxMs: 100 };
    assert.equal(backoff.next(), 50);
  });

  test("jitter spreads a fleet: 100 nodes failing together do not retry in lockstep", () => {
    const delays = new Set<number>();
    for (let i = 0; i < 100; i++) delays.add(new Backoff(() => policy).next());
    assert.ok(delays.size > 50, `only ${delays.size} distinct first delays`);
  });
});
