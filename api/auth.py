"""Bearer-token authentication and the per-token rate limit for every ``/v1`` route."""

from __future__ import annotations

import math

from fastapi import Request

from trainrun.db.tokens import Principal, authenticate, hash_token
from trainrun.errors import TooManyRequests, Unauthorized

ANONYMOUS = Principal("anonymous", admin=True)  # auth off: one tenant that sees everything


def require_principal(request: Request) -> Principal:
    """Resolve the caller once per request and store it on ``request.state``."""
    state = request.app.state
    if not state.settings.auth_enabled:
        principal, key = ANONYMOUS, request.client.host if request.client else "local"
    else:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        with state.read_sessionmaker() as session:
            found = authenticate(session, token.strip())
        if found is None:
            raise Unauthorized("invalid or revoked token")
        principal, key = found, hash_token(token.strip())
    wait = state.rate_limiter.acquire(key)
    if wait > 0:
        raise TooManyRequests(
            "rate limit exceeded; slow down",
            {"Retry-After": str(math.ceil(wait)) if math.isfinite(wait) else "60"},
        )
    request.state.principal = principal
    return principal
