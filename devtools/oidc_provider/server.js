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
//   users: [{id, password, email, name, groups, claims (more claims, any JSON)}],
//   scope_claims (optional: more scopes and the claims they release, {"roles": ["realm_access"]})
//   delays_file (optional: token replies to hold back, by grant type; see delays.js)
//
// oidc-provider takes a client_secret_basic client's secret from the form body too; this
// peer refuses an Authorization: Basic header from a client registered for another method,
// as stricter providers (JupyterHub) do, and every event line says which client
// authentication the request actually used (`client_auth`).
//
// Login and consent are two plain HTML forms at /interaction/<uid> that a test can post to
// without a browser (interactions.js). Event lines (events.js) never carry tokens, codes,
// secrets or passwords. clients.js knows the clients and how they authenticate.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

import { Clients, strictBasic, withoutUndefined } from './clients.js';
import { delayedTokenReplies } from './delays.js';
import { endpointOutcomes, eventRecorder, recordEvents } from './events.js';
import { interactions } from './interactions.js';

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

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomBytes(8).toString('hex');
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
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
        ...user.claims,
      }),
    };
  };
}

function main() {
  const config = readConfig(process.argv[2]);
  const record = eventRecorder(config.event_log);
  const users = new Map(config.users.map((user) => [user.id, user]));
  const clients = new Clients(config.clients ?? [], config.clients_file);
  const scopeClaims = config.scope_claims ?? {};
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
    scopes: [
      'openid', 'offline_access', 'profile', 'email', 'groups', ...Object.keys(scopeClaims),
    ],
    claims: {
      acr: null,
      auth_time: null,
      iss: null,
      sid: null,
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
      ...scopeClaims,
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
  // Outermost: a held-back reply is one the provider has fully processed and recorded.
  provider.use(delayedTokenReplies(config.delays_file));
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
