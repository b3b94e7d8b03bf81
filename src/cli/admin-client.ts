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
