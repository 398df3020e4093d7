"""An officer of the receiving organisation finds a file in the inbox, downloads it, and confirms
the destruction of their copies once Accord has destroyed its own at the end of the retention period.

Kent Police's request and its file are prepared through the services (the officer's journey shows
them being made); everything the council's officer does happens in the browser.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.ways import WAYS, journey_name
from tests.transfers_support import ALLOWED_REQUEST, COUNCIL_OFFICER, POLICE_OFFICER

CONTENT = b"name,date_of_birth,school\nA. Child,2012-03-04,Dartford Grammar\n"
#: Past the 12 months the request allows the council to keep the file.
AFTER_RETENTION_DAYS = 400


def a_file_sent_to_the_council(live_server, filename: str) -> str:
    exchange = live_server.record_exchange(POLICE_OFFICER, {**ALLOWED_REQUEST, "from_org": "kent-police",
                                                            "to_org": "dartford-bc"})
    return live_server.send_file(POLICE_OFFICER, exchange, CONTENT, filename=filename)


@pytest.mark.parametrize("way", WAYS)
def test_recipient_downloads_a_file_and_confirms_its_destruction(journey, live_server, way):
    name = journey_name("recipient", way)
    filename = f"{name}-referral.csv"
    a_file_sent_to_the_council(live_server, filename)
    j = journey(name, **way)
    page = j.sign_in(COUNCIL_OFFICER)
    # Earlier runs in this module destroyed their files, so only this one is waiting.
    assert j.panel_count("Files waiting to be downloaded") == 1

    j.follow("The inbox of transfers", "Files waiting to be downloaded", heading="Transfers", exact=True)
    row = page.locator("#inbox tbody tr", has=page.get_by_role("link", name=filename))
    assert "Kent Police" in row.inner_text()
    assert row.locator(".govuk-tag").inner_text().strip() == "Sent"

    j.follow("The file received", filename, heading=filename)
    assert "Nobody has downloaded it yet" in page.locator("main").inner_text()
    digest = page.locator(".govuk-summary-list__row", has_text="SHA-256").locator("code")
    assert len(digest.inner_text()) == 64, "the digest is shown as code, not as escaped markup"
    with page.expect_download() as arrived:
        page.get_by_role("button", name="Download the file").click()
    download = arrived.value
    assert download.suggested_filename == filename
    assert Path(download.path()).read_bytes() == CONTENT

    j.reload("The file after its download", heading=filename)
    assert page.locator("h1 .govuk-tag").inner_text().strip() == "Downloaded"
    assert "Olu Officer" in page.locator("table", has_text="Who").inner_text()

    live_server.let_retention_pass(days=AFTER_RETENTION_DAYS)
    j.reload("Destroyed by Accord when its retention ended", heading=filename)
    assert page.get_by_role("button", name="Download the file").count() == 0
    assert "Not confirmed yet" in page.locator(".govuk-summary-list").inner_text()
    j.press("Destruction of the copies confirmed", "Confirm we have destroyed our copies", heading=filename)
    assert "destruction of your copies is recorded" in page.locator(".govuk-notification-banner").inner_text()
    assert "Confirmed by Olu Officer" in page.locator(".govuk-summary-list").inner_text()

    j.follow("Start page", "Home", heading="What needs your attention", exact=True)
    assert j.panel_count("Destroyed files to confirm") == 0
    j.sign_out()
