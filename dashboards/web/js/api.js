// JSON API client. Same origin, session cookie (HttpOnly) authenticates.

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message || code || `HTTP ${status}`);
    this.status = status; // 0 = network failure
    this.code = code || (status ? `http_${status}` : 'network');
    this.field = field || null;
  }
}

let onUnauthorized = () => {};
/** Called on any 401 from an authenticated call (session expired / signed out elsewhere). */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function request(method, path, body, { headers = {}, quiet401 = false } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(new URL(path, document.baseURI), init);
  } catch (e) {
    throw new ApiError(0, 'network', 'The hub cannot be reached. Check the connection and try again.');
  }
  let data = null;
  const text = await res.text().catch(() => '');
  if (text) { try { data = JSON.parse(text); } catch { data = null; } }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    const e = new ApiError(res.status, err.code, err.message || defaultMessage(res.status), err.field);
    e.retryAfter = res.headers.get('Retry-After');
    if (res.status === 401 && !quiet401) onUnauthorized(e);
    throw e;
  }
  return { status: res.status, data };
}

function defaultMessage(status) {
  switch (status) {
    case 401: return 'You are not signed in.';
    case 403: return 'You may not do this.';
    case 404: return 'Not found, or not shared with you.';
    case 409: return 'This conflicts with the current state; reload and try again.';
    case 429: return 'Too many requests; wait a moment and try again.';
    default: return status >= 500 ? `The hub had an internal error (HTTP ${status}).` : `Request failed (HTTP ${status}).`;
  }
}

export const api = {
  session: () => request('GET', 'api/v1/session', undefined, { quiet401: true }),
  signIn: (id, password) => request('POST', 'api/v1/session', { id, password }, { quiet401: true }),
  signOut: () => request('DELETE', 'api/v1/session', undefined, { quiet401: true }),
  network: () => request('GET', 'api/v1/network'),
  incidents: (params) => request('GET', 'api/v1/incidents?' + new URLSearchParams(params)),
  incident: (id) => request('GET', `api/v1/incidents/${encodeURIComponent(id)}`),
  raise: (body, idemKey) => request('POST', 'api/v1/incidents', body, { headers: idemKey ? { 'Idempotency-Key': idemKey } : {} }),
  ack: (id) => request('POST', `api/v1/incidents/${encodeURIComponent(id)}/ack`, {}),
  note: (id, text) => request('POST', `api/v1/incidents/${encodeURIComponent(id)}/notes`, { text }),
  resolve: (id, reason) => request('POST', `api/v1/incidents/${encodeURIComponent(id)}/resolve`, reason ? { reason } : {}),
  cancel: (id, reason) => request('POST', `api/v1/incidents/${encodeURIComponent(id)}/cancel`, reason ? { reason } : {}),
};
