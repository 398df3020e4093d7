"""A partner officer asks whether they may share, reads why not, fixes it, submits, sends the data and follows it.

The same journey runs three ways: in an ordinary browser, with JavaScript switched off (every
journey must work without it), and on a 320 px wide screen, where no page may scroll sideways.
"""
from __future__ import annotations

import re

import pytest

from tests.browser.ways import WAYS, journey_name

OFFICER = "officer@kent-police.example"
REFERRAL = b"name,date_of_birth\nA. Child,2012-03-04\n"


def fill_in_a_safeguarding_request(page, *, method: str) -> None:
    """Kent Police to Dartford Borough Council under the approved safeguarding protocol."""
    page.get_by_label("Who do you want to share with?").select_option(label="Dartford Borough Council")
    page.get_by_label("Which protocol are you sharing under?").select_option("vcs-safeguarding:v2")
    page.get_by_label("Purpose").select_option(label="Safeguarding children")
    information = page.get_by_role("group", name="What information do you want to share?")
    information.get_by_label("Identity (identity)").check()
    information.get_by_label("Contact details (contact)", exact=True).check()
    page.get_by_role("group", name="Who is the information about?").get_by_label("Child (under 18)").check()
    page.get_by_label("How many people is it about?").fill("1")
    page.get_by_label("Your lawful basis (UK GDPR Article 6)").select_option("e")
    page.get_by_label("Statutory gateway").select_option("cda-1998-s115")
    page.get_by_label("How will you send it?").select_option(label=method)
    page.get_by_label("How many months will the recipient keep it?").fill("12")
    page.get_by_label("Why is sharing necessary?").fill("A child at risk of exploitation has moved into the borough.")


def request_id_from(page) -> int:
    match = re.search(r"/exchanges/(\d+)$", page.url)
    assert match, f"not on a request's page: {page.url}"
    return int(match.group(1))


@pytest.mark.parametrize("way", WAYS)
def test_officer_asks_reads_the_reasons_submits_and_follows_the_request(journey, way):
    j = journey(journey_name("officer", way), **way)
    page = j.sign_in(OFFICER)

    j.follow("Requests to share", "Requests", heading="Requests to share", exact=True)
    j.press("The question form", "Ask whether you may share", heading="Ask whether you may share")

    fill_in_a_safeguarding_request(page, method="Ordinary email without encryption")
    j.press("The answer: not by ordinary email", "Check", heading="Ask whether you may share")
    verdict = page.locator(".accord-verdict")
    assert "You may not share" in verdict.inner_text()
    reasons = page.locator("h3:has-text('Why') + ul").inner_text()
    assert "Art 32" in reasons or "5(1)(f)" in reasons, reasons
    # Checking records nothing and keeps every answer, so only the method needs changing.
    assert page.get_by_label("Statutory gateway").input_value() == "cda-1998-s115"

    page.get_by_label("How will you send it?").select_option(label="Accord encrypted transfer")
    j.press("The answer: an encrypted transfer is allowed", "Check", heading="Ask whether you may share")
    assert "You may share" in page.locator(".accord-verdict").inner_text()
    assert "Every check (20)" in page.locator("details summary").first.inner_text()

    j.press("The request recorded", "Submit the request", heading="Kent Police to Dartford Borough Council")
    allowed = request_id_from(page)
    assert f"Request {allowed} recorded: you may share" in page.locator(".govuk-notification-banner").inner_text()
    assert page.locator("h1 .govuk-tag").inner_text().strip() == "Allow"

    # The data itself goes as an encrypted transfer under the allowed request.
    filename = f"{j.name}-referral.csv"
    j.press("The upload page", "Send the data", heading="Send a file to Dartford Borough Council")
    page.get_by_label("File to send").set_input_files(files=[{"name": filename, "mimeType": "text/csv",
                                                               "buffer": REFERRAL}])
    page.get_by_role("button", name="Send the file").click()
    page.wait_for_url(re.compile(r"/transfers/[\w-]+$"))  # with JavaScript, after the progress bar
    j.see("The file sent", heading=filename)
    assert "encrypted and sent to Dartford Borough Council" in page.locator(".govuk-notification-banner").inner_text()
    assert page.locator("h1 .govuk-tag").inner_text().strip() == "Sent"
    under = page.locator(".govuk-summary-list__row", has_text="Under request").locator(".govuk-summary-list__value")
    assert under.inner_text().strip() == str(allowed)

    j.follow("Its status among the files sent", "Transfers", heading="Transfers", within=".govuk-breadcrumbs")
    sent = page.locator("#outbox tbody tr", has=page.get_by_role("link", name=filename))
    assert sent.locator(".govuk-tag").inner_text().strip() == "Sent"
    assert sent.locator("td").nth(3).inner_text().strip() == "0", "nobody has downloaded it yet"

    j.follow("Back to the list of requests", "Requests", heading="Requests to share", exact=True)
    row = page.locator("tbody tr", has=page.get_by_role("link", name=str(allowed), exact=True))
    assert "Allow" in row.locator(".govuk-tag").inner_text()
    assert re.search(r"\d{1,2} [A-Z][a-z]+ 20\d\d", row.inner_text()), "dates are written the UK way"

    # A one-off request without a statutory gateway goes to a data protection officer.
    j.press("The question form again", "Ask whether you may share", heading="Ask whether you may share")
    page.get_by_label("Who do you want to share with?").select_option(label="Kent County Council")
    page.get_by_label("Which protocol are you sharing under?").select_option("one-off")
    page.get_by_label("Purpose").select_option(label="Safeguarding children")
    page.get_by_role("group", name="What information do you want to share?").get_by_label("Identity (identity)").check()
    page.get_by_role("group", name="Who is the information about?").get_by_label("Child (under 18)").check()
    page.get_by_label("Your lawful basis (UK GDPR Article 6)").select_option("e")
    page.get_by_label("How will you send it?").select_option(label="Accord encrypted transfer")
    page.get_by_label("How many months will the recipient keep it?").fill("6")
    j.press("A referred request recorded", "Submit the request", heading="Kent Police to Kent County Council")
    referred = request_id_from(page)
    assert "referred to a data protection officer" in page.locator(".govuk-notification-banner").inner_text()
    assert "awaiting" in page.locator("h1 .govuk-tag").inner_text().lower()
    assert "statutory power" in page.locator("h3:has-text('Why') + ul").inner_text()

    j.follow("Back to the list of requests", "Requests to share", heading="Requests to share", within=".govuk-breadcrumbs")
    j.follow("Only the requests awaiting a DPO", "awaiting a DPO", heading="Requests to share")
    listed = page.locator("tbody tr a").all_inner_texts()
    assert str(referred) in listed and str(allowed) not in listed

    # Only this officer asks in this module, so the start page counts exactly what the list shows.
    j.follow("Start page", "Home", heading="What needs your attention", exact=True)
    assert j.panel_count("Your requests awaiting a DPO") == len(listed)
    j.sign_out()
