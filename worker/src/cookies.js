// Cookies, sorted by what they say about the caller:
// - ignored (IGNORED_COOKIES: analytics, Cloudflare's own): carry no identity;
//   neither keyed nor forwarded, so the origin's answer cannot depend on them;
// - routing (UNKEYED_COOKIES: the load balancer's affinity cookie): forwarded,
//   not keyed, never make a request private;
// - every other cookie is a credential: it is forwarded and scopes the key.
//   A session cookie whose name nobody listed is therefore never shared.

export function splitCookies(cfg, header) {
  const credentials = [];
  const routing = [];
  for (const part of header.split(";")) {
    const pair = part.trim();
    if (!pair) continue;
    const eq = pair.indexOf("=");
    const name = eq < 0 ? pair : pair.slice(0, eq).trim();
    if (cfg.unkeyedCookies.has(name)) routing.push(pair);
    else if (!cfg.ignoredCookies.matches(name)) credentials.push(pair);
  }
  return { credentials, routing };
}

// Set-Cookie names an answer may carry and still be stored: only the routing
// cookies (they go to the caller of that fetch, never into the entry).
export function onlyRoutingCookies(cfg, setCookies) {
  return setCookies.every((c) => cfg.unkeyedCookies.has(c.slice(0, Math.max(0, c.indexOf("="))).trim()));
}
