// Fault injection around oidc-provider: token replies held back after the provider has
// done its work, as from a provider that stalls after rotating a refresh token. The
// provider itself is not changed; only when its answer leaves is.
//
// The delays file (optional, read at every token request so a test can change it at once):
//   {"refresh_token": SECONDS, "authorization_code": SECONDS}   (grant type -> delay)

import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

// Bounded so a broken test cannot hang a request longer than any client waits.
const MAX_DELAY_SECONDS = 60;

function delayFor(file, grantType) {
  let delays;
  try {
    delays = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return 0; // no file (or one being replaced): no delay
  }
  const seconds = Number(delays?.[grantType] ?? 0);
  return Number.isFinite(seconds) ? Math.min(Math.max(seconds, 0), MAX_DELAY_SECONDS) : 0;
}

export function delayedTokenReplies(file) {
  return async (ctx, next) => {
    await next();
    if (!file || ctx.oidc?.route !== 'token') {
      return;
    }
    const seconds = delayFor(file, ctx.oidc.params?.grant_type);
    if (seconds > 0) {
      await sleep(seconds * 1000);
    }
  };
}
