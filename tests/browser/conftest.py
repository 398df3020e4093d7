"""Every journey in a real browser: a live server, Debian's Chromium, axe-core and screenshots.

The app is served by waitress on 127.0.0.1 from a copy of the demo database, with CSRF on, so the
browser fills in and submits the real forms. Each journey step checks the page the way a person
with assistive technology would meet it (axe-core at WCAG 2.2 AA, a real title and heading, no
server error) and keeps a full-page screenshot under ``test-artifacts/screenshots/<journey>/``.

Chromium comes from Debian (``apt-get install chromium``); Playwright's own browser builds are
neither needed nor downloadable here (DESIGN §11). Without Chromium the browser tests skip,
except in CI, where they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from tests.conftest import _in_ci

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("ACCORD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: The accessibility standard public-sector services must meet: WCAG 2.2 at level AA.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
#: The narrowest screen WCAG 1.4.10 (reflow) asks a page to fit without scrolling sideways.
NARROW = {"width": 320, "height": 640}
DESKTOP = {"width": 1280, "height": 900}
#: The innermost elements sticking out past the right edge, to say what to fix.
WIDEST_ELEMENTS = """(limit) => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > limit + 1
               && ![...e.children].some(c => c.getBoundingClientRect().right > limit + 1))
  .slice(0, 5)
  .map(e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${[...e.classList].join('.')}`
            + ` (${Math.round(e.getBoundingClientRect().right)} px)`)"""


def _unavailable_reason() -> str | None:
    try:
        import axe_playwright_python  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


# --- the live server --------------------------------------------------------------------------

@dataclass
class LiveServer:
    """The app served over HTTP, and a way to prepare data the journey starts from."""

    app: Any
    url: str

    @contextmanager
    def database(self):
        """An app context whose session the caller commits: for set-up a journey does not show."""
        from app.extensions import db

        with self.app.app_context():
            try:
                yield db.session
            finally:
                db.session.remove()

    def cli(self, *args: str) -> str:
        result = self.app.test_cli_runner().invoke(args=list(args))
        assert result.exit_code == 0, result.output
        return result.output

    def record_exchange(self, email: str, body: dict) -> int:
        """Record a request to share as ``email`` would through the API; returns its id."""
        from app.auth import service as auth
        from app.clock import utcnow
        from app.decisions import service

        with self.database() as session:
            user = auth.find_user_by_email(session, email)
            exchange = service.record(session, user, body, now=utcnow())
            session.commit()
            return exchange.id

    def send_file(self, email: str, exchange_id: int, content: bytes, *, filename: str) -> str:
        """Send ``content`` under a recorded exchange as ``email`` would; returns the transfer's id."""
        import io

        from app.auth import service as auth
        from app.clock import utcnow
        from app.decisions.models import Exchange
        from app.transfers import service
        from app.transfers.keys import keyring_for

        with self.database() as session:
            sender = auth.find_user_by_email(session, email)
            transfer = service.send(session, sender, session.get(Exchange, exchange_id), io.BytesIO(content),
                                    filename=filename, media_type="text/csv", now=utcnow(),
                                    keyring=keyring_for(self.app.config),
                                    max_bytes=self.app.config["MAX_PAYLOAD_BYTES"])
            session.commit()
            return transfer.id

    def let_retention_pass(self, days: int) -> None:
        """Run the retention purge as the scheduler would ``days`` from now."""
        from app.clock import utcnow

        later = (utcnow() + timedelta(days=days)).replace(microsecond=0, tzinfo=None)
        self.cli("transfers", "purge", "--as-of", later.isoformat())


def _serve(app) -> tuple[Any, threading.Thread]:
    import waitress

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4, ident="accord-test",
                                    clear_untrusted_proxy_headers=True)
    thread = threading.Thread(target=server.run, name="accord-live-server", daemon=True)
    thread.start()
    return server, thread


def _stop(server, thread: threading.Thread) -> None:
    server.task_dispatcher.shutdown()

    def close_all() -> None:
        for dispatcher in list(server._map.values()):  # the listening socket, its trigger and open channels
            dispatcher.close()

    # Closed in the server's own thread, through its trigger: a socket closed by this thread while
    # the server's select() waits on it fails that select with EBADF. With nothing left to watch,
    # the server's loop ends.
    server.trigger.pull_trigger(close_all)
    thread.join(timeout=10)
    assert not thread.is_alive(), "the live server did not stop within 10 s"


@pytest.fixture(scope="session")
def browser_unavailable() -> str | None:
    return _unavailable_reason()


@pytest.fixture(scope="module")
def live_server(browser_unavailable, sqlite_demo_template, tmp_path_factory) -> Iterator[LiveServer]:
    """The demo, freshly copied for each test module, served with CSRF on as in production."""
    if browser_unavailable:
        if _in_ci():
            pytest.fail(f"The browser tests must run in CI: {browser_unavailable}")
        pytest.skip(f"Browser tests skipped: {browser_unavailable}")
    from app import create_app
    from app.extensions import db

    folder = tmp_path_factory.mktemp("live-server")
    path = folder / "accord.sqlite3"
    shutil.copyfile(sqlite_demo_template, path)
    app = create_app("test", SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}", WTF_CSRF_ENABLED=True,
                     KEYRING_FILE=str(folder / "keyring.json"),
                     AUDIT_SIGNING_KEY_FILE=str(folder / "audit-signing-key.pem"))
    server, thread = _serve(app)
    try:
        yield LiveServer(app=app, url=f"http://127.0.0.1:{server.effective_port}")
    finally:
        _stop(server, thread)
        with app.app_context():
            db.engine.dispose()


# --- the browser ------------------------------------------------------------------------------

@pytest.fixture(scope="package")
def browser(browser_unavailable) -> Iterator[Any]:
    """One Chromium for the browser tests, closed as soon as they end: the rest of a full ``make test``
    run neither shares the machine with it nor tears it down at the very end of the session."""
    if browser_unavailable:
        if _in_ci():
            pytest.fail(f"The browser tests must run in CI: {browser_unavailable}")
        pytest.skip(f"Browser tests skipped: {browser_unavailable}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def axe() -> Any:
    from axe_playwright_python.sync_playwright import Axe

    return Axe()


def axe_report(violations: list[dict]) -> str:
    """Each violation as rule id, impact, the elements it found and what to do about it."""
    lines = []
    for violation in violations:
        lines.append(f"{violation['id']} ({violation.get('impact') or 'no impact given'}): {violation['help']}"
                     f" <{violation.get('helpUrl', '')}>")
        for node in violation["nodes"]:
            target = " ".join(str(t) for t in node["target"])
            lines.append(f"    at {target}: {node.get('failureSummary', '').strip().replace(chr(10), ' ')}")
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class Journey:
    """One person's way through the service, checked and photographed page by page."""

    name: str
    page: Any
    server: LiveServer
    axe: Any
    password: str
    narrow: bool = False
    #: Without JavaScript, axe-core runs in this page of a scripted context, on a copy of each page.
    checker: Any = None
    folder: Path = field(init=False)
    steps: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = SCREENSHOTS / _slug(self.name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.page.on("response", self._watch)
        self._copy: tuple[str, str] | None = None
        if self.checker is not None:
            self.checker.route("**/*", self._serve_copy)

    def _serve_copy(self, route) -> None:
        """The checker sees the page exactly as the script-less browser got it, and runs no script of ours."""
        request = route.request
        if self._copy and request.resource_type == "document" and request.url == self._copy[0]:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=self._copy[1])
        elif request.resource_type == "script":
            route.abort()
        else:
            route.continue_()

    def _checked_page(self) -> Any:
        """The page axe-core and the width check run in: the journey's own, or a scripted copy of it."""
        if self.checker is None:
            return self.page
        url = self.page.url.split("#")[0]
        self._copy = (url, self.page.content())
        self.checker.goto(url)
        return self.checker

    def _watch(self, response) -> None:
        if response.status >= 500:
            self.server_errors.append(f"{response.status} {response.request.method} {response.url}")

    def visit(self, step: str, path: str, *, heading: str | None = None, status: int = 200) -> Any:
        response = self.page.goto(path)
        assert response is not None and response.status == status, (
            f"{self.name}, {step}: {path} answered {response and response.status}, not {status}")
        return self.see(step, heading=heading)

    def see(self, step: str, *, heading: str | None = None) -> Any:
        """Check the page now showing and keep its picture: the end of every step."""
        page = self.page
        page.wait_for_load_state("load")
        where = f"{self.name}, step {len(self.steps) + 1} ({step}) at {page.url}"
        assert not self.server_errors, f"{where}: the server failed: {self.server_errors}"
        title = page.title()
        assert title and not title.startswith(("–", "None")), f"{where}: the page has no real title: {title!r}"
        h1 = page.locator("h1")
        assert h1.count() == 1, f"{where}: a page has exactly one main heading, found {h1.count()}"
        if heading is not None:
            assert heading in h1.inner_text(), f"{where}: expected the heading {heading!r}, got {h1.inner_text()!r}"
        self.steps.append(step)
        page.screenshot(path=str(self.folder / f"{len(self.steps):02d}-{_slug(step)}.png"), full_page=True)
        checked = self._checked_page()
        results = self.axe.run(checked, options={"runOnly": {"type": "tag", "values": AXE_TAGS},
                                              "resultTypes": ["violations"]})
        violations = results.response["violations"]
        assert not violations, f"{where}: WCAG 2.2 AA problems found by axe-core:\n{axe_report(violations)}"
        if self.narrow:
            width = checked.evaluate("document.documentElement.scrollWidth")
            assert width <= NARROW["width"], (
                f"{where}: the page is {width} px wide at {NARROW['width']} px and scrolls sideways (WCAG 1.4.10); "
                f"too wide: {checked.evaluate(WIDEST_ELEMENTS, NARROW['width'])}")
        return page

    def reload(self, step: str, *, heading: str | None = None) -> Any:
        """Look at the same page again, after something happened elsewhere."""
        self.page.reload()
        return self.see(step, heading=heading)

    def sign_in(self, email: str, *, password: str | None = None) -> Any:
        page = self.page
        self.visit("Sign in page", "/sign-in", heading="Sign in")
        page.get_by_label("E-mail address").fill(email)
        page.get_by_label("Password", exact=True).fill(password or self.password)
        page.get_by_role("button", name="Sign in").click()
        self.see("Start page after signing in", heading="What needs your attention")
        self.check_panel_links()
        return page

    def check_panel_links(self) -> None:
        """Every panel of the start page leads to a page that works (fetched, not followed)."""
        for link in self.page.locator(".accord-panel h2 a").all():  # read, not evaluated: works without JavaScript
            href = urljoin(self.page.url, link.get_attribute("href"))
            status = self.page.request.get(href).status
            assert status == 200, f"{self.name}: the start page links to {href}, which answered {status}"

    def sign_out(self) -> Any:
        self.page.get_by_role("button", name="Sign out").click()
        return self.see("Signed out", heading="Sign in")

    def follow(self, step: str, link: str, *, heading: str | None = None, exact: bool = False,
               within: str | None = None) -> Any:
        """Follow a link by its visible text, as a person would, and check where it led."""
        scope = self.page.locator(within) if within else self.page
        target = scope.get_by_role("link", name=link, exact=exact).first
        menu = self.page.get_by_role("button", name="Menu")
        if not target.is_visible() and menu.count() and menu.is_visible():
            menu.click()  # on a narrow screen the service navigation folds into a menu
        target.click()
        return self.see(step, heading=heading)

    def press(self, step: str, button: str, *, heading: str | None = None) -> Any:
        self.page.get_by_role("button", name=button, exact=True).click()
        return self.see(step, heading=heading)

    def panel_count(self, title: str) -> int:
        """The number on the start page's panel of this title."""
        panel = self.page.locator(".accord-panel", has=self.page.get_by_role("link", name=title, exact=True))
        return int(panel.locator(".accord-panel__count").inner_text())

    def fill_in_date(self, legend: str, when: date) -> None:
        """Type a date into the GOV.UK day, month and year boxes grouped under ``legend``."""
        group = self.page.get_by_role("group", name=legend)
        group.get_by_label("Day").fill(str(when.day))
        group.get_by_label("Month").fill(str(when.month))
        group.get_by_label("Year").fill(str(when.year))

    def error_summary(self) -> list[str]:
        summary = self.page.locator(".govuk-error-summary")
        assert summary.count() == 1, f"{self.name}: no error summary at {self.page.url}"
        return summary.locator("a").all_inner_texts()


@pytest.fixture
def journey(browser, live_server, axe, demo) -> Iterator[Callable[..., Journey]]:
    """``journey("officer", javascript=False, narrow=True)``: a fresh browser context for one person."""
    contexts = []

    def start(name: str, *, javascript: bool = True, narrow: bool = False) -> Journey:
        def new_context(scripted: bool):
            context = browser.new_context(base_url=live_server.url, java_script_enabled=scripted,
                                          viewport=NARROW if narrow else DESKTOP, locale="en-GB",
                                          timezone_id="Europe/London")
            context.set_default_timeout(10_000)
            contexts.append(context)
            return context

        # Playwright cannot evaluate script in a page whose JavaScript is off, and axe-core is script.
        checker = None if javascript else new_context(True).new_page()
        return Journey(name=name, page=new_context(javascript).new_page(), server=live_server, axe=axe,
                       password=demo, narrow=narrow, checker=checker)

    yield start
    for context in contexts:
        context.close()
