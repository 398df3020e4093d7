"""CSRF on every form and security headers on every kind of response (DESIGN §8, §11).

The routes are enumerated from ``app.url_map``, so a form added tomorrow is covered by these
tests without anyone adding it to a list.
"""
from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import func, select

from app.extensions import db
from tests import world as world_module
from tests.clients import isolated_client
from tests.routes import WRITE_METHODS, ui_routes

CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def csrf_token_in(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has no CSRF token field"
    return match.group(1) or match.group(2)


def row_counts(session) -> dict[str, int]:
    session.rollback()  # a fresh snapshot: the requests run on their own sessions
    counts = {table.name: session.scalar(select(func.count()).select_from(table))
              for table in db.metadata.sorted_tables}
    session.rollback()  # and hold no lock (outside a request, SQLite transactions begin IMMEDIATE)
    return counts


def sign_in_with_token(client, email: str, password: str):
    token = csrf_token_in(client.get("/sign-in").get_data(as_text=True))
    return client.post("/sign-in", data={"email": email, "password": password, "csrf_token": token})


@pytest.fixture
def production_app(database_url, tmp_path):
    from tests.production import production_app as make

    app = make(database_url, tmp_path)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def csrf_app(app):
    app.config["WTF_CSRF_ENABLED"] = True
    return app


# --- CSRF ------------------------------------------------------------------------------------------


def test_every_form_refuses_a_post_without_its_csrf_token_and_stores_nothing(csrf_app, session, demo):
    world = world_module.build(csrf_app, session)
    client = isolated_client(csrf_app)
    response = sign_in_with_token(client, world_module.actor_email("officer"), world_module.PASSWORD)
    assert response.status_code == 302, "a correct token signs in"

    targets = [(route, method) for route in ui_routes(csrf_app) for method in route.methods if method in WRITE_METHODS]
    assert len(targets) >= 20, [r.endpoint for r, _ in targets]
    # Sign-out ends the session, so it goes last (refused, it ends nothing anyway).
    targets.sort(key=lambda item: item[0].endpoint == "auth.sign_out")
    refused = []
    for route, method in targets:
        url = route.url({p: world.value(route.endpoint, p, "own", "officer") for p in route.params})
        before = row_counts(session)
        # Multipart with a file, the most an attacker's page can send: a form with every field.
        response = client.open(url, method=method, content_type="multipart/form-data", data={
            "payload": (io.BytesIO(b"a,b\n1,2\n"), "cases.csv"), "name": "x", "email": "x@example.org"})
        assert response.status_code == 400, f"{method} {url} ({route.endpoint}) answered {response.status_code}"
        assert row_counts(session) == before, f"{method} {url} stored something without a CSRF token"
        refused.append(route.endpoint)
    assert "auth.sign_in" in refused and "auth.sign_out" in refused

    still_signed_in = client.get("/account/tokens")
    assert still_signed_in.status_code == 200, "a refused sign-out must not end the session"


def test_a_correct_csrf_token_works(csrf_app, session, demo):
    world_module.build(csrf_app, session)
    client = isolated_client(csrf_app)
    assert sign_in_with_token(client, world_module.actor_email("dpo"), world_module.PASSWORD).status_code == 302

    page = client.get("/account/tokens/new").get_data(as_text=True)
    created = client.post("/account/tokens/new", data={"name": "Case system", "scopes": ["read", "check"],
                                                       "expires_in_days": "30", "csrf_token": csrf_token_in(page)})
    assert created.status_code == 200 and "acc_" in created.get_data(as_text=True)

    wrong = client.post("/account/tokens/new", data={"name": "Another", "scopes": ["read"],
                                                     "expires_in_days": "30", "csrf_token": "not-the-token"})
    assert wrong.status_code == 400

    page = client.get("/reminders/notifications").get_data(as_text=True)
    assert client.post("/sign-out", data={"csrf_token": csrf_token_in(page)}).status_code == 302
    assert "/sign-in" in client.get("/home").headers["Location"]


def test_the_api_needs_no_csrf_token_but_a_bearer_token(csrf_app, api_token):
    response = csrf_app.test_client().post("/api/v1/exchanges/check", json={},
                                           headers=api_token("officer@kent-police.example", "check"))
    assert response.status_code == 422  # validated, not refused as a forgery


# --- headers ---------------------------------------------------------------------------------------


def csp_directives(response) -> dict[str, str]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"{response.request.path} has no Content-Security-Policy"
    return {part.split()[0]: " ".join(part.split()[1:]) for part in header.split(";") if part.strip()}


def assert_baseline_headers(response, *, strict: bool = True) -> None:
    path = response.request.path
    csp = csp_directives(response)
    assert csp.get("frame-ancestors") == "'none'", path
    assert csp.get("object-src") == "'none'", path
    assert "base-uri" in csp and csp["base-uri"] in ("'none'", "'self'"), path
    assert response.headers.get("X-Content-Type-Options") == "nosniff", path
    assert response.headers.get("X-Frame-Options") == "DENY", path
    assert response.headers.get("Referrer-Policy"), path
    if strict:
        assert "'unsafe-inline'" not in csp.get("script-src", ""), path
        assert "'unsafe-eval'" not in csp.get("script-src", ""), path
        assert re.fullmatch(r"'self' 'nonce-[A-Za-z0-9_-]{16,}'", csp["script-src"]), csp["script-src"]
        assert "'unsafe-inline'" not in csp.get("style-src", ""), path


def assert_no_inline_script(response) -> None:
    """Every script is a file, or carries this response's nonce; no event handler attributes."""
    html = response.get_data(as_text=True)
    nonce = re.search(r"'nonce-([^']+)'", response.headers["Content-Security-Policy"]).group(1)
    for tag in re.findall(r"<script\b[^>]*>", html, re.I):
        assert "src=" in tag or f'nonce="{nonce}"' in tag, f"{response.request.path}: inline script {tag}"
    handler = re.search(r"<[^>]+\son[a-z]+\s*=", html, re.I)
    assert handler is None, f"{response.request.path}: inline event handler {handler.group(0)}"
    assert "javascript:" not in html.lower(), response.request.path


def test_every_kind_of_response_carries_the_security_headers(app, client, api_token):
    headers = api_token("officer@kent-police.example", "read")
    responses = {
        "html page": client.get("/sign-in"),
        "redirect": client.get("/"),
        "json": client.get("/healthz"),
        "static file": client.get("/static/favicon.svg"),
        "html 404": client.get("/no-such-page"),
        "html 405": client.post("/healthz"),
        "api json": client.get("/api/v1/me", headers=headers),
        "api 401": client.get("/api/v1/me"),
        "api 404": client.get("/api/v1/exchanges/999999", headers=headers),
        "api 405": client.delete("/api/v1/me", headers=headers),
        "api 422": client.get("/api/v1/exchanges?limit=0", headers=headers),
        "openapi document": client.get("/api/v1/openapi.json"),
    }
    assert responses["redirect"].status_code == 302
    assert responses["static file"].status_code == 200
    assert responses["html 404"].status_code == 404 and responses["html 405"].status_code == 405
    assert responses["api 405"].status_code == 405 and "GET" in responses["api 405"].headers["Allow"]
    for kind, response in responses.items():
        assert_baseline_headers(response)
        assert "Strict-Transport-Security" not in response.headers, f"{kind}: HSTS outside production"
    for kind in ("html page", "html 404", "html 405"):
        assert_no_inline_script(responses[kind])
    for kind in ("html page", "api json", "api 401"):
        assert responses[kind].headers.get("Cache-Control") == "no-store", kind
    for response in responses.values():
        response.close()


def test_an_unexpected_error_still_carries_the_headers(app, client):
    @app.get("/test-only-boom")
    def boom():  # a route that fails as no route should
        raise RuntimeError("boom")

    response = client.get("/test-only-boom")
    assert response.status_code == 500
    assert "boom" not in response.get_data(as_text=True)
    assert_baseline_headers(response)


def test_every_page_for_every_route_has_the_headers_and_no_inline_script(app, session, demo):
    world = world_module.build(app, session)
    client = isolated_client(app)
    assert client.post("/sign-in", data={"email": world_module.actor_email("admin"),
                                         "password": world_module.PASSWORD}).status_code == 302
    tried = 0
    for route in ui_routes(app):
        if "GET" not in route.methods or route.endpoint in ("auth.sign_out",):
            continue
        url = route.url({p: world.value(route.endpoint, p, "own", "admin") for p in route.params})
        response = client.get(url)
        tried += 1
        assert_baseline_headers(response, strict=not route.rule.rule.startswith("/api/v1/swagger"))
        if response.mimetype == "text/html":
            assert_no_inline_script(response)
        response.close()
    assert tried >= 30


def test_the_api_explorer_alone_has_a_relaxed_policy(client):
    explorer = client.get("/api/v1/swagger")
    assert explorer.status_code == 200
    relaxed = csp_directives(explorer)
    assert "'unsafe-inline'" in relaxed["script-src"]  # the third-party explorer's own inline script
    assert_baseline_headers(explorer, strict=False)  # still no framing, plugins or base tag
    for path in ("/api/v1/openapi.json", "/api/v1/swagger-ui-evil", "/api/v1/swaggerx", "/sign-in", "/api/v1/me"):
        assert_baseline_headers(client.get(path))


def test_hsts_only_in_production(production_app):
    client = production_app.test_client()
    for path in ("/sign-in", "/healthz", "/api/v1/openapi.json", "/static/favicon.svg", "/nowhere"):
        response = client.get(path)
        assert response.headers.get("Strict-Transport-Security", "").startswith("max-age="), path
        assert int(re.search(r"max-age=(\d+)", response.headers["Strict-Transport-Security"]).group(1)) >= 31536000
        assert_baseline_headers(response)
        response.close()
