/** A JSON text column as the API shows it; a malformed value (a node wrote it) reads as null rather than breaking the view. */
export function parseJsonColumn(text: string | null): unknown {
  if (text === null) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}
