"""The administrator gives a partner's officer a further role, and the officer's next start page shows
the work that role brings."""
from __future__ import annotations

ADMIN = "admin@dartford.example"
COUNCIL_OFFICER = "officer@dartford.example"


def test_admin_gives_an_officer_the_dpo_role(journey):
    j = journey("admin")
    page = j.sign_in(ADMIN)
    j.follow("Users", "Users", heading="Users", exact=True)
    row = page.locator("tbody tr", has=page.get_by_role("link", name="Dana DPO"))
    assert "Data protection officer" in row.inner_text(), "roles are named as people would name them"

    j.follow("A user's roles", "Olu Officer", heading="Olu Officer", exact=True)
    roles = page.get_by_role("group", name="Roles")
    assert roles.get_by_label("Officer", exact=True).is_checked()
    roles.get_by_label("Data protection officer").check()
    j.press("Roles saved", "Save roles", heading="Olu Officer")
    assert "Roles saved" in page.locator(".govuk-notification-banner").inner_text()
    j.sign_out()

    officer = journey("admin-then-the-officer")
    page = officer.sign_in(COUNCIL_OFFICER)
    assert "Data protection officer, Officer" in page.locator(".govuk-body-l").first.inner_text()
    assert officer.panel_count("Referrals waiting for your decision") == 0
    officer.sign_out()
