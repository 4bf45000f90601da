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
//   clients_file (optional: a JSON file with more such clients, read at every lookup, so a
//                 test can register a client once it knows the client's URLs),
//   users: [{id, password, email, name, groups}]
//
// oidc-provider takes a client_secret_basic client's secret from the form body too; this
// peer refuses an Authorization: Basic header from a client registered for another method,
// as stricter providers (JupyterHub) do, and every event line says which client
// authentication the request actually used (`client_auth`).
//
// Login and consent are two plain HTML forms at /interaction/<uid> that a test can post to
// without a browser. Event lines never carry tokens, codes, secrets or passwords.

import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';

import Provider from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const MAX_FORM_BYTES = 16 * 1024;
// Longer than oidc-provider's own 2.5 s: a back-channel logout on a busy test machine
// goes through Envoy, the login app and Redis before it is answered.
const FETCH_TIMEOUT_MS = 10_000;

function readConfig(path) {
  if (!path) {
    throw new Error('usage: node server.js CONFIG.json');
  }
  const config = JSON.parse(readFileSync(path, 'utf8'));
  for (const key of ['port', 'issuer', 'users']) {
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

class Clients {
  constructor(staticSpecs, file) {
    this.static = staticSpecs.map(clientMetadata);
    this.file = file;
  }

  fromFile() {
    if (!this.file) {
      return [];
    }
    try {
      return JSON.parse(readFileSync(this.file, 'utf8')).map(clientMetadata);
    } catch (error) {
      if (error.code === 'ENOENT') {
        return [];
      }
      throw error;
    }
  }

  find(clientId) {
    return [...this.static, ...this.fromFile()].find((spec) => spec.client_id === clientId);
  }

  // oidc-provider asks its adapter for clients it was not given at start.
  adapter() {
    const clients = this;
    return class extends MemoryAdapter {
      constructor(model) {
        super(model);
        this.model = model;
      }

      async find(id) {
        if (this.model === 'Client') {
          return clients.fromFile().find((spec) => spec.client_id === id);
        }
        return super.find(id);
      }
    };
  }
}

function basicClientId(ctx) {
  const [scheme, value] = (ctx.headers.authorization ?? '').split(' ');
  if (scheme?.toLowerCase() !== 'basic' || !value) {
    return undefined;
  }
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  try {
    // RFC 6749 §2.3.1: the id is form-encoded before it is put in the header.
    return colon < 0 ? undefined : decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

function clientAuthUsed(ctx) {
  if (basicClientId(ctx) !== undefined) {
    return 'client_secret_basic';
  }
  const params = ctx.oidc?.params ?? {};
  if (params.client_assertion) {
    return ctx.oidc.client?.clientAuthMethod === 'client_secret_jwt'
      ? 'client_secret_jwt' : 'private_key_jwt';
  }
  return params.client_secret ? 'client_secret_post' : 'none';
}

// Endpoints where a client authenticates.
const AUTHENTICATED_PATHS = new Set(['/token', '/token/revocation', '/token/introspection']);

function strictBasic(clients, record) {
  return async (ctx, next) => {
    const clientId = AUTHENTICATED_PATHS.has(ctx.path) ? basicClientId(ctx) : undefined;
    const method = clientId === undefined
      ? undefined : clients.find(clientId)?.token_endpoint_auth_method;
    if (method !== undefined && method !== 'client_secret_basic') {
      record('client_auth.refused', {
        path: ctx.path, client_id: clientId, client_auth: 'client_secret_basic', registered: method,
      });
      ctx.status = 401;
      ctx.body = {
        error: 'invalid_client',
        error_description: `this client authenticates with ${method}`,
      };
      return undefined;
    }
    return next();
  };
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

function recordEvents(provider, record) {
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
  const clients = new Clients(config.clients ?? [], config.clients_file);
  const provider = new Provider(config.issuer, {
    clients: clients.static,
    adapter: clients.adapter(),
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
  provider.use(strictBasic(clients, record));
  provider.use(endpointOutcomes(record));
  provider.use(interactions(provider, users, record));
  recordEvents(provider, record);
  const host = config.host ?? '127.0.0.1';
  provider.listen(Number(config.port), host, () => {
    process.stdout.write(`oidc-provider listening on http://${host}:${config.port}\n`);
  });
}

main();
