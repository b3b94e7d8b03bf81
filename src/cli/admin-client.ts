/** A small client for the admin API, used by the `ops` and `pki` commands. */
export class AdminApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export async function adminRequest<T>(
  baseUrl: string,
  method: string,
  path: string,
  options: { body?: unknown; token?: string } = {},
): Promise<T> {
  const headers: Record<string, string> = {};
  if (options.body !== undefined) headers["content-type"] = "application/json";
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let response: Response;
  try {
    response = await fetch(new URL(path, baseUrl), {
      method,
      headers,
      ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
    });
  } catch (cause) {
    throw new AdminApiError(
      0,
      "UNREACHABLE",
      `cannot reach the admin API at ${baseUrl}: ${(cause as Error).cause ?? (cause as Error).message}`,
    );
  }
  const text = await response.text();
  const json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  if (!response.ok) throw new AdminApiError(response.status, String(json.error ?? response.status), String(json.message ?? text));
  return json as T;
}

/** A GET whose answer is a file (a deploy package, a CSV export): the bytes and the headers. */
export async function adminDownload(baseUrl: string, path: string, token: string): Promise<{ body: Buffer; headers: Headers }> {
  let response: Response;
  try {
    response = await fetch(new URL(path, baseUrl), { headers: { authorization: `Bearer ${token}` } });
  } catch (cause) {
    throw new AdminApiError(
      0,
      "UNREACHABLE",
      `cannot reach the admin API at ${baseUrl}: ${(cause as Error).cause ?? (cause as Error).message}`,
    );
  }
  const body = Buffer.from(await response.arrayBuffer());
  if (!response.ok) {
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
    } catch {
      // not JSON: the status says enough
    }
    throw new AdminApiError(response.status, String(json.error ?? response.status), String(json.message ?? body.toString("utf8")));
  }
  return { body, headers: response.headers };
}
