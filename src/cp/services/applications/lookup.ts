/** Whether an application exists and is live: the checks every service that acts on one starts with. */
import type { Kysely } from "kysely";
import type { ControlSchema } from "../../../shared/db/index.js";
import { AuthNexusError } from "../../../shared/errors/index.js";

export async function requireApplication(db: Kysely<ControlSchema>, appId: string): Promise<{ deleted_at: number | null }> {
  const app = await db.selectFrom("applications").select("deleted_at").where("id", "=", appId).executeTakeFirst();
  if (!app) throw new AuthNexusError("NOT_FOUND", { message: "Application not found." });
  return app;
}

/** The application exists and is not in the recycle bin (409 APPLICATION_DELETED when it is). */
export async function requireLiveApplication(db: Kysely<ControlSchema>, appId: string): Promise<void> {
  const app = await requireApplication(db, appId);
  if (app.deleted_at !== null) throw new AuthNexusError("APPLICATION_DELETED");
}
