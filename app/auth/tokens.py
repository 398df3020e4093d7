"""API tokens: shown once, stored as a peppered hash, bound to a user, scoped and expiring."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import Select, bindparam, or_, select, update
from sqlalchemy.orm import Session, joinedload

from app.audit import service as audit
from app.auth.models import ApiToken, Role, User
from app.clock import as_utc
from app.errors import NotFound, ValidationFailed
from app.registry import service as registry

TOKEN_PREFIX = "acc_"
#: What a token may do; a partner system gets only the scopes it needs.
SCOPES = ("read", "check", "submit", "transfer")
MAX_LIFETIME = timedelta(days=366)
#: How stale ``last_used_at`` may get: at most one write a minute per token, however busy it is.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    #: The secret, shown once and never stored.
    plaintext: str


def _digest(pepper: str, plaintext: str) -> str:
    return hmac.new(pepper.encode(), plaintext.encode(), hashlib.sha256).hexdigest()


def create_token(
    session: Session, actor: User | str, user: User, *, name: str, scopes: list[str], lifetime: timedelta,
    now: datetime, pepper: str,
) -> IssuedToken:
    errors: dict[str, str] = {}
    if not name.strip():
        errors["name"] = "Enter a name that says what the token is for"
    if not scopes or any(s not in SCOPES for s in scopes):
        errors["scopes"] = f"Choose scopes from: {', '.join(SCOPES)}"
    if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
        errors["expires_in_days"] = "A token must expire within 1 to 366 days"
    if errors:
        raise ValidationFailed(errors)
    public = secrets.token_hex(4)
    plaintext = f"{TOKEN_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    token = ApiToken(user=user, name=name.strip(), prefix=public, token_hash=_digest(pepper, plaintext),
                     scopes=sorted(set(scopes)), expires_at=now + lifetime)
    session.add(token)
    session.flush()
    audit.record(session, action="token.created", actor=actor, organisation=user.organisation.code,
                 subject_type="api_token", subject_id=token.id,
                 details={"prefix": public, "user": user.email, "scopes": token.scopes,
                          "expires_at": token.expires_at.isoformat()})
    return IssuedToken(token, plaintext)


@dataclass(frozen=True)
class Authenticated:
    token: ApiToken
    #: The register revision, read with the token (``registry.service.current_revision``).
    register_revision: int


def authenticate(session: Session, plaintext: str, *, now: datetime, pepper: str) -> Authenticated | None:
    """The live token ``plaintext`` names, or None; constant-time on the secret.

    The register revision comes back with it, read in the same statement: nearly every API
    request checks or records an exchange next, which needs it, and a second round trip to the
    database cost more than the read.
    """
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    public, _, secret = plaintext[len(TOKEN_PREFIX):].partition("_")
    if not public or not secret:
        return None
    row = session.execute(_token_by_prefix(), {"prefix": public}).unique().one_or_none()
    if row is None:
        return None
    token, revision = row
    if not hmac.compare_digest(token.token_hash, _digest(pepper, plaintext)):
        return None
    if token.revoked_at is not None or as_utc(token.expires_at) <= now or not token.user.is_enabled:
        return None
    return Authenticated(token, revision)


@cache
def _token_by_prefix() -> Select:
    """One statement for the token, its user, organisation and roles, and the register revision:
    every API request pays for it.

    Built once: building it, and working out its cache key, cost a quarter of a millisecond of
    CPU per request, more than running it.
    """
    user = joinedload(ApiToken.user)
    return select(ApiToken, registry.revision_subquery()).where(ApiToken.prefix == bindparam("prefix")).options(
        user.joinedload(User.organisation), user.joinedload(User.role_rows))


def revoke(session: Session, actor: User, token: ApiToken, *, now: datetime) -> None:
    if token.revoked_at is None:
        token.revoked_at = now
        audit.record(session, action="token.revoked", actor=actor, organisation=token.user.organisation.code,
                     subject_type="api_token", subject_id=token.id, details={"prefix": token.prefix})
        session.flush()


def status(token: ApiToken, now: datetime) -> str:
    """``active``, ``expired`` or ``revoked``: derived from dates, never stored."""
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if as_utc(token.expires_at) <= now else "active"


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    """A user's own tokens, newest first."""
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def list_all_tokens(session: Session) -> list[ApiToken]:
    """Every token, for administrators, newest first."""
    return list(session.scalars(select(ApiToken).options(joinedload(ApiToken.user).joinedload(User.organisation))
                                .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def get_token(session: Session, actor: User, token_id: int) -> ApiToken:
    """A token ``actor`` may manage: their own, or any for an administrator; anyone else's is not found."""
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != actor.id and not actor.has_role(Role.ADMIN)):
        raise NotFound("There is no such API token")
    return token


def use_is_due(token: ApiToken, now: datetime) -> bool:
    """Whether ``last_used_at`` is stale enough to be worth a write."""
    return token.last_used_at is None or as_utc(token.last_used_at) <= now - LAST_USED_RESOLUTION


def record_use(session: Session, token_id: int, now: datetime) -> None:
    """Note that a token was used, unless another request already did within the resolution."""
    # Not synchronised with loaded rows: SQLite reads times back naive, and the caller needs none.
    session.execute(update(ApiToken).where(
        ApiToken.id == token_id,
        or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_RESOLUTION),
    ).values(last_used_at=now).execution_options(synchronize_session=False))
