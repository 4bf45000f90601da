// One JSON line per event a test counts or asserts on; never a token, code or secret.

import { appendFileSync } from 'node:fs';

import { clientAuthUsed, withoutUndefined } from './clients.js';

export function eventRecorder(path) {
  // Appended synchronously, one write per line: a test reading the file right after an
  // HTTP reply sees every event that reply caused.
  return (event, fields = {}) => {
    const line = `${JSON.stringify({ ts: Date.now() / 1000, event, ...fields })}\n`;
    if (path) {
      appendFileSync(path, line);
    } else {
      process.stdout.write(line);
    }
  };
}

// Outcomes of the endpoints that have no success event of their own.
export function endpointOutcomes(record) {
  const logged = new Set(['revocation', 'introspection', 'userinfo']);
  return async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (!logged.has(route)) {
      return;
    }
    const entities = ctx.oidc.entities ?? {};
    record(route, withoutUndefined({
      status: ctx.status,
      client_id: ctx.oidc.client?.clientId,
      client_auth: route === 'userinfo' ? undefined : clientAuthUsed(ctx),
      token_type_hint: ctx.oidc.params?.token_type_hint,
      token_kind: ['RefreshToken', 'AccessToken'].find((kind) => kind in entities),
      active: route === 'introspection' ? ctx.body?.active : undefined,
    }));
  };
}

function errorFields(ctx, error) {
  return withoutUndefined({
    client_id: ctx?.oidc?.client?.clientId,
    client_auth: ctx?.oidc ? clientAuthUsed(ctx) : undefined,
    grant_type: ctx?.oidc?.params?.grant_type,
    error: error?.error ?? error?.name,
    error_description: error?.error_description,
    // oidc-provider's own reason behind a generic description ("refresh token already used").
    error_detail: error?.error_detail,
  });
}

export function recordEvents(provider, record) {
  provider.on('grant.success', (ctx) => record('grant.success', {
    client_id: ctx.oidc.client?.clientId,
    client_auth: clientAuthUsed(ctx),
    grant_type: ctx.oidc.params?.grant_type,
  }));
  for (const event of [
    'grant.error', 'authorization.error', 'introspection.error', 'revocation.error',
    'userinfo.error', 'end_session.error', 'end_session_confirm.error', 'discovery.error',
    'jwks.error', 'server_error',
  ]) {
    provider.on(event, (ctx, error) => record(event, errorFields(ctx, error)));
  }
  provider.on('authorization.success', (ctx) => record('authorization.success', {
    client_id: ctx.oidc.client?.clientId,
  }));
  provider.on('end_session.success', (ctx) => record('end_session.success', withoutUndefined({
    client_id: ctx.oidc.client?.clientId,
  })));
  provider.on('backchannel.success', (ctx, client, accountId) => record('backchannel.success', {
    client_id: client.clientId,
    account_id: accountId,
  }));
  provider.on('backchannel.error', (ctx, error, client, accountId) => record('backchannel.error', {
    client_id: client.clientId,
    account_id: accountId,
    error: error?.message,
  }));
  provider.on('grant.revoked', () => record('grant.revoked'));
  provider.on('refresh_token.consumed', (token) => record('refresh_token.consumed', {
    client_id: token.clientId,
  }));
}
