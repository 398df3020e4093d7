"""The service navigation: one list, filtered by role, so every page shows the same menu."""
from __future__ import annotations

from dataclasses import dataclass

from flask import request, url_for

from app.auth.models import Role, User

EVERYONE = tuple(Role)


@dataclass(frozen=True)
class NavItem:
    text: str
    endpoint: str
    roles: tuple[Role, ...] = EVERYONE
    #: Endpoints (or blueprint-name prefixes ending in ".") that mark this item as the current one.
    active_prefixes: tuple[str, ...] = ()


NAVIGATION: list[NavItem] = [
    NavItem("Home", "web.home"),
    NavItem("Register", "registry.organisations", active_prefixes=("registry.organisation", "registry.signature")),
    NavItem("Subgroups", "registry.subgroups", active_prefixes=("registry.subgroup",)),
    NavItem("Protocols", "protocols.index", active_prefixes=("protocols.",)),
    NavItem("Requests", "decisions.exchanges", roles=(Role.OFFICER, Role.DPO, Role.COORDINATOR, Role.ADMIN,
                                                    Role.AUDITOR),
            active_prefixes=("decisions.exchange",)),
    NavItem("Transfers", "transfers.index", roles=(Role.OFFICER, Role.DPO), active_prefixes=("transfers.",)),
    NavItem("Referrals", "decisions.referrals", roles=(Role.DPO,), active_prefixes=("decisions.resolve",
                                                                                    "decisions.emergency")),
    NavItem("What is due", "reminders.due", roles=(Role.ADMIN, Role.COORDINATOR, Role.DPO),
            active_prefixes=("reminders.due", "reminders.calendar")),
    NavItem("Notifications", "reminders.notifications", active_prefixes=("reminders.notification", "reminders.snooze",
                                                                          "reminders.acknowledge")),
    NavItem("Outbox", "reminders.outbox", roles=(Role.ADMIN, Role.COORDINATOR), active_prefixes=("reminders.outbox",)),
    NavItem("Audit", "audit.events", roles=(Role.DPO, Role.AUDITOR, Role.COORDINATOR, Role.ADMIN),
            active_prefixes=("audit.event", "audit.exchange", "audit.transfer", "audit.subject", "audit.verification",
                             "audit.run_verification", "audit.processing", "audit.export")),
    NavItem("Dashboard", "audit.dashboard_page", roles=(Role.DPO, Role.AUDITOR, Role.COORDINATOR, Role.ADMIN),
            active_prefixes=("audit.dashboard",)),
    NavItem("Users", "auth.users", roles=(Role.ADMIN,), active_prefixes=("auth.user",)),
    NavItem("API tokens", "auth.tokens_page", active_prefixes=("auth.token",)),
]


def navigation_for(user: User) -> list[dict[str, object]]:
    endpoint = request.endpoint or ""
    items = []
    for item in NAVIGATION:
        if not user.has_role(*item.roles):
            continue
        active = endpoint == item.endpoint or any(endpoint.startswith(p) for p in item.active_prefixes)
        items.append({"href": url_for(item.endpoint), "text": item.text, "active": active})
    return items
