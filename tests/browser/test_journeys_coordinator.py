"""The CSP coordinator keeps the register: who has lapsed, a new signature recorded for a partner,
the protocols and who has still to sign them off, what falls due, and the reminders that went out
(to a real SMTP server on loopback)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from app.clock import today
from tests.mailbox import Mailbox

COORDINATOR = "coordinator@dartford.example"
#: Kent Fire and Rescue Service's 2018 signature expired twenty days before the demo's today.
LAPSED = "Kent Fire and Rescue Service"


@pytest.fixture
def mailbox(live_server) -> Iterator[Mailbox]:
    """The partnership's mail server, which the live server delivers reminders to."""
    box = Mailbox().start()
    box.configure(live_server.app)
    yield box
    box.stop()


def test_coordinator_keeps_the_register_and_watches_what_is_due(journey, live_server, mailbox):
    # The scheduler's overnight run: the reminder sweep queues the e-mail, then the outbox sends it.
    live_server.cli("reminders", "sweep")
    live_server.cli("outbox", "deliver")
    delivered = len(mailbox.received)
    assert delivered >= 1
    j = journey("coordinator")
    page = j.sign_in(COORDINATOR)
    lapsed_before = j.panel_count("Partners without a current signature")
    assert lapsed_before >= 1 and j.panel_count("Signatures due for renewal") >= 1

    j.follow("Partners without a current signature", "Partners without a current signature",
             heading="K-MISA register")
    listed = page.locator("tbody tr").all_inner_texts()
    assert len(listed) == lapsed_before and any(LAPSED in row for row in listed)

    j.follow("The lapsed partner", LAPSED, heading=LAPSED)
    signatures = page.locator("table", has_text="Renew by")
    assert "Expired" in signatures.inner_text()
    j.press("The signature form", "Record a signature", heading="Record a K-MISA signature")
    j.press("A signature without its details", "Record signature", heading="Record a K-MISA signature")
    problems = j.error_summary()
    assert "Select the K-MISA version that was signed" in problems and "Enter who signed" in problems
    page.get_by_label("K-MISA version").select_option(label="K-MISA 2024")
    j.fill_in_date("Date signed", today())
    page.get_by_label("Signed by").fill("Chief Fire Officer")
    page.get_by_label("Chief officer").check()
    j.fill_in_date("Renewal date", today() + timedelta(days=3 * 365))
    j.press("The signature recorded", "Record signature", heading=LAPSED)
    assert "Signature recorded" in page.locator(".govuk-notification-banner").inner_text()
    assert page.locator("h1 .govuk-tag").inner_text().strip() == "Active"

    j.follow("The register, a partner fewer without a signature", "Home", heading="What needs your attention",
             exact=True)
    assert j.panel_count("Partners without a current signature") == lapsed_before - 1

    j.follow("Protocols", "Protocols", heading="Protocols", exact=True)
    j.follow("The draft safeguarding protocol", "version 3", heading="version 3")
    parties = page.locator("table", has_text="Sign-off").inner_text()
    assert "Kent Fire and Rescue Service" in parties
    assert page.get_by_role("button", name="Sign off").count() == 0, "only a party's DPO signs off"

    j.follow("What is due", "What is due", heading="What is due", exact=True)
    due = page.locator("#due-items tbody").inner_text()
    assert "Dartford Borough Council" in due, "its K-MISA signature is due for renewal within 90 days"

    j.follow("Reminders sent", "Outbox", heading="Outbox", exact=True)
    counts = page.locator("#outbox-counts").inner_text()
    assert counts == f"0 waiting, 0 failed, {delivered} sent.", counts
    sent = page.locator("table", has=page.locator("caption", has_text="Recently sent")).inner_text()
    assert "dpo@kent-fire-rescue.example" in sent, "its lapsed signature"
    # One digest a sweep to each address: the coordinator's lists everything due.
    assert "coordinator@dartford.example\tAccord reminders: " in sent
    j.sign_out()
