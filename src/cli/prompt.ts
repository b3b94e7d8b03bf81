/** Reads secrets without echoing them, or from stdin when scripted. */
import readline from "node:readline";
import { Writable } from "node:stream";

export async function readAllStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

export async function promptHidden(question: string): Promise<string> {
  if (!process.stdin.isTTY) throw new Error("no terminal to prompt on: pass the password with --password-stdin");
  let muted = false;
  const output = new Writable({
    write(chunk, _encoding, callback) {
      if (!muted) process.stderr.write(chunk);
      callback();
    },
  });
  const rl = readline.createInterface({ input: process.stdin, output, terminal: true });
  try {
    const answer = new Promise<string>((resolve) => rl.question(question, resolve));
    muted = true;
    const value = await answer;
    process.stderr.write("\n");
    return value;
  } finally {
    rl.close();
  }
}
