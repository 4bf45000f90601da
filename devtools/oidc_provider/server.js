// node oidc-provider (OpenID Certified, written by others) as a test peer for the gateway.
//
//   node server.js CONFIG.json
//
// CONFIG.json (everything the tests vary; see tests/support/oidc_provider.py):
//   port, host (default 127.0.0.1), issuer,
//   access_token_ttl (seconds, default 300; short for refresh tests),
//   event_log (a file to append one JSON line per event to; default stdout),
//   clients: [{client_id, client_secret, redirect_uris, post_logout_redirect_uris,
//              backchannel_logout_uri, token_endpoint_auth_method, jwks, ...more metadata}],
//   users: [{id, password, email, name, groups}]
//
// Login and consent are two plain HTML forms at /interaction/<uid> that a test can post to
// without a browser. Event lines never carry tokens, codes, secrets or passwords.

import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const MAX_FORM_BYTES = 16 * 1024;
// Longer than oidc-provider's own 2.5 s: a back-channel logout on a busy test machine
// goes through Envoy, the login app and Redis before it is answered.
const FETCH_TIMEOUT_MS = 10_000;

function readConfig(path) {
  if (!path) {
    throw new Error('usage: node server.js CONFIG.json');
  }
  const config = JSON.parse(readFileSync(path, 'utf8'));
  for (const key of ['port', 'issuer', 'clients', 'users']) {
    if (config[key] === undefined) {
      throw new Error(`${path}: "${key}" is missing`);
    }
  }
  return config;
}

function eventRecorder(path) {
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

function withoutUndefined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

function clientMetadata(spec) {
  const interactive = (spec.redirect_uris ?? []).length > 0;
  return withoutUndefined({
    // A client with no redirect URI only introspects (a resource server).
    grant_types: interactive ? ['authorization_code', 'refresh_token'] : [],
    response_types: interactive ? ['code'] : [],
    token_endpoint_auth_method: 'client_secret_basic',
    // The logout token then names the provider session (sid), which the gateway matches.
    backchannel_logout_session_required: spec.backchannel_logout_uri ? true : undefined,
    ...spec,
  });
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomBytes(8).toString('hex');
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
}

function sameSecret(given, expected) {
  const digest = (value) => createHash('sha256').update(String(value)).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><h1>${escapeHtml(title)}</h1>
${body}
</body></html>`;
}

function loginPage(uid, clientId, error) {
  const problem = error ? `<p class="error">${escapeHtml(error)}</p>` : '';
  return page(`Sign in to ${clientId}`, `${problem}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label>Username <input id="username" name="username" required autofocus></label>
  <label>Password <input id="password" name="password" type="password" required></label>
  <button type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, clientId, scopes) {
  const items = scopes.map((scope) => `<li>${escapeHtml(scope)}</li>`).join('');
  return page(`Authorize ${clientId}`, `<p>${escapeHtml(clientId)} asks for:</p>
<ul class="scopes">${items}</ul>
<form method="post" action="/interaction/${escapeHtml(uid)}/confirm">
  <button type="submit" name="consent" value="allow">Allow</button>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort">
  <button type="submit">Deny</button>
</form>`);
}

async function formBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) {
      throw new Error('form too large');
    }
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function interactions(provider, users, record) {
  const route = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/;

  async function finish(ctx, result) {
    ctx.status = 303;
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result));
  }

  async function login(ctx, details) {
    const form = await formBody(ctx.req);
    const user = users.get(form.get('username') ?? '');
    if (!user || !sameSecret(form.get('password') ?? '', user.password)) {
      record('login.failed', { client_id: details.params.client_id });
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, details.params.client_id, 'Wrong username or password.');
      return;
    }
    record('login.success', { client_id: details.params.client_id, account_id: user.id });
    await finish(ctx, { login: { accountId: user.id } });
  }

  async function confirm(ctx, details) {
    await formBody(ctx.req);
    const { prompt, params, session } = details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    // Grant what was asked and is still missing: the user clicked "Allow" for all of it.
    if (prompt.details.missingOIDCScope) {
      grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    }
    if (prompt.details.missingOIDCClaims) {
      grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    }
    for (const [resource, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    const grantId = await grant.save();
    record('consent.given', { client_id: params.client_id, account_id: session.accountId });
    await finish(ctx, { consent: details.grantId ? {} : { grantId } });
  }

  return async (ctx, next) => {
    const match = route.exec(ctx.path);
    if (!match) {
      return next();
    }
    const [, , action] = match;
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const clientId = details.params.client_id;
    if (ctx.method === 'GET' && !action) {
      ctx.type = 'html';
      if (details.prompt.name === 'login') {
        ctx.body = loginPage(details.uid, clientId);
      } else {
        const scopes = details.prompt.details.missingOIDCScope ?? [];
        ctx.body = consentPage(details.uid, clientId, scopes);
      }
      return undefined;
    }
    if (ctx.method !== 'POST' || !action) {
      ctx.throw(405);
    }
    if (action === 'login' && details.prompt.name === 'login') {
      return login(ctx, details);
    }
    if (action === 'confirm' && details.prompt.name === 'consent') {
      return confirm(ctx, details);
    }
    if (action === 'abort') {
      record('consent.denied', { client_id: clientId });
      return finish(ctx, { error: 'access_denied', error_description: 'the user said no' });
    }
    return ctx.throw(400, `this interaction expects ${details.prompt.name}`);
  };
}

// Outcomes of the endpoints that have no success event of their own.
function endpointOutcomes(record) {
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
      token_type_hint: ctx.oidc.params?.token_type_hint,
      token_kind: ['RefreshToken', 'AccessToken'].find((kind) => kind in entities),
      active: route === 'introspection' ? ctx.body?.active : undefined,
    }));
  };
}

function errorFields(ctx, error) {
  return withoutUndefined({
    client_id: ctx?.oidc?.client?.clientId,
    grant_type: ctx?.oidc?.params?.grant_type,
    error: error?.error ?? error?.name,
    error_description: error?.error_description,
    // oidc-provider's own reason behind a generic description ("refresh token already used").
    error_detail: error?.error_detail,
  });
}

function recordEvents(provider, record) {
  provider.on('grant.success', (ctx) => record('grant.success', {
    client_id: ctx.oidc.client?.clientId,
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

// The gateway under test listens on loopback, which oidc-provider's fetch refuses to reach
// (its SSRF guard): back-channel logout needs it. Nothing here fetches anything else.
function loopbackFetch(url, options) {
  const { dispatcher, ...rest } = options;
  return globalThis.fetch(url, { ...rest, signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
}

function accountFinder(users) {
  return async (ctx, id) => {
    const user = users.get(id);
    if (!user) {
      return undefined;
    }
    return {
      accountId: id,
      // oidc-provider keeps only the claims the granted scopes (and `claims`) allow.
      claims: async () => withoutUndefined({
        sub: id,
        preferred_username: id,
        name: user.name,
        email: user.email,
        email_verified: user.email ? true : undefined,
        groups: user.groups ?? [],
      }),
    };
  };
}

function main() {
  const config = readConfig(process.argv[2]);
  const record = eventRecorder(config.event_log);
  const users = new Map(config.users.map((user) => [user.id, user]));
  const provider = new Provider(config.issuer, {
    clients: config.clients.map(clientMetadata),
    findAccount: accountFinder(users),
    jwks: { keys: [signingKey()] },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      // Cookies ignore ports: on 127.0.0.1 these reach every test server, so keep them
      // apart from the gateway's and the dev IdPs'.
      names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_resume' },
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    claims: {
      acr: null,
      auth_time: null,
      iss: null,
      sid: null,
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      userinfo: { enabled: true },
    },
    pkce: { required: () => true },
    // oidc-provider drops offline_access unless the request says prompt=consent; refresh
    // tokens are issued to every client allowed the refresh_token grant instead.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Every use rotates, and a used refresh token presented again revokes the whole grant
    // (reuse detection): a gateway refreshing twice with one token breaks its own session.
    rotateRefreshToken: true,
    ttl: { AccessToken: Number(config.access_token_ttl ?? 300) },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    fetch: loopbackFetch,
  });
  provider.use(endpointOutcomes(record));
  provider.use(interactions(provider, users, record));
  recordEvents(provider, record);
  const host = config.host ?? '127.0.0.1';
  provider.listen(Number(config.port), host, () => {
    process.stdout.write(`oidc-provider listening on http://${host}:${config.port}\n`);
  });
}

main();
