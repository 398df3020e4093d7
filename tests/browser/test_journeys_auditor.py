"""An auditor reads the trail and runs its verification, and can change nothing."""
from __future__ import annotations

AUDITOR = "auditor@dartford.example"
#: Words on buttons or links that would let someone change what an auditor only reads.
EDITING = ("Add", "Change", "Record", "Edit", "Delete", "Withdraw", "Sign off", "Decide", "Create")


def edit_controls(page) -> list[str]:
    """Buttons and links in the page's main content that would change something."""
    found = []
    for control in page.locator("main").get_by_role("button").all() + page.locator("main a.govuk-button").all():
        text = control.inner_text().strip()
        if text.startswith(EDITING):
            found.append(text)
    return found


def test_auditor_reads_the_trail_and_verifies_it(journey, live_server):
    j = journey("auditor")
    page = j.sign_in(AUDITOR)
    assert page.locator(".accord-panel", has_text="Decisions in the last 30 days").count() == 1

    j.follow("The register, read-only", "Register", heading="K-MISA register", exact=True)
    assert not edit_controls(page)
    j.follow("A partner, read-only", "Kent Police", heading="Kent Police", exact=True)
    assert not edit_controls(page)
    assert page.get_by_role("link", name="Record withdrawal").count() == 0

    j.follow("The audit trail", "Audit", heading="Audit trail", exact=True)
    assert "You see the events concerning" not in page.locator("main").inner_text(), "an auditor sees everything"
    # The newest event is this auditor signing in.
    first = page.locator(".accord-audit-events tbody tr").first
    assert "auth.signed_in" in first.inner_text() and AUDITOR in first.inner_text()
    seq = first.locator("td").first.inner_text().strip()
    j.follow("One event", seq, heading="auth.signed_in", exact=True, within=".accord-audit-events")
    assert page.locator(".govuk-caption-l").inner_text() == f"Audit event {seq}"
    assert not edit_controls(page)

    j.follow("Back to the trail", "Audit trail", heading="Audit trail", within=".govuk-breadcrumbs")
    j.follow("Verification", "Verification", heading="Is the audit trail intact?", exact=True)
    j.press("The trail verified", "Verify the trail now", heading="Is the audit trail intact?")
    assert "The audit trail verifies" in page.locator(".govuk-notification-banner").inner_text()
    result = page.locator("#last-verification")
    assert "Intact" in result.locator(".govuk-tag").inner_text()
    assert "Ari Auditor" in result.inner_text() or AUDITOR in result.inner_text()
    j.sign_out()
