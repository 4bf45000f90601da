// Login and consent as two plain HTML forms at /interaction/<uid>: a test posts them
// with any HTTP client, no browser needed.

import { createHash, timingSafeEqual } from 'node:crypto';

const MAX_FORM_BYTES = 16 * 1024;

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

export function interactions(provider, users, record) {
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
