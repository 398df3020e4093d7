"""What the start page shows each role: the things that need their attention."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.clock import today
from app.registry import service as registry
from app.registry.status import SignatureStatus


@dataclass(frozen=True)
class Panel:
    title: str
    count: int
    description: str
    href: str


def panels_for(session: Session, user: User) -> list[Panel]:
    from flask import url_for

    as_of = today()
    panels: list[Panel] = []
    if user.has_role(Role.ADMIN, Role.COORDINATOR, Role.DPO, Role.AUDITOR):
        standings = [registry.standing(o, as_of) for o in registry.list_organisations(session)]
        live = [s for s in standings if not s.dissolved]
        due = [s for s in live if s.status is SignatureStatus.DUE_FOR_RENEWAL]
        lapsed = [s for s in live if s.status is None or not s.status.is_current]
        panels.append(Panel("Signatures due for renewal", len(due),
                            "K-MISA signatures that expire within 90 days.",
                            url_for("registry.organisations", status="due_for_renewal")))
        panels.append(Panel("Partners without a current signature", len(lapsed),
                            "Organisations that cannot share until they sign the current K-MISA.",
                            url_for("registry.organisations", status="not_current")))
    own = registry.standing(user.organisation, as_of)
    panels.append(Panel(f"{user.organisation.name}'s K-MISA standing", 1 if own.status and own.status.is_current else 0,
                        own.label, url_for("registry.organisation", code=user.organisation.code)))
    return panels
