"""Who is calling and what they may do: identities, roles, API tokens and the authorization policy.

- `identity`: `Role` and `Identity`, pure data.
- `policy`: `authorize(identity, action, job_owner, job_team) -> Decision`, pure (no I/O, no clock): the one place
  the rules of the roles live. `user` submits and sees and cancels its own jobs (its team's too with
  JOBQUEUE_USERS_SEE_TEAM_JOBS); `operator` sees and cancels every job and runs, pauses and resumes schedules;
  `admin` also manages tokens and applies the registry.
- `tokens`: `TokenStore`: opaque bearer tokens in Redis (key names in `jobqueue.keys`), stored as SHA-256 hashes
  only, and `authenticate(token)`.
- `jwks`: `JwksCache`, an OpenID Connect issuer's signing keys fetched over HTTP (in a thread) and cached.
- `oidc`: `BearerAuthenticator.verify(token) -> Identity | Refusal`, the API's one entry point: a `jq_` token
  through `TokenStore`, anything else as a JWT of JOBQUEUE_OIDC_ISSUER (`OidcVerifier`), claims mapped to owner,
  team and role.

I/O rule: only `tokens` talks to Redis, and only `jwks` to the identity provider. Nothing here imports `manager` or
`consumer`; the API server and the `jobqueue tokens` CLI call this package.
"""
