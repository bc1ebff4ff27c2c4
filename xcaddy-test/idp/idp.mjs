// A local OpenID Provider shaped like Scalekit, for the end-to-end tests of the
// oidc_auth Caddy module. Built on the npm package oidc-provider.
//
// It is a test fixture, not a product: users, clients and keys are throwaway,
// everything lives in memory, and a small admin API under /__test/ lets tests
// look inside and break things on purpose.
//
// Environment:
//   IDP_PORT         port on 127.0.0.1 to listen on (required); the issuer is
//                    http://127.0.0.1:$IDP_PORT
//   IDP_ISSUER       optional issuer override (e.g. http://localhost:9090 for a demo)
//   IDP_CLIENTS      path of a JSON file: an array of
//                    { client_id, client_secret, redirect_uris,
//                      post_logout_redirect_uris, backchannel_logout_uri?,
//                      token_endpoint_auth_method?, grant_types? }
//                    grant_types defaults to authorization_code + refresh_token;
//                    add client_credentials for machine tokens (their sub is
//                    the client_id)
//   IDP_AT_TTL       access token lifetime in seconds (default 3600)
//   IDP_KEYS_FILE    optional path; the signing JWKS is kept there so a restart
//                    keeps the same keys
//   IDP_PROFILE      how the IdP behaves (default scalekit); one of
//                      scalekit        JWT access tokens (aud [client_id]), refresh
//                                      tokens rotated on use, end_session, back-channel
//                      opaque          opaque access tokens (no resource indicators),
//                                      like Google or Auth0 without an API audience
//                      no-end-session  discovery without end_session_endpoint or
//                                      back/front-channel logout support, like Google
//                      no-refresh      no refresh token is ever issued
//                      no-rotation     refresh tokens are not rotated on use
//                      basic-only      token endpoint accepts client_secret_basic only
//                                      (announced so; clients default to it)
//                      es256           an ES256 (P-256) signing key; ID and access tokens
//                                      are ES256
//                      multi-key       several RS256 keys in the JWKS (the first signs)
//                      foreign-aud     JWT access tokens for an API, not for the client:
//                                      aud is the API, the client is in azp (Keycloak
//                                      without an audience mapper, Okta custom
//                                      authorization servers, Auth0 with an audience)
//                      resource-server like scalekit, plus: a `resource` other than
//                                      the default API gets JWT access tokens with
//                                      that resource as aud and the scopes
//                                      mcp:read mcp:write (as for an MCP server);
//                                      DPoP-bound tokens (cnf.jkt); acr values pwd
//                                      and mfa
//
// Routes (as Scalekit names them):
//   /oauth/authorize  /oauth/token  /oauth/revoke  /keys  /oidc/logout  /userinfo
//   /interaction/:uid          the login page (form fields login, password)
//
// Test-only admin API (JSON; no authentication, loopback only):
//   GET  /__test/stats         counters: token grants per type and client, grant
//                              errors, back-channel logout results, revoked grants,
//                              token requests failed on purpose
//   POST /__test/reset         zero the counters
//   POST /__test/revoke-user?sub=<sub>
//                              revoke every grant of that user, so its refresh
//                              and access tokens stop working
//   POST /__test/token-failure?status=<code>&count=<n>
//                              the next n requests to the token endpoint answer
//                              <code> (n=-1: until turned off with count=0)
//   GET  /__test/issued        every secret value handed out so far: authorization
//                              codes, access, refresh, ID and logout tokens
//   GET  /__test/refresh-tokens?sub=<sub>[&client_id=<id>]
//                              the refresh tokens issued to that user, each with
//                              whether it still works (not revoked, consumed or
//                              expired)
//   GET  /__test/profile       the profile, the signing alg and kid, the published
//                              kids, JWKS fetches, token endpoint client
//                              authentication styles seen (basic/post)
//   POST /__test/rotate-key    a fresh signing key (same alg) is published first in
//                              the JWKS and signs every token from now on; the older
//                              keys stay published
//   GET  /__test/idp-initiated?connection_id=&organization_id=&login_hint=
//                              &relay_state=&exp=<seconds from now>&iss=<override,
//                              "-" for none>&key=foreign
//                              a Scalekit-style idp_initiated_login JWT, signed with
//                              the active key (key=foreign: a key not in the JWKS)

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import Provider, { interactionPolicy } from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

const port = Number.parseInt(process.env.IDP_PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0) {
  console.error('IDP_PORT must be set to a port number');
  process.exit(2);
}
const issuer = process.env.IDP_ISSUER || `http://127.0.0.1:${port}`;
const accessTokenTTL = Number.parseInt(process.env.IDP_AT_TTL || '3600', 10);

const profiles = ['scalekit', 'opaque', 'no-end-session', 'no-refresh', 'no-rotation', 'basic-only', 'es256', 'multi-key', 'foreign-aud', 'resource-server'];
const profile = process.env.IDP_PROFILE || 'scalekit';
if (!profiles.includes(profile)) {
  console.error(`IDP_PROFILE must be one of ${profiles.join(', ')}`);
  process.exit(2);
}
const defaultAuthMethod = profile === 'basic-only' ? 'client_secret_basic' : 'client_secret_post';

// The audience every access token is minted for, before the customizer below
// replaces it with [client_id] the way Scalekit does.
const apiResource = `${issuer}/api`;
const oidcScopes = 'openid profile email offline_access';
// The scopes of any other resource (profile resource-server).
const resourceScopes = 'mcp:read mcp:write';

// ---------------------------------------------------------------- users

const users = [
  {
    sub: 'usr_alice',
    login: 'alice',
    password: 'alice-password',
    email: 'alice@example.com',
    name: 'Alice Example',
    given_name: 'Alice',
    family_name: 'Example',
    oid: 'org_1',
    roles: ['admin'],
    permissions: ['read', 'write', 'admin'],
    address: { country: 'NL', locality: 'Amsterdam' },
  },
  {
    sub: 'usr_bob',
    login: 'bob',
    password: 'bob-password',
    email: 'bob@example.org',
    name: 'Bob Sample',
    given_name: 'Bob',
    family_name: 'Sample',
    oid: 'org_2',
    roles: ['member'],
    permissions: ['read'],
    address: { country: 'US', locality: 'Boston' },
  },
  {
    sub: 'usr_carol',
    login: 'carol',
    password: 'carol-password',
    email: 'carol@example.com',
    name: 'Carol Editor',
    given_name: 'Carol',
    family_name: 'Editor',
    oid: 'org_2',
    roles: ['editor', 'viewer'],
    permissions: ['read', 'write'],
    address: { country: 'DE', locality: 'Berlin' },
  },
  {
    // Signed up by himself: an address of example.com that nobody
    // verified, and a display name with a line break and a NUL in it.
    sub: 'usr_dave',
    login: 'dave',
    password: 'dave-password',
    email: 'dave@example.com',
    email_verified: false,
    name: 'Dave\r\nX-Injected: 1\u0000',
    given_name: 'Dave',
    family_name: 'Self',
    oid: 'org_3',
    roles: ['member'],
    permissions: ['read'],
  },
];

const userBySub = (sub) => users.find((u) => u.sub === sub);

function userClaims(u) {
  return {
    sub: u.sub,
    email: u.email,
    email_verified: u.email_verified ?? true,
    name: u.name,
    given_name: u.given_name,
    family_name: u.family_name,
    preferred_username: u.login,
    oid: u.oid,
  };
}

async function findAccount(_ctx, sub) {
  const u = userBySub(sub);
  if (!u) return undefined;
  return {
    accountId: u.sub,
    async claims() {
      return userClaims(u);
    },
  };
}

// ---------------------------------------------------------------- clients

function loadClients() {
  const file = process.env.IDP_CLIENTS;
  if (!file) {
    console.error('IDP_CLIENTS must name a JSON file with the clients');
    process.exit(2);
  }
  const list = JSON.parse(fs.readFileSync(file, 'utf8'));
  return list.map((c) => {
    const out = {
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: c.redirect_uris ?? [],
      post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
      token_endpoint_auth_method: c.token_endpoint_auth_method ?? defaultAuthMethod,
      grant_types: c.grant_types ?? ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      backchannel_logout_session_required: true,
    };
    if (c.backchannel_logout_uri) out.backchannel_logout_uri = c.backchannel_logout_uri;
    return out;
  });
}

// ---------------------------------------------------------------- keys

function loadOrCreateKeys() {
  const file = process.env.IDP_KEYS_FILE;
  if (file && fs.existsSync(file)) {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const jwks = {
    keys: [{ ...jwk, kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' }],
  };
  if (file) fs.writeFileSync(file, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

function newSigningKey(alg) {
  const { privateKey } = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomBytes(8).toString('hex'), alg, use: 'sig' };
}

// The profile decides the keys: es256 signs with a P-256 key whatever the keys
// file holds, multi-key publishes at least three keys.
function profileKeys(set) {
  if (profile === 'es256') {
    const ec = set.keys.filter((k) => k.kty === 'EC' && k.crv === 'P-256');
    return { keys: ec.length ? ec : [newSigningKey('ES256')] };
  }
  const keys = set.keys.filter((k) => k.kty === 'RSA');
  if (profile === 'multi-key') {
    while (keys.length < 3) keys.push(newSigningKey('RS256'));
    return { keys };
  }
  return { keys: keys.slice(0, 1) };
}

const jwks = profileKeys(loadOrCreateKeys());
const signingAlg = jwks.keys[0].alg || 'RS256';
const publicKeys = new Map();
function indexPublicKeys() {
  for (const k of jwks.keys) {
    const { d, p, q, dp, dq, qi, ...pub } = k;
    if (!publicKeys.has(k.kid)) publicKeys.set(k.kid, crypto.createPublicKey({ key: pub, format: 'jwk' }));
  }
}
indexPublicKeys();

// ---------------------------------------------------------------- storage

// A plain in-memory adapter. The stock one is an LRU that may forget entries
// during long test runs, and this one lets the admin API find a user's grants.
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }

function alive(entry) {
  if (!entry) return undefined;
  if (entry.expiresAt && entry.expiresAt <= Date.now()) return undefined;
  return entry;
}

class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), {
      payload,
      expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined,
    });
  }

  async find(id) {
    return alive(store.get(this.key(id)))?.payload;
  }

  async findByUserCode(userCode) {
    return this.#findBy((p) => p.userCode === userCode);
  }

  async findByUid(uid) {
    return this.#findBy((p) => p.uid === uid);
  }

  async consume(id) {
    const entry = alive(store.get(this.key(id)));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) {
      if (entry.payload.grantId === grantId) store.delete(key);
    }
  }

  #findBy(pred) {
    const prefix = `${this.model}:`;
    for (const [key, entry] of store) {
      if (key.startsWith(prefix) && alive(entry) && pred(entry.payload)) return entry.payload;
    }
    return undefined;
  }
}

// ---------------------------------------------------------------- pages

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}label{display:block;margin:.6em 0}
input{width:100%;padding:.3em}.error{color:#a00}</style></head>
<body>${body}</body>
</html>`;
}

function loginPage(uid, clientId, { login = '', error = '' } = {}) {
  return page('Sign in', `<h1>Sign in</h1>
<p>to continue to <b id="client">${esc(clientId)}</b> (test identity provider)</p>
${error ? `<p class="error" id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label>Username <input name="login" id="login" value="${esc(login)}" autofocus></label>
<label>Password <input name="password" id="password" type="password"></label>
<label>One-time code (for acr mfa) <input name="otp" id="otp" inputmode="numeric"></label>
<button id="submit" type="submit">Sign in</button>
</form>
<p><small>Demo users: alice / alice-password, bob / bob-password, carol / carol-password</small></p>`);
}

// The stock policy, plus (profile resource-server) a new login when the
// client asks with acr_values for an acr the session does not have: the
// step-up that Okta, Entra ID and Keycloak do.
function loginPolicy() {
  const policy = interactionPolicy.base();
  if (profile !== 'resource-server') return policy;
  policy.get('login').checks.add(new interactionPolicy.Check('acr_step_up', 'a stronger authentication was requested', (ctx) => {
    const { oidc } = ctx;
    const want = String(oidc.params.acr_values ?? '').split(' ').filter(Boolean);
    if (want.length > 0 && !want.includes(oidc.acr) && !oidc.result?.login) return interactionPolicy.Check.REQUEST_PROMPT;
    return interactionPolicy.Check.NO_NEED_TO_PROMPT;
  }));
  return policy;
}

// The confirmation page of RP-initiated logout answers itself with logout=yes, so
// every client of the IdP session gets a back-channel logout.
async function logoutSource(ctx, form) {
  const withYes = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>');
  ctx.type = 'html';
  ctx.body = page('Signing out', `<h1>Signing out...</h1>
${withYes}
<noscript><button type="submit" form="op.logoutForm">Continue</button></noscript>
<script>document.getElementById('op.logoutForm').submit()</script>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Signed out', '<h1 id="idp-signed-out">You are signed out of the IdP</h1>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', `<h1 id="idp-error">Something went wrong</h1>
${Object.entries(out).map(([k, v]) => `<p><b>${esc(k)}</b>: ${esc(v)}</p>`).join('\n')}`);
}

// ---------------------------------------------------------------- provider

const configuration = {
  clients: loadClients(),
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: defaultAuthMethod,
    id_token_signed_response_alg: signingAlg,
  },
  ...(profile === 'basic-only' ? { clientAuthMethods: ['client_secret_basic'] } : {}),
  // With opaque access tokens (usable at userinfo) oidc-provider would keep the
  // scope claims out of the ID token; Google and Auth0 put them in.
  ...(profile === 'opaque' ? { conformIdTokenClaims: false } : {}),
  jwks,
  findAccount,
  adapter: MemoryAdapter,
  cookies: { keys: ['oidcauth-test-idp-cookie-key'] },
  claims: {
    openid: ['sub', 'oid'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'profile', 'email', 'offline_access'],
  responseTypes: ['code'],
  ...(profile === 'resource-server' ? { acrValues: ['pwd', 'mfa'] } : {}),
  routes: {
    authorization: '/oauth/authorize',
    token: '/oauth/token',
    jwks: '/keys',
    end_session: '/oidc/logout',
    revocation: '/oauth/revoke',
    introspection: '/oauth/introspect',
    userinfo: '/userinfo',
  },
  ttl: {
    AccessToken: accessTokenTTL,
    ClientCredentials: accessTokenTTL,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    AuthorizationCode: 60,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
  },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    backchannelLogout: { enabled: true },
    dPoP: { enabled: profile === 'resource-server' },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    resourceIndicators: {
      // Without them every access token is opaque.
      enabled: profile !== 'opaque',
      defaultResource: () => apiResource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => (profile === 'resource-server' && resource !== apiResource ? {
        scope: resourceScopes,
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL,
        jwt: { sign: { alg: signingAlg } },
      } : {
        scope: oidcScopes,
        audience: apiResource,
        accessTokenFormat: 'jwt',
        accessTokenTTL,
        jwt: { sign: { alg: signingAlg } },
      }),
    },
  },
  formats: {
    customizers: {
      // Scalekit access tokens carry aud as an array of client ids, plus the
      // session, organization, roles and permissions of the user.
      async jwt(_ctx, token, jwt) {
        const clientId = token.clientId ?? token.client?.clientId;
        // A token for another resource keeps that resource as its aud.
        const ownResource = !(profile === 'resource-server' && jwt.payload.aud !== apiResource);
        if (ownResource) jwt.payload.aud = [clientId];
        if (profile === 'foreign-aud') {
          jwt.payload.aud = apiResource;
          jwt.payload.azp = clientId;
        }
        if (token.sid) jwt.payload.sid = token.sid;
        const u = userBySub(token.accountId);
        if (u) {
          jwt.payload.oid = u.oid;
          jwt.payload.roles = u.roles;
          jwt.payload.permissions = u.permissions;
          if (u.address) jwt.payload.address = u.address;
        }
        // A machine token (client_credentials) speaks for the client itself.
        if (!token.accountId && !jwt.payload.sub) jwt.payload.sub = clientId;
      },
    },
  },
  issueRefreshToken: async (_ctx, client) => profile !== 'no-refresh' && client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: profile !== 'no-rotation',
  expiresWithSession: async () => false,
  // Consent is granted without asking: the grant simply covers what was asked for.
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
    if (!grant) {
      grant = new oidc.provider.Grant({ accountId: oidc.session.accountId, clientId: oidc.client.clientId });
    }
    const requested = [...(oidc.requestParamOIDCScopes ?? [])].join(' ');
    grant.addOIDCScope(requested || 'openid');
    for (const [resource, rs] of Object.entries(oidc.resourceServers ?? {})) {
      grant.addResourceScope(resource, rs.scope);
    }
    if (profile !== 'opaque') grant.addResourceScope(apiResource, oidcScopes);
    await grant.save();
    return grant;
  },
  // The stock fetch refuses loopback addresses (an SSRF guard); back-channel
  // logout calls here go to Caddy on 127.0.0.1, so drop that dispatcher.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    if (typeof rest.body === 'string' || rest.body instanceof URLSearchParams) {
      const lt = new URLSearchParams(String(rest.body)).get('logout_token');
      if (lt) issued.logout_tokens.push(lt);
    }
    return globalThis.fetch(url, rest);
  },
  renderError,
  interactions: {
    policy: loginPolicy(),
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
};

const provider = new Provider(issuer, configuration);
installKeys();

// ---------------------------------------------------------------- counters

const stats = {
  revocations: [], // { status, token_type_hint } of each call to the revocation endpoint
  grants: {}, // grant_type -> count
  grants_by_client: {}, // client_id -> grant_type -> count
  grant_errors: {}, // grant_type -> count
  backchannel: [], // { client_id, sid, ok, error }
  revoked_grants: 0,
  token_failures_served: 0, // answers of /__test/token-failure
};

// Every secret value handed out (never reset), so tests can look for them in
// places they must not appear, and ask whether a refresh token still works.
const issued = {
  codes: [],
  access_tokens: [],
  refresh_tokens: [], // { token, sub, client_id }
  id_tokens: [],
  logout_tokens: [],
};

function recordIssued(body) {
  if (!body || typeof body !== 'object') return;
  if (body.access_token) issued.access_tokens.push(body.access_token);
  if (body.id_token) issued.id_tokens.push(body.id_token);
  if (body.refresh_token) {
    const rt = store.get(`RefreshToken:${body.refresh_token}`)?.payload;
    issued.refresh_tokens.push({ token: body.refresh_token, sub: rt?.accountId, client_id: rt?.clientId });
  }
}

function refreshTokenActive(token) {
  const entry = alive(store.get(`RefreshToken:${token}`));
  return Boolean(entry && !entry.payload.consumed && store.has(`Grant:${entry.payload.grantId}`));
}

function bump(obj, key) {
  obj[key] = (obj[key] ?? 0) + 1;
}

provider.on('grant.success', (ctx) => {
  recordIssued(ctx.body);
  const gt = ctx.oidc.params?.grant_type ?? 'unknown';
  const clientId = ctx.oidc.client?.clientId ?? 'unknown';
  bump(stats.grants, gt);
  stats.grants_by_client[clientId] ??= {};
  bump(stats.grants_by_client[clientId], gt);
  console.log(`token: grant_type=${gt} client=${clientId} ok`);
});
provider.on('authorization.success', (_ctx, out) => {
  if (out?.code) issued.codes.push(out.code);
});
provider.on('grant.error', (ctx, err) => {
  const gt = ctx.oidc.params?.grant_type ?? 'unknown';
  bump(stats.grant_errors, gt);
  console.log(`token: grant_type=${gt} client=${ctx.oidc.client?.clientId} error=${err.message} (${err.error_detail ?? err.error_description ?? ''})`);
});
provider.on('grant.revoked', () => {
  stats.revoked_grants += 1;
});
provider.on('backchannel.success', (_ctx, client, accountId, sid) => {
  stats.backchannel.push({ client_id: client.clientId, sub: accountId, sid, ok: true });
  console.log(`backchannel logout: client=${client.clientId} sub=${accountId} sid=${sid} ok`);
});
provider.on('backchannel.error', (_ctx, err, client, accountId, sid) => {
  stats.backchannel.push({ client_id: client.clientId, sub: accountId, sid, ok: false, error: err.message });
  console.log(`backchannel logout: client=${client.clientId} sub=${accountId} sid=${sid} error=${err.message}`);
});
provider.on('server_error', (_ctx, err) => {
  console.log(`server_error: ${err.stack}`);
});

// ---------------------------------------------------------------- routes

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function json(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.set('cache-control', 'no-store');
  ctx.body = JSON.stringify(body);
}

let tokenFailure = { status: 0, count: 0 };

async function revokeUser(sub) {
  const grantIds = [];
  for (const [key, entry] of store) {
    if (key.startsWith('Grant:') && entry.payload.accountId === sub) grantIds.push(entry.payload.jti);
  }
  for (const id of grantIds) {
    await new MemoryAdapter('any').revokeByGrantId(id);
    store.delete(`Grant:${id}`);
  }
  return grantIds.length;
}

// Userinfo is served here because oidc-provider's own endpoint refuses JWT access
// tokens that carry an audience.
function verifyAccessToken(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    payload = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch {
    return undefined;
  }
  const key = publicKeys.get(header.kid);
  if (!key || header.alg !== signingAlg) return undefined;
  const ok = crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(parts[2], 'base64url'));
  if (!ok || payload.iss !== issuer || !(payload.exp > Date.now() / 1000)) return undefined;
  return payload;
}

// ---------------------------------------------------------------- profiles

const profileStats = {
  jwks_fetches: 0,
  token_auth: { basic: 0, post: 0 }, // client authentication seen at the token endpoint
  access_tokens: { jwt: 0, opaque: 0 }, // format of the access tokens handed out
  refresh_tokens_issued: 0, // token responses with a refresh_token
  // answers to refresh grants: a new refresh token, the same one again, or none
  refresh_answers: { rotated: 0, same: 0, none: 0 },
};

function recordTokenResponse(ctx) {
  const body = ctx.body;
  if (ctx.status !== 200 || !body || typeof body !== 'object' || !body.access_token) return;
  profileStats.access_tokens[body.access_token.split('.').length === 3 ? 'jwt' : 'opaque'] += 1;
  if (body.refresh_token) profileStats.refresh_tokens_issued += 1;
  if (ctx.oidc?.params?.grant_type === 'refresh_token') {
    const sent = ctx.oidc.params.refresh_token;
    let answer = 'none';
    if (body.refresh_token) answer = body.refresh_token === sent ? 'same' : 'rotated';
    profileStats.refresh_answers[answer] += 1;
  }
}

// The signing keys, the one that signs first. The provider's keystore and its
// published JWKS are replaced on rotation (oidc-provider has no public API for
// that; its internal state is reached through its weak cache).
function installKeys() {
  const ks = instance(provider).keystore;
  ks.clear();
  for (const k of jwks.keys) ks.add(structuredClone(k));
  instance(provider).jwks = {
    keys: jwks.keys.map(({ d, p, q, dp, dq, qi, ...pub }) => pub),
  };
  indexPublicKeys();
}

function signJWT(payload, jwk) {
  const header = { alg: jwk.alg, typ: 'JWT', kid: jwk.kid };
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  const sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

provider.use(async (ctx, next) => {
  const { path, method } = ctx;
  const url = new URL(ctx.url, issuer);

  if (path === '/__test/profile' && method === 'GET') {
    return json(ctx, 200, {
      profile,
      signing_alg: signingAlg,
      active_kid: jwks.keys[0].kid,
      published_kids: instance(provider).jwks.keys.map((k) => k.kid),
      ...profileStats,
    });
  }
  if (path === '/__test/rotate-key' && method === 'POST') {
    const previous = jwks.keys[0].kid;
    jwks.keys.unshift(newSigningKey(signingAlg));
    installKeys();
    console.log(`admin: signing key rotated from ${previous} to ${jwks.keys[0].kid}`);
    return json(ctx, 200, { kid: jwks.keys[0].kid, previous });
  }
  if (path === '/__test/idp-initiated' && method === 'GET') {
    const q = url.searchParams;
    const now = Math.floor(Date.now() / 1000);
    const claims = { iat: now, exp: now + Number.parseInt(q.get('exp') || '300', 10), jti: crypto.randomUUID() };
    const iss = q.get('iss') ?? issuer;
    if (iss !== '-') claims.iss = iss;
    for (const name of ['connection_id', 'organization_id', 'login_hint', 'relay_state']) {
      if (q.get(name) !== null) claims[name] = q.get(name);
    }
    const key = q.get('key') === 'foreign' ? newSigningKey(signingAlg) : jwks.keys[0];
    return json(ctx, 200, { token: signJWT(claims, key), claims });
  }

  if (path === '/keys') profileStats.jwks_fetches += 1;

  if (path === '/oauth/token' || path === '/oauth/revoke') {
    const basic = /^basic /i.test(ctx.get('authorization'));
    if (path === '/oauth/token') profileStats.token_auth[basic ? 'basic' : 'post'] += 1;
    if (profile === 'basic-only' && !basic) {
      console.log(`${path}: refused: client authentication other than client_secret_basic`);
      return json(ctx, 401, { error: 'invalid_client', error_description: 'only client_secret_basic is accepted' });
    }
    if (path === '/oauth/token') {
      await next();
      recordTokenResponse(ctx);
      return undefined;
    }
  }

  if (path === '/.well-known/openid-configuration' && profile === 'no-end-session') {
    await next();
    if (ctx.body && typeof ctx.body === 'object') {
      for (const name of ['end_session_endpoint', 'backchannel_logout_supported', 'backchannel_logout_session_supported',
        'frontchannel_logout_supported', 'frontchannel_logout_session_supported']) {
        delete ctx.body[name];
      }
    }
    return undefined;
  }

  return next();
});

provider.use(async (ctx, next) => {
  const { path, method } = ctx;

  if (path.startsWith('/__test/')) {
    const url = new URL(ctx.url, issuer);
    if (path === '/__test/stats' && method === 'GET') {
      return json(ctx, 200, stats);
    }
    if (path === '/__test/reset' && method === 'POST') {
      stats.grants = {};
      stats.grants_by_client = {};
      stats.grant_errors = {};
      stats.backchannel = [];
      stats.revoked_grants = 0;
      stats.token_failures_served = 0;
      stats.revocations = [];
      tokenFailure = { status: 0, count: 0 };
      return json(ctx, 200, { ok: true });
    }
    if (path === '/__test/revoke-user' && method === 'POST') {
      const sub = url.searchParams.get('sub');
      const n = await revokeUser(sub);
      console.log(`admin: revoked ${n} grant(s) of ${sub}`);
      return json(ctx, 200, { revoked_grants: n });
    }
    if (path === '/__test/issued' && method === 'GET') {
      return json(ctx, 200, {
        ...issued,
        refresh_tokens: issued.refresh_tokens.map((r) => r.token),
      });
    }
    if (path === '/__test/refresh-tokens' && method === 'GET') {
      const sub = url.searchParams.get('sub');
      const client = url.searchParams.get('client_id');
      return json(ctx, 200, issued.refresh_tokens
        .filter((r) => r.sub === sub && (!client || r.client_id === client))
        .map((r) => ({ ...r, active: refreshTokenActive(r.token) })));
    }
    if (path === '/__test/token-failure' && method === 'POST') {
      tokenFailure = {
        status: Number.parseInt(url.searchParams.get('status') || '503', 10),
        count: Number.parseInt(url.searchParams.get('count') || '1', 10),
      };
      console.log(`admin: token endpoint will fail: ${JSON.stringify(tokenFailure)}`);
      return json(ctx, 200, tokenFailure);
    }
    return json(ctx, 404, { error: 'not_found' });
  }

  if (path === '/oauth/token' && tokenFailure.count !== 0) {
    if (tokenFailure.count > 0) tokenFailure.count -= 1;
    stats.token_failures_served += 1;
    console.log(`token: failing on purpose with ${tokenFailure.status}`);
    return json(ctx, tokenFailure.status, { error: 'temporarily_unavailable' });
  }

  if (path === '/oauth/revoke') {
    await next();
    stats.revocations.push({ status: ctx.status, token_type_hint: ctx.oidc?.params?.token_type_hint });
    console.log(`revocation: status=${ctx.status}`);
    return undefined;
  }

  if (path === '/userinfo') {
    const auth = ctx.get('authorization');
    const claims = auth.startsWith('Bearer ') ? verifyAccessToken(auth.slice(7)) : undefined;
    const u = claims && userBySub(claims.sub);
    if (!u) {
      ctx.set('www-authenticate', 'Bearer error="invalid_token"');
      return json(ctx, 401, { error: 'invalid_token' });
    }
    return json(ctx, 200, { ...userClaims(u), sid: claims.sid });
  }

  const m = path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (m) {
    ctx.set('cache-control', 'no-store');
    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Sign in', `<h1 id="idp-error">This sign-in attempt has expired</h1><p>${esc(err.message)}</p>`);
      return undefined;
    }
    const { uid, prompt, params } = details;

    if (prompt.name === 'login') {
      if (!m[2] && method === 'GET') {
        ctx.type = 'html';
        ctx.body = loginPage(uid, params.client_id);
        return undefined;
      }
      if (m[2] && method === 'POST') {
        const form = await readForm(ctx.req);
        const login = form.get('login') ?? '';
        const u = users.find((x) => x.login === login && x.password === form.get('password'));
        if (!u) {
          ctx.status = 200;
          ctx.type = 'html';
          ctx.body = loginPage(uid, params.client_id, { login, error: 'Invalid username or password.' });
          return undefined;
        }
        const returnTo = await provider.interactionResult(ctx.req, ctx.res, {
          // The one-time code 123456 makes it a multi-factor login.
          login: {
            accountId: u.sub,
            ...(profile === 'resource-server' ? { acr: form.get('otp') === '123456' ? 'mfa' : 'pwd' } : {}),
          },
        }, { mergeWithLastSubmission: false });
        ctx.status = 303;
        ctx.redirect(returnTo);
        return undefined;
      }
    }

    // Anything else (consent) is granted at once: loadExistingGrant already
    // covers the request, so a plain result is enough.
    const grant = new provider.Grant({ accountId: details.session?.accountId, clientId: params.client_id });
    grant.addOIDCScope(String(params.scope ?? 'openid'));
    if (profile !== 'opaque') grant.addResourceScope(apiResource, oidcScopes);
    const grantId = await grant.save();
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return undefined;
  }

  return next();
});

// ---------------------------------------------------------------- listen

const server = http.createServer(provider.callback());
server.listen(port, '127.0.0.1', () => {
  console.log(`idp listening: issuer=${issuer} access_token_ttl=${accessTokenTTL}s clients=${configuration.clients.map((c) => c.client_id).join(',')}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
