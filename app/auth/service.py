"""Signing in, signing out, users and roles. Services flush; the caller commits."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import Role, User, UserRole
from app.auth.passwords import hash_password, needs_rehash, password_problem, verify_password
from app.auth.permissions import require_admin
from app.clock import as_utc
from app.errors import NotFound, ValidationFailed
from app.registry.models import Organisation


@dataclass(frozen=True)
class SignInResult:
    user: User | None
    #: Why sign-in failed, in words safe to show (never whether the e-mail exists).
    problem: str | None = None


INVALID_CREDENTIALS = "Enter a correct e-mail address and password"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalise_email(email)))


def sign_in(
    session: Session, *, email: str, password: str, now: datetime, max_failures: int, lockout: timedelta
) -> SignInResult:
    """Check a password, counting failures in the database so every worker agrees on a lockout."""
    user = find_user_by_email(session, email)
    if user is None:
        verify_password(None, password)  # same work as a real check, so timing does not reveal accounts
        audit.record(session, action="auth.sign_in_failed", actor=normalise_email(email)[:254],
                     details={"reason": "unknown_account"}, occurred_at=now)
        return SignInResult(None, INVALID_CREDENTIALS)
    if user.locked_until is not None and as_utc(user.locked_until) > now:
        audit.record(session, action="auth.sign_in_refused", actor=user, organisation=user.organisation.code,
                     subject_type="user", subject_id=user.id, details={"reason": "locked"}, occurred_at=now)
        return SignInResult(None, "This account is locked after too many failed sign-ins. Try again later "
                                  "or ask an administrator to unlock it.")
    if not user.is_enabled or not verify_password(user.password_hash, password):
        # Counted by the database, not in Python: two workers failing at once must both count.
        session.execute(update(User).where(User.id == user.id).values(failed_logins=User.failed_logins + 1))
        session.refresh(user, ["failed_logins"])
        details: dict[str, object] = {"reason": "bad_password" if user.is_enabled else "disabled",
                                      "failures": user.failed_logins}
        if user.failed_logins >= max_failures:
            user.locked_until = now + lockout
            details["locked_until"] = user.locked_until.isoformat()
        audit.record(session, action="auth.sign_in_failed", actor=user, organisation=user.organisation.code,
                     subject_type="user", subject_id=user.id, details=details, occurred_at=now)
        return SignInResult(None, INVALID_CREDENTIALS)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    audit.record(session, action="auth.signed_in", actor=user, organisation=user.organisation.code,
                 subject_type="user", subject_id=user.id, occurred_at=now)
    session.flush()
    return SignInResult(user)


def sign_out(session: Session, user: User) -> None:
    """Void every session cookie the user holds, copied ones included."""
    user.session_version += 1
    audit.record(session, action="auth.signed_out", actor=user, organisation=user.organisation.code,
                 subject_type="user", subject_id=user.id)
    session.flush()


def change_password(session: Session, user: User, *, current: str, new: str) -> None:
    errors: dict[str, str] = {}
    if not verify_password(user.password_hash, current):
        errors["current_password"] = "Enter your current password correctly"
    problem = password_problem(new)
    if problem:
        errors["new_password"] = problem
    if errors:
        raise ValidationFailed(errors)
    user.password_hash = hash_password(new)
    user.session_version += 1
    audit.record(session, action="auth.password_changed", actor=user, organisation=user.organisation.code,
                 subject_type="user", subject_id=user.id)
    session.flush()


def load_user_for_session(session: Session, session_id: str) -> User | None:
    """The user a session cookie names, if its session version is still current."""
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None
    user = session.get(User, int(user_id))
    if user is None or user.session_version != int(version) or not user.is_enabled:
        return None
    return user


def create_user(
    session: Session,
    actor: User | str | None,
    *,
    email: str,
    name: str,
    organisation_code: str,
    roles: list[str],
    password: str,
) -> User:
    errors: dict[str, str] = {}
    email = normalise_email(email)
    if "@" not in email or len(email) > 254:
        errors["email"] = "Enter an e-mail address in the correct format, like name@example.org"
    elif find_user_by_email(session, email) is not None:
        errors["email"] = "A user with this e-mail address already exists"
    if not name.strip():
        errors["name"] = "Enter the user's full name"
    organisation = session.scalar(select(Organisation).where(Organisation.code == organisation_code))
    if organisation is None:
        errors["organisation"] = f"There is no organisation with the code {organisation_code!r}"
    valid_roles = {r.value for r in Role}
    unknown = [r for r in roles if r not in valid_roles]
    if not roles:
        errors["roles"] = "Select at least one role"
    elif unknown:
        errors["roles"] = f"Unknown role {unknown[0]!r}: choose from {', '.join(sorted(valid_roles))}"
    problem = password_problem(password)
    if problem:
        errors["password"] = problem
    if errors:
        raise ValidationFailed(errors)
    user = User(email=email, name=name.strip(), organisation=organisation, password_hash=hash_password(password))
    user.role_rows = [UserRole(role=r) for r in sorted(set(roles))]
    session.add(user)
    session.flush()
    audit.record(session, action="user.created", actor=actor, organisation=organisation.code,
                 subject_type="user", subject_id=user.id, details={"email": email, "roles": sorted(set(roles))})
    return user


def set_roles(session: Session, actor: User, user: User, roles: list[str]) -> None:
    valid_roles = {r.value for r in Role}
    if not roles or any(r not in valid_roles for r in roles):
        raise ValidationFailed({"roles": "Select at least one role from the list"})
    before = sorted(user.roles)
    user.role_rows = [UserRole(role=r) for r in sorted(set(roles))]
    user.session_version += 1  # a permission change takes effect on the next request
    audit.record(session, action="user.roles_changed", actor=actor, organisation=user.organisation.code,
                 subject_type="user", subject_id=user.id, details={"before": before, "after": sorted(set(roles))})
    session.flush()


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("There is no such user")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(func.lower(User.name))))


def unlock(session: Session, actor: User, user: User) -> bool:
    """Let a locked-out user try again now, and clear their count of failures; False if there was nothing to clear."""
    require_admin(actor, "unlock accounts")
    if user.failed_logins == 0 and user.locked_until is None:
        return False
    details = {"failures": user.failed_logins,
               "locked_until": as_utc(user.locked_until).isoformat() if user.locked_until else None}
    user.failed_logins = 0
    user.locked_until = None
    audit.record(session, action="user.unlocked", actor=actor, organisation=user.organisation.code,
                 subject_type="user", subject_id=user.id, details=details)
    session.flush()
    return True
