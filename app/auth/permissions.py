"""Who may do what. Services call these, so a view that forgets a check is still safe."""
from __future__ import annotations

from app.auth.models import Role, User
from app.errors import NotPermitted

REGISTER_KEEPERS = (Role.ADMIN, Role.COORDINATOR)


def require_role(user: User, *roles: Role, action: str) -> None:
    if not user.has_role(*roles):
        names = " or ".join(r.label.lower() for r in roles)
        raise NotPermitted(f"Only a{'n' if names[0] in 'aeiou' else ''} {names} can {action}.")


def require_register_keeper(user: User, action: str) -> None:
    require_role(user, *REGISTER_KEEPERS, action=action)


def require_admin(user: User, action: str) -> None:
    require_role(user, Role.ADMIN, action=action)
