/**
 * A real Control Plane context over real, migrated databases, for service and route tests that
 * run in process (no listeners). Time is a ManualClock; logs go to memory so tests can assert
 * on them (and on the absence of secrets).
 */

import { randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import { controlMigrationSet } from "../../migrations/control/index.js";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import { DEFAULT_PKI_SETTINGS } from "../../src/cp/config.js";
import { startAuditChains } from "../../src/cp/services/audit/chains.js";
import type { CpContext } from "../../src/cp/services/context.js";
import { createEventBus } from "../../src/cp/services/event-bus.js";
import { createCheckinCache } from "../../src/cp/services/nodes/checkin-cache.js";
import { ensureSetupRow, initializeSetup, prepareConsoleToken } from "../../src/cp/services/setup/setup.js";
import { type ControlSchema, migrateDatabase, openDatabase, type RuntimeSchema } from "../../src/shared/db/index.js";
import { createMemoryLogger } from "../../src/shared/log/index.js";
import { ManualClock, realScheduler, type Scheduler } from "../../src/shared/time/index.js";
import type { DbVariant } from "./databases.js";
import { makeTempDir } from "./temp-dir.js";

export const ROOT_USERNAME = "root";
export const ROOT_PASSWORD = "correct horse battery staple";

export interface TestCp {
  ctx: CpContext;
  clock: ManualClock;
  /** Every CP timer: real timers reading the manual clock unless the test passed its own (a ManualScheduler). */
  scheduler: Scheduler;
  logLines: string[];
  close(): Promise<void>;
}

export interface TestCpOptions {
  /** Timers and "now" of the CP; its clock must be a ManualClock. Default: real timers over a ManualClock. */
  scheduler?: Scheduler & { clock: ManualClock };
}

export async function createTestCp(variant: DbVariant, label = "cp", options: TestCpOptions = {}): Promise<TestCp> {
  const clock = options.scheduler?.clock ?? new ManualClock(Date.UTC(2026, 5, 1, 12, 0, 0));
  const scheduler = options.scheduler ?? realScheduler(clock);
  const memory = createMemoryLogger("Server");
  const dataDir = await makeTempDir(`authnexus-${label}-data`);
  const controlDb = await openDatabase<ControlSchema>(await variant.fresh(`${label}_control`));
  const runtimeDb = await openDatabase<RuntimeSchema>(await variant.fresh(`${label}_runtime`));
  await migrateDatabase(controlDb as Kysely<unknown>, controlMigrationSet, "test control");
  await migrateDatabase(runtimeDb as Kysely<unknown>, runtimeMigrationSet, "test runtime");
  const events = createEventBus();
  const ctx: CpContext = {
    controlDb,
    runtimeDb,
    clock,
    scheduler,
    log: memory.logger,
    masterKey: randomBytes(32),
    publicCpUrl: "https://cp.example.test:9091/",
    publicOcspUrl: "http://cp.example.test:9092/ocsp/",
    dataDir: dataDir.path,
    events,
    checkinCache: createCheckinCache(controlDb, events),
    instanceId: `cp_test_${label}`,
    pki: { ...DEFAULT_PKI_SETTINGS },
  };
  startAuditChains(ctx);
  await ensureSetupRow(ctx);
  return {
    ctx,
    clock,
    scheduler,
    logLines: memory.lines,
    async close() {
      ctx.checkinCache.close();
      await Promise.all([controlDb.destroy(), runtimeDb.destroy()]);
      await dataDir.cleanup();
    },
  };
}

/** Runs first-run setup through the real service, as the initialize endpoint would. */
export async function completeSetup(ctx: CpContext): Promise<void> {
  const { token } = await prepareConsoleToken(ctx);
  if (!token) throw new Error("expected a fresh console token");
  await initializeSetup(ctx, { consoleToken: token, adminUsername: ROOT_USERNAME, adminPassword: ROOT_PASSWORD }, "127.0.0.1");
}
