"""The routes the app has when the test runs, enumerated from ``app.url_map``, so that new routes
are covered (and must be classified) without anyone remembering to add them to a list."""
from __future__ import annotations

import re
from dataclasses import dataclass

from werkzeug.routing import Rule

#: Routes under /api/v1 that are not API operations: the document and the explorer's assets.
API_DOCUMENT_ENDPOINTS = ("openapi.", "swagger.")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Route:
    rule: Rule

    @property
    def endpoint(self) -> str:
        return self.rule.endpoint

    @property
    def methods(self) -> list[str]:
        """The methods the route serves, GET first; HEAD and OPTIONS are Werkzeug's own."""
        return sorted(self.rule.methods - {"HEAD", "OPTIONS"}, key=lambda m: (m != "GET", m))

    @property
    def params(self) -> list[str]:
        return sorted(self.rule.arguments)

    @property
    def is_api(self) -> bool:
        return self.rule.rule.startswith("/api/")

    @property
    def is_api_operation(self) -> bool:
        return self.is_api and not self.endpoint.startswith(API_DOCUMENT_ENDPOINTS)

    def url(self, values: dict[str, object]) -> str:
        """The path with each ``<converter:name>`` replaced by its value."""
        def fill(match: re.Match) -> str:
            return str(values[match.group("name")])

        return re.sub(r"<(?:[^:<>]+:)?(?P<name>[^<>]+)>", fill, self.rule.rule)


def all_routes(app) -> list[Route]:
    return sorted((Route(rule) for rule in app.url_map.iter_rules()), key=lambda r: (r.rule.rule, r.endpoint))


def ui_routes(app) -> list[Route]:
    return [r for r in all_routes(app) if not r.is_api]


def api_operations(app) -> list[Route]:
    return [r for r in all_routes(app) if r.is_api_operation]
