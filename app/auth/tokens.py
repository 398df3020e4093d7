"""API tokens: shown once, stored as a peppered hash, bound to a user, scoped and expiring."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TypeVar

from sqlalchemy import URL, ColumnElement, Select, and_, bindparam, func, inspect, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, joinedload, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from app.audit import service as audit
from app.auth.models import AccessRevision, ApiToken, Role, User
from app.clock import as_utc
from app.database import read_row
from app.errors import NotFound, ValidationFailed
from app.registry import service as registry

TOKEN_PREFIX = "acc_"
#: What a token may do; a partner system gets only the scopes it needs.
SCOPES = ("read", "check", "submit", "transfer")
MAX_LIFETIME = timedelta(days=366)
#: How stale ``last_used_at`` may get: at most one write a minute per token, however busy it is.
LAST_USED_RESOLUTION = timedelta(minutes=1)

T = TypeVar("T")


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
class Principal:
    """What a token stands for as of one access revision, kept in memory between requests.

    Nothing here is a secret that the database row does not already hold (the token's peppered
    hash, never the token). ``user`` is a detached copy of the token's user with their
    organisation and roles loaded; each request works on its own copy of it (``_attach``), so
    no request ever changes this one.
    """

    access_revision: int
    token_id: int
    token_hash: str
    scopes: frozenset[str]
    expires_at: datetime
    is_revoked: bool
    is_user_enabled: bool
    user: User


@dataclass(frozen=True)
class Authenticated:
    token_id: int
    scopes: frozenset[str]
    #: The token's user, in the caller's session; or, with ``unconfirmed``, the copy kept in
    #: memory with the principal, detached and shared by every request: to read, and to refer
    #: to by id, never to add to a session or change (putting a copy in the session cost more
    #: CPU than anything else in checking a token).
    user: User
    #: The register revision, read with the access revision (``registry.service.current_revision``).
    register_revision: int
    #: The (register, access) revisions taken as read without reading them, with
    #: ``confirm_with_write``: the request's write must confirm them (``revisions_unchanged``).
    unconfirmed: tuple[int, int] | None = None


class RevisionsMoved(Exception):
    """A write that was to confirm an authentication's revisions found them moved: nothing was
    written. Roll back and authenticate again, reading them."""


#: Principals by (database URL, token prefix). Bounded: past the limit it starts again empty.
_principals: dict[tuple[URL, str], Principal] = {}
_MAX_PRINCIPALS = 10_000
#: The (register, access) revisions last read, by database URL: what ``confirm_with_write`` takes.
_revisions_read: dict[URL, tuple[int, int]] = {}
#: When each token's use was last written, by (database URL, token id), so that a busy token
#: costs one ``last_used_at`` write a minute however many requests it makes.
_last_use: dict[tuple[URL, int], datetime | None] = {}


def authenticate(session: Session, plaintext: str, *, now: datetime, pepper: str,
                 confirm_with_write: bool = False) -> Authenticated | None:
    """The live token ``plaintext`` names, or None; constant-time on the secret.

    A token seen before costs one small statement: the access and register revisions. Its
    principal is reused while the access revision is where it was when the principal was
    loaded; any change to tokens, users, roles or organisations moves it (triggers, migration
    0013) in the transaction of the change, so that change holds from the next request on.
    Otherwise the token, its user, organisation and roles are loaded in one statement with both
    revisions, which reads them all from one snapshot.

    ``confirm_with_write``: for a request whose first statement is its one write, a token seen
    before costs no statement at all. The revisions are taken to be those last read here
    (``Authenticated.unconfirmed``), and the write must hold them as its condition
    (``revisions_unchanged``): where they moved, it writes nothing and the caller starts again
    from an authentication that reads them (``RevisionsMoved``). So the guarantee is the same.
    """
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    public, _, secret = plaintext[len(TOKEN_PREFIX):].partition("_")
    if not public or not secret:
        return None
    url = session.get_bind().url
    key = (url, public)
    principal, user, unconfirmed = _principals.get(key), None, None
    if principal is not None:
        last_read = _revisions_read.get(url)
        if confirm_with_write and last_read is not None:
            register_revision, access_revision = unconfirmed = (last_read[0], principal.access_revision)
        else:
            register_revision, access_revision = _revisions_read[url] = read_row(session, _revisions(),
                                                                                  _revisions_sql())
            if access_revision != principal.access_revision:
                principal = None
    if principal is None:
        row = session.execute(_token_by_prefix(), {"prefix": public}).unique().one_or_none()
        if row is None:
            return None
        token, register_revision, access_revision = row
        _revisions_read[url] = (register_revision, access_revision)
        principal, user = _remember(key, token, access_revision), token.user
    if not hmac.compare_digest(principal.token_hash, _digest(pepper, plaintext)):
        return None
    if principal.is_revoked or as_utc(principal.expires_at) <= now or not principal.is_user_enabled:
        # Refused on revisions not read: read them, in case the user was enabled again since.
        return None if unconfirmed is None else authenticate(session, plaintext, now=now, pepper=pepper)
    if unconfirmed is not None:
        # The principal's own copy of the user, detached: see ``Authenticated.user``.
        return Authenticated(principal.token_id, principal.scopes, principal.user, register_revision, unconfirmed)
    return Authenticated(principal.token_id, principal.scopes, user or _attach(session, principal.user),
                         register_revision)


@cache
def revisions_unchanged() -> ColumnElement[bool]:
    """The condition of a write that confirms ``Authenticated.unconfirmed``: both revisions are
    still those, given as ``revisions_values``. Built once, like the statements below."""
    return and_(registry.revision_subquery() == bindparam("unconfirmed_register_revision"),
                _access_revision_subquery() == bindparam("unconfirmed_access_revision"))


def revisions_values(unconfirmed: tuple[int, int]) -> dict[str, int]:
    return {"unconfirmed_register_revision": unconfirmed[0], "unconfirmed_access_revision": unconfirmed[1]}


@cache
def _revisions() -> Select:
    """Built once, like the statements below: every API request runs it."""
    return select(registry.revision_subquery(), _access_revision_subquery())


@cache
def _revisions_sql() -> str:
    """``_revisions`` as PostgreSQL's SQL, for ``read_row``: it has no parameters."""
    return str(_revisions().compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def _access_revision_subquery():
    return func.coalesce(select(AccessRevision.revision).where(AccessRevision.id == 1).scalar_subquery(), 0)


@cache
def _token_by_prefix() -> Select:
    """One statement for the token, its user, organisation and roles, and both revisions.

    Built once: building it, and working out its cache key, cost a quarter of a millisecond of
    CPU per request, more than running it.
    """
    user = joinedload(ApiToken.user)
    return select(ApiToken, registry.revision_subquery(), _access_revision_subquery()).where(
        ApiToken.prefix == bindparam("prefix")).options(user.joinedload(User.organisation),
                                                        user.joinedload(User.role_rows))


def _remember(key: tuple[URL, str], token: ApiToken, access_revision: int) -> Principal:
    user = token.user
    copy, organisation = _detached_copy(user), _detached_copy(user.organisation)
    roles = [_detached_copy(row) for row in user.role_rows]
    set_committed_value(copy, "organisation", organisation)
    set_committed_value(copy, "role_rows", roles)
    for row in roles:
        set_committed_value(row, "user", copy)
    principal = Principal(access_revision, token.id, token.token_hash, frozenset(token.scopes), token.expires_at,
                          token.revoked_at is not None, user.is_enabled, copy)
    if len(_principals) >= _MAX_PRINCIPALS:
        _principals.clear()
        _last_use.clear()
    _principals[key] = principal
    _last_use.setdefault((key[0], token.id), token.last_used_at)
    return principal


def _detached_copy(obj: T) -> T:
    """A detached copy of a loaded row: its column values, none of its relationships."""
    mapper = inspect(obj).mapper
    copy = mapper.class_manager.new_instance()
    for attribute in mapper.column_attrs:
        set_committed_value(copy, attribute.key, getattr(obj, attribute.key))
    make_transient_to_detached(copy)
    return copy


def _attach(session: Session, user: User) -> User:
    """The principal's user in ``session``: the one it already holds, or a copy merged in
    without a query (``load=False``), which leaves the cached one untouched."""
    present = session.identity_map.get(inspect(user).key)
    return present if present is not None else session.merge(user, load=False)


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


def use_is_due(session: Session, token_id: int, now: datetime) -> bool:
    """Whether the token's ``last_used_at`` is stale enough to be worth a write."""
    last = _last_use.get((session.get_bind().url, token_id))
    return last is None or as_utc(last) <= now - LAST_USED_RESOLUTION


def record_use(session: Session, token_id: int, now: datetime) -> None:
    """Note that a token was used, unless another request already did within the resolution."""
    # Not synchronised with loaded rows: SQLite reads times back naive, and the caller needs none.
    session.execute(update(ApiToken).where(
        ApiToken.id == token_id,
        or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_RESOLUTION),
    ).values(last_used_at=now).execution_options(synchronize_session=False))


def use_recorded(session: Session, token_id: int, now: datetime) -> None:
    """``record_use`` committed: the next write for this token is due a resolution from ``now``."""
    _last_use[(session.get_bind().url, token_id)] = now
