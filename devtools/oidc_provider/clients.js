// The clients this peer knows and how they authenticate at its endpoints.

import { readFileSync } from 'node:fs';

import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

export function withoutUndefined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

export function clientMetadata(spec) {
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

export class Clients {
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

export function basicClientId(ctx) {
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

export function clientAuthUsed(ctx) {
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

export function strictBasic(clients, record) {
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
