/**
 * The DB layer on both dialects, through the real migrator: both schemas migrate, re-running is
 * a no-op, a database holding the other role's migrations is refused, and every table
 * round-trips the column conventions (bigint → number, blob → Buffer, 0/1 integers, text JSON).
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Kysely } from "kysely";
import { controlMigrationSet, controlMigrations } from "../../migrations/control/index.js";
import { runtimeMigrationSet } from "../../migrations/runtime/index.js";
import {
  type ControlSchema,
  isUniqueViolation,
  migrateDatabase,
  migrationTableName,
  openDatabase,
  precompiled,
  type RuntimeSchema,
} from "../../src/shared/db/index.js";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { dbVariants } from "../helpers/databases.js";

for (const variant of dbVariants()) {
  describe(`database layer on ${variant.name}`, { skip: variant.skip }, () => {
    const opened: Array<Kysely<unknown>> = [];
    const open = async <S>(label: string) => {
      const db = await openDatabase<S>(await variant.fresh(label));
      opened.push(db as Kysely<unknown>);
      return db;
    };
    after(async () => {
      await Promise.all(opened.map((db) => db.destroy()));
      await variant.cleanup();
    });

    test("control and runtime schemas migrate once, with separate migration tables", async () => {
      const control = await open<ControlSchema>("mig_control");
      const first = await migrateDatabase(control as Kysely<unknown>, controlMigrationSet, "control");
      assert.deepEqual(first.applied, Object.keys(controlMigrations));
      assert.deepEqual(first.applied, [...first.applied].sort(), "migration names sort in the order they apply");
      const second = await migrateDatabase(control as Kysely<unknown>, controlMigrationSet, "control");
      assert.deepEqual(second.applied, []);
      const tables = (await control.introspection.getTables({ withInternalKyselyTables: true })).map((t) => t.name);
      assert.ok(tables.includes(migrationTableName("control")));
      assert.ok(!tables.includes(migrationTableName("runtime")));
      assert.ok(tables.includes("agents") && tables.includes("auth_epoch_changes") && tables.includes("server_blacklist_changes"));
    });

    test("a database that holds the other role's migrations is refused", async () => {
      const control = await open<ControlSchema>("mix_control");
      await migrateDatabase(control as Kysely<unknown>, controlMigrationSet, "the control db");
      await assert.rejects(migrateDatabase(control as Kysely<unknown>, runtimeMigrationSet, "the control db"), (error: unknown) => {
        assert.ok(isAuthNexusError(error, "DB_MIGRATION_MISMATCH"));
        assert.match(error.message, /holds the control database's migrations/);
        return true;
      });
      const runtime = await open<RuntimeSchema>("mix_runtime");
      await migrateDatabase(runtime as Kysely<unknown>, runtimeMigrationSet, "the runtime db");
      await assert.rejects(
        migrateDatabase(runtime as Kysely<unknown>, controlMigrationSet, "the runtime db"),
        /holds the runtime database's migrations/,
      );
      const runtimeTables = (await runtime.introspection.getTables()).map((t) => t.name);
      assert.ok(!runtimeTables.includes("agents"), "the refused migration must not have created anything");
    });

    describe("column conventions round-trip", () => {
      let control: Kysely<ControlSchema>;
      let runtime: Kysely<RuntimeSchema>;
      before(async () => {
        control = await open<ControlSchema>("rt_control");
        runtime = await open<RuntimeSchema>("rt_runtime");
        await migrateDatabase(control as Kysely<unknown>, controlMigrationSet, "control");
        await migrateDatabase(runtime as Kysely<unknown>, runtimeMigrationSet, "runtime");
      });

      test("bigint timestamps come back as numbers and blobs as Buffers", async () => {
        const big = Date.UTC(2099, 11, 31, 23, 59, 59, 999);
        const blob = Buffer.from([0, 1, 2, 255, 254]);
        await control.insertInto("server_secrets").values({ name: "s", ciphertext: blob, created_at: big }).execute();
        const row = await control.selectFrom("server_secrets").selectAll().executeTakeFirstOrThrow();
        assert.equal(row.created_at, big);
        assert.equal(typeof row.created_at, "number");
        assert.ok(Buffer.from(row.ciphertext).equals(blob));
      });

      test("sequence keys are monotonic numbers on both change logs and commands", async () => {
        const ids: number[] = [];
        for (let i = 0; i < 3; i++) {
          const r = await control
            .insertInto("auth_epoch_changes")
            .values({ app_id: null, user_id: `u${i}`, epoch: i + 1, reason: null, created_at: 1, created_by: null })
            .returning("id")
            .executeTakeFirstOrThrow();
          ids.push(r.id);
        }
        assert.equal(typeof ids[0], "number");
        assert.deepEqual(
          ids,
          [...ids].sort((a, b) => a - b),
        );
        assert.equal(new Set(ids).size, 3);
        const cmd = await control
          .insertInto("commands")
          .values({
            id: "cmd_1",
            kind: "reload_configs",
            payload: "{}",
            target_node_id: null,
            created_at: 1,
            created_by: null,
            expires_at: null,
          })
          .returning("seq")
          .executeTakeFirstOrThrow();
        assert.equal(typeof cmd.seq, "number");
      });

      test("a precompiled query runs with each call's values, keeps its constants and refuses a missing value", async () => {
        const findAgent = precompiled<{ username: string; role: string }, { id: string }>((db: Kysely<ControlSchema>, p) =>
          db.selectFrom("agents").select("id").where("username", "=", p.username).where("role", "=", p.role).where("status", "=", "active"),
        );
        const agent = {
          display_name: null,
          password_hash: "x",
          created_at: 1,
          updated_at: 1,
          created_by: null,
          password_changed_at: 1,
          last_login_at: null,
        };
        await control
          .insertInto("agents")
          .values([
            { ...agent, id: "agt_pc1", username: "pc-one", role: "admin", status: "active" },
            { ...agent, id: "agt_pc2", username: "pc-two", role: "viewer", status: "active" },
            { ...agent, id: "agt_pc3", username: "pc-three", role: "viewer", status: "disabled" },
          ])
          .execute();
        assert.deepEqual((await findAgent(control, { username: "pc-one", role: "admin" })).rows, [{ id: "agt_pc1" }]);
        assert.deepEqual((await findAgent(control, { username: "pc-two", role: "viewer" })).rows, [{ id: "agt_pc2" }]);
        assert.deepEqual(
          (await findAgent(control, { username: "pc-three", role: "viewer" })).rows,
          [],
          "the constant status filter still applies",
        );
        assert.deepEqual((await findAgent(control, { username: "' or 1=1 --", role: "admin" })).rows, [], "values stay parameters");
        await assert.rejects(findAgent(control, { username: "pc-one" } as never), /no value for parameter "role"/);
        const rename = precompiled<{ id: string; name: string | null }, unknown>((db: Kysely<ControlSchema>, p) =>
          db.updateTable("agents").set({ display_name: p.name }).where("id", "=", p.id),
        );
        assert.equal(Number((await rename(control, { id: "agt_pc2", name: "Two" })).numAffectedRows), 1);
        assert.equal(Number((await rename(control, { id: "agt_none", name: null })).numAffectedRows), 0);
        const row = await control.selectFrom("agents").select("display_name").where("id", "=", "agt_pc2").executeTakeFirstOrThrow();
        assert.equal(row.display_name, "Two");
        const folded = precompiled<{ prefix: string }, { id: string }>((db: Kysely<ControlSchema>, p) =>
          db.selectFrom("agents").select("id").where("username", "like", `${p.prefix}%`),
        );
        await assert.rejects(folded(control, { prefix: "pc-" }), /placeholder used inside a larger value/);
      });

      test("unique violations are recognised on this dialect", async () => {
        const agent = {
          id: "agt_a",
          username: "dup",
          display_name: null,
          password_hash: "x",
          role: "admin",
          status: "active",
          created_at: 1,
          updated_at: 1,
          created_by: null,
          password_changed_at: 1,
          last_login_at: null,
        };
        await control.insertInto("agents").values(agent).execute();
        await assert.rejects(
          control
            .insertInto("agents")
            .values({ ...agent, id: "agt_b" })
            .execute(),
          (e) => isUniqueViolation(e),
        );
      });

      test("live application names are unique but the recycle bin may hold a namesake", async () => {
        const app = {
          id: "app_1",
          name: "Same",
          description: null,
          secret_hash: "h",
          status: "active",
          created_at: 1,
          updated_at: 1,
          created_by: null,
          deleted_at: 5,
          deleted_by: null,
        };
        await control.insertInto("applications").values(app).execute();
        await control
          .insertInto("applications")
          .values({ ...app, id: "app_2", deleted_at: null })
          .execute();
        await assert.rejects(
          control
            .insertInto("applications")
            .values({ ...app, id: "app_3", deleted_at: null })
            .execute(),
          (e) => isUniqueViolation(e),
        );
      });

      test("foreign keys cascade: deleting a node removes its deploy packages", async () => {
        await control
          .insertInto("nodes")
          .values({
            id: "nod_1",
            name: "n1",
            host: "h",
            business_port: 8443,
            status: "active",
            created_at: 1,
            updated_at: 1,
            created_by: null,
            server_cert_id: null,
            client_cert_id: null,
            previous_client_cert_id: null,
            last_checkin_at: null,
            sse_connected: 0,
            sse_changed_at: null,
            ocsp_last_applied_at: null,
            software_version: null,
            metadata: null,
            metrics: null,
            app_versions: null,
            online_users: 0,
          })
          .execute();
        await control
          .insertInto("deploy_packages")
          .values({
            id: "pkg_1",
            node_id: "nod_1",
            job_id: null,
            created_at: 1,
            sha256: "x",
            size_bytes: 1,
            archive_ciphertext: Buffer.from("a"),
            downloaded_at: null,
            superseded_at: null,
          })
          .execute();
        await control.deleteFrom("nodes").where("id", "=", "nod_1").execute();
        assert.equal((await control.selectFrom("deploy_packages").selectAll().execute()).length, 0);
      });

      test("runtime tables accept and return their rows", async () => {
        await runtime
          .insertInto("users")
          .values({
            id: "usr_1",
            app_id: "app_1",
            username: "Alice",
            username_normalized: "alice",
            email: null,
            password_hash: "$authnexus-fast-hmac-sha256$v=1$00$00",
            auth_epoch: 3,
            status: "active",
            invite_code_id: null,
            created_at: 1,
            updated_at: 1,
            last_login_at: null,
          })
          .execute();
        await assert.rejects(
          runtime
            .insertInto("users")
            .values({
              id: "usr_2",
              app_id: "app_1",
              username: "ALICE",
              username_normalized: "alice",
              email: null,
              password_hash: "x",
              auth_epoch: 0,
              status: "active",
              invite_code_id: null,
              created_at: 1,
              updated_at: 1,
              last_login_at: null,
            })
            .execute(),
          (e) => isUniqueViolation(e),
        );
        await runtime
          .insertInto("sync_cursors")
          .values({ node_id: "nod_1", stream: "auth_epoch", cursor: 2 ** 40, updated_at: 1 })
          .execute();
        const cursor = await runtime.selectFrom("sync_cursors").select("cursor").executeTakeFirstOrThrow();
        assert.equal(cursor.cursor, 2 ** 40);
      });
    });
  });
}
