"""API tokens: only a SHA-256 of each token is stored; the token itself is shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from trainrun.db.tables import ApiToken, utcnow

PREFIX = "trn_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: jobs belong to ``owner``; an admin sees every owner's jobs."""

    owner: str
    admin: bool = False

    @property
    def visible_owner(self) -> str | None:
        """The owner filter for reads; None means everything."""
        return None if self.admin else self.owner


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, owner: str, *, name: str = "", admin: bool = False) -> str:
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(owner=owner, name=name, admin=admin, token_hash=hash_token(token)))
    session.flush()
    return token


def authenticate(session: Session, token: str) -> Principal | None:
    row = session.scalars(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    return Principal(row.owner, row.admin)


def revoke_owner_tokens(session: Session, owner: str) -> int:
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.owner == owner, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
