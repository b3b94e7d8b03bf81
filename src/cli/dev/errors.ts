/**
 * How `authnexus dev` fails: a DevError is one line for the operator (main prints it and exits
 * 1), never a stack trace; DevInterrupted ends a start that SIGINT/SIGTERM cut short.
 */

export class DevError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DevError";
  }
}

export class DevInterrupted extends Error {
  constructor() {
    super("stopped before the deployment was ready");
    this.name = "DevInterrupted";
  }
}
