/**
 * Channel 1 commands, node side: pull what was queued after this node's command cursor, run
 * each through its handler, report the result, then move the cursor (persisted in the Runtime
 * DB's sync_cursors, stream "commands"). The order matters: a command is executed once, its
 * result is kept until the CP accepts it (a failed report is retried, never re-executed), and
 * only then does the cursor pass it. A crash between the accepted report and the cursor write
 * is harmless: the CP never hands out a command the node already reported.
 */
import type { Kysely } from "kysely";
import type { RuntimeSchema } from "../../shared/db/index.js";
import type { Logger } from "../../shared/log/index.js";
import {
  COMMAND_PAYLOADS,
  type CommandKind,
  type CommandResultRequest,
  MAX_COMMAND_OUTPUT_BYTES,
  type PulledCommand,
} from "../../shared/node-protocol/index.js";
import type { Clock } from "../../shared/time/index.js";
import type { BusinessPlane } from "../business/business-plane.js";
import { readCursor, writeCursor } from "../state/runtime-sync.js";
import { CpCallError } from "./cp-call-error.js";
import type { CpClient } from "./cp-client.js";

type Payload<K extends CommandKind> = ReturnType<(typeof COMMAND_PAYLOADS)[K]["parse"]>;

/** Runs one command kind; returns the output to report, throws to report "failed". */
export type CommandHandler<K extends CommandKind> = (payload: Payload<K>, command: PulledCommand) => Promise<unknown>;
export type CommandHandlers = { [K in CommandKind]: CommandHandler<K> };

export interface CommandOutcome {
  status: CommandResultRequest["status"];
  output: unknown;
}

/** The handlers a node runs today: configs reload here, the rest go to the business plane. */
export function createCommandHandlers(deps: { business: BusinessPlane; reloadConfigs: () => Promise<unknown> }): CommandHandlers {
  return {
    reload_configs: () => deps.reloadConfigs(),
    force_logout: (payload) => deps.business.forceLogout(payload),
    announcement: (payload) => deps.business.announce(payload),
    kill_process: (payload) => deps.business.killProcess(payload),
  };
}

export interface CommandRunnerOptions {
  nodeId: string;
  db: Kysely<RuntimeSchema>;
  client: Pick<CpClient, "pullCommands" | "reportCommandResult">;
  clock: Clock;
  log: Logger;
  handlers: CommandHandlers;
  onReported?: (report: { command: PulledCommand; outcome: CommandOutcome }) => void;
}

interface PendingReport {
  command: PulledCommand;
  outcome: CommandOutcome;
}

export class CommandRunner {
  private cursor_ = 0;
  private loaded = false;
  /** Executed commands whose result the CP has not accepted yet, in seq order. */
  private readonly pending = new Map<string, PendingReport>();
  private executed = 0;

  constructor(private readonly options: CommandRunnerOptions) {}

  get cursor(): number {
    return this.cursor_;
  }

  get executedCount(): number {
    return this.executed;
  }

  get pendingReports(): number {
    return this.pending.size;
  }

  async load(): Promise<void> {
    this.cursor_ = await readCursor(this.options.db, this.options.nodeId, "commands");
    this.loaded = true;
  }

  /** Reports what is still unreported, then pulls, runs and reports every new command. */
  async pull(): Promise<{ executed: number }> {
    if (!this.loaded) await this.load();
    for (const report of [...this.pending.values()]) await this.deliver(report);
    let executed = 0;
    for (;;) {
      const page = await this.options.client.pullCommands(this.cursor_);
      for (const command of [...page.commands].sort((a, b) => a.seq - b.seq)) {
        if (command.seq <= this.cursor_ || this.pending.has(command.id)) continue;
        const report = { command, outcome: await this.execute(command) };
        executed += 1;
        this.pending.set(command.id, report);
        await this.deliver(report);
      }
      if (page.next_since > this.cursor_) await this.advance(page.next_since);
      if (!page.has_more || page.commands.length === 0) break;
    }
    return { executed };
  }

  /** Validates and runs one command; never throws (a failure is an outcome to report). */
  async execute(command: PulledCommand): Promise<CommandOutcome> {
    const { log, clock } = this.options;
    this.executed += 1;
    if (command.expires_at !== null && command.expires_at <= clock.now()) {
      return { status: "rejected", output: { error: "command expired before it reached the node", expires_at: command.expires_at } };
    }
    const parsed = COMMAND_PAYLOADS[command.kind].safeParse(command.payload);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const reason = `${issue?.path.length ? `${issue.path.join(".")}: ` : ""}${issue?.message ?? "invalid payload"}`;
      log.warn("command.rejected", { command_id: command.id, kind: command.kind, reason });
      return { status: "rejected", output: { error: `invalid payload: ${reason}` } };
    }
    const handler = this.options.handlers[command.kind] as CommandHandler<CommandKind>;
    try {
      const output = await handler(parsed.data as Payload<CommandKind>, command);
      log.info("command.executed", { command_id: command.id, kind: command.kind, seq: command.seq });
      return { status: "succeeded", output: boundedOutput(output) };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      log.warn("command.failed", { command_id: command.id, kind: command.kind, error: message });
      return { status: "failed", output: { error: message.slice(0, 2000) } };
    }
  }

  /**
   * Reports one result. Accepted, or refused for good (4xx: the command is gone, or the result
   * was already recorded) → the command is done and the cursor passes it. A retryable failure
   * propagates: the result stays pending and the loop retries with backoff.
   */
  private async deliver(report: PendingReport): Promise<void> {
    const { command, outcome } = report;
    try {
      await this.options.client.reportCommandResult(command.id, {
        status: outcome.status,
        ...(outcome.output === undefined ? {} : { output: outcome.output }),
      });
    } catch (error) {
      if (!(error instanceof CpCallError) || error.retryable) throw error;
      this.options.log.warn("command.result_refused", {
        command_id: command.id,
        status: error.status,
        code: error.code,
        error: error.message,
      });
    }
    this.pending.delete(command.id);
    this.options.onReported?.(report);
    if (command.seq > this.cursor_) await this.advance(command.seq);
  }

  private async advance(cursor: number): Promise<void> {
    await writeCursor(this.options.db, this.options.nodeId, "commands", cursor, this.options.clock.now());
    this.cursor_ = cursor;
  }
}

/** Keeps a handler's output within what the CP accepts. */
function boundedOutput(output: unknown): unknown {
  if (output === undefined) return undefined;
  const text = JSON.stringify(output);
  if (text === undefined) return undefined;
  return Buffer.byteLength(text) <= MAX_COMMAND_OUTPUT_BYTES ? output : { truncated: true, bytes: Buffer.byteLength(text) };
}
