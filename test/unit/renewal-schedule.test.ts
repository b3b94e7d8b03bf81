/**
 * When a node certificate is due for renewal: at the configured fraction of its lifetime plus a
 * jitter fixed by its serial. The jitter stays within ± the jitter fraction, is the same for the
 * same serial (every CP process and every restart agree), and spreads a fleet evenly; a golden
 * vector pins the hash, since changing it would move every deployed certificate's instant.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { renewalDueAt, renewalJitter } from "../../src/cp/services/pki/renewal.js";

const DAY_MS = 86_400_000;
const NOT_BEFORE = Date.UTC(2026, 0, 1);
const LIFETIME_MS = 397 * DAY_MS;
const DEFAULTS = { renewAtFraction: 0.7, renewJitterFraction: 0.1 };
const SERIAL = "5f1c0a9e3b7d24c68e0f1a2b3c4d5e6f";

const cert = (serial_hex: string) => ({ not_before: NOT_BEFORE, not_after: NOT_BEFORE + LIFETIME_MS, serial_hex });
/** The fraction of the lifetime at which the certificate is due. */
const dueFraction = (serial: string, settings = DEFAULTS) => (renewalDueAt(cert(serial), settings) - NOT_BEFORE) / LIFETIME_MS;

describe("renewalDueAt", () => {
  test("without jitter: not_before + lifetime × fraction, to the millisecond", () => {
    for (const fraction of [0.5, 0.7, 0.9]) {
      assert.equal(
        renewalDueAt(cert(SERIAL), { renewAtFraction: fraction, renewJitterFraction: 0 }),
        NOT_BEFORE + Math.floor(LIFETIME_MS * fraction),
      );
    }
  });

  test("golden vector: the jitter of a fixed serial (a change here moves every deployed renewal instant)", () => {
    assert.equal(renewalJitter(SERIAL, 0.1), -0.0778455022082234);
    assert.equal(renewalDueAt(cert(SERIAL), DEFAULTS), 1788565996997);
    assert.equal(renewalDueAt(cert(SERIAL), DEFAULTS), NOT_BEFORE + Math.floor(LIFETIME_MS * (0.7 - 0.0778455022082234)));
  });

  test("the same serial gives the same instant, whatever its notation (colons, case)", () => {
    const colons = SERIAL.toUpperCase().replace(/(..)(?!$)/g, "$1:");
    assert.equal(renewalDueAt(cert(colons), DEFAULTS), renewalDueAt(cert(SERIAL), DEFAULTS));
    for (let i = 0; i < 20; i++) assert.equal(renewalDueAt(cert(SERIAL), DEFAULTS), 1788565996997);
  });

  test("the jitter scales with the jitter fraction and never leaves ± it", () => {
    const unit = renewalJitter(SERIAL, 1);
    assert.ok(unit > -1 && unit < 1);
    assert.equal(renewalJitter(SERIAL, 0.25), 0.25 * unit);
    assert.ok(renewalJitter(SERIAL, 0) === 0, "no jitter fraction, no jitter");
  });

  test("1,000 random serials: every instant within fraction ± jitter, mean ≈ fraction, spread over the whole window", () => {
    const fractions = Array.from({ length: 1000 }, () => dueFraction(randomBytes(16).toString("hex")));
    const min = Math.min(...fractions);
    const max = Math.max(...fractions);
    const mean = fractions.reduce((sum, f) => sum + f, 0) / fractions.length;
    assert.ok(min >= 0.6 - 1e-9, `min ${min}`);
    assert.ok(max <= 0.8, `max ${max}`);
    // Uniform over [0.6, 0.8]: σ of the mean ≈ 0.2 / √12 / √1000 ≈ 0.0018; 0.01 is > 5σ.
    assert.ok(Math.abs(mean - 0.7) < 0.01, `mean ${mean}`);
    // A spread fleet: the extremes reach near both ends, and each tenth of the window holds some.
    assert.ok(min < 0.61 && max > 0.79, `min ${min}, max ${max}`);
    const buckets = new Array(10).fill(0) as number[];
    for (const f of fractions) {
      const i = Math.min(9, Math.floor((f - 0.6) / 0.02));
      buckets[i] = (buckets[i] ?? 0) + 1;
    }
    for (const [i, count] of buckets.entries()) assert.ok(count >= 50 && count <= 150, `bucket ${i}: ${count} of 1000`);
  });

  test("another fraction and jitter (SPIRE's half-life ± 10%): bounds follow the settings", () => {
    const settings = { renewAtFraction: 0.5, renewJitterFraction: 0.05 };
    const fractions = Array.from({ length: 1000 }, () => dueFraction(randomBytes(16).toString("hex"), settings));
    assert.ok(Math.min(...fractions) >= 0.45 - 1e-9);
    assert.ok(Math.max(...fractions) <= 0.55);
  });
});
