"""A data protection officer decides referrals, reviews emergency sharing after the fact, signs off
a protocol, and audits what happened: a filtered trail, a decision record, a transfer's timeline
and an export of the evidence.

The requests and the file they judge are prepared through the services, as partner officers
would have made them; everything the DPO does happens in the browser.
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from app.clock import today
from tests.transfers_support import ALLOWED_REQUEST, POLICE_DPO, POLICE_OFFICER

#: One-off sharing by a public authority that names no statutory gateway: a DPO must decide.
ONE_OFF = {"from_org": "kent-police", "to_org": "kent-cc", "purpose": "safeguarding_children",
           "data_categories": ["identity"], "subject_types": ["child"], "transfer_method": "accord_transfer",
           "lawful_basis": "e", "one_off": True, "retention_months": 6}
EMERGENCY = {**ONE_OFF, "to_org": "bluewater", "purpose": "crime_prevention", "subject_types": ["offender"],
             "emergency": {"category": "risk_to_life",
                           "justification": "A man has threatened to kill a shop worker today"}}
#: A DPO of a party that has still to sign off version 3 of the safeguarding protocol.
COUNTY_DPO = "dpo@kent-cc.example"


@pytest.fixture(scope="module")
def requests_to_judge(live_server) -> dict[str, int]:
    """Two referrals, an emergency disclosure and an allowed request with a file sent under it."""
    made = {
        "approve": live_server.record_exchange(POLICE_OFFICER, ONE_OFF),
        "refuse": live_server.record_exchange(POLICE_OFFICER, {**ONE_OFF, "retention_months": 3}),
        "emergency": live_server.record_exchange(POLICE_OFFICER, EMERGENCY),
        "allowed": live_server.record_exchange(POLICE_OFFICER, {**ALLOWED_REQUEST, "from_org": "kent-police",
                                                                "to_org": "dartford-bc"}),
    }
    live_server.send_file(POLICE_OFFICER, made["allowed"], b"name\nA. Child\n", filename="referral.csv")
    return made


def refuse(j, exchange_id: int, *, reasons: str) -> None:
    """From the list of referrals, refuse one with its reasons."""
    page = j.page
    j.follow(f"Referral {exchange_id}", f"Request {exchange_id}:", heading="Kent Police to Kent County Council")
    j.press(f"Deciding referral {exchange_id}", "Decide this referral", heading="Decide this referral")
    page.get_by_label("Refuse the exchange").check()
    page.get_by_label("Reasons").fill(reasons)
    j.press(f"Referral {exchange_id} refused", "Record decision", heading="Kent Police to Kent County Council")
    banner = page.locator(".govuk-notification-banner").inner_text()
    assert f"Your decision on request {exchange_id} is recorded" in banner


def test_dpo_decides_referrals_reviews_an_emergency_and_audits_them(journey, requests_to_judge):
    made = requests_to_judge
    j = journey("dpo")
    page = j.sign_in(POLICE_DPO)
    assert j.panel_count("Referrals waiting for your decision") == 2
    assert j.panel_count("Emergency sharing to review") == 1

    j.follow("Referrals and emergency reviews", "Referrals waiting for your decision",
             heading="Referrals and emergency reviews")
    assert "Referrals waiting for a decision (2)" in page.locator("main").inner_text()

    # A decision without reasons is refused, with the GOV.UK error summary.
    j.follow(f"Referral {made['approve']}", f"Request {made['approve']}:", heading="Kent Police to Kent County Council")
    j.press("The decision form", "Decide this referral", heading="Decide this referral")
    j.press("A decision without its reasons", "Record decision", heading="Decide this referral")
    problems = j.error_summary()
    assert "Select whether you approve or refuse the exchange" in problems
    assert "Enter the reasons for your decision" in problems
    assert page.title().startswith("Error: ")

    page.get_by_label("Approve the exchange").check()
    page.get_by_label("Reasons").fill("Necessary and proportionate: the child is at risk and the county must act.")
    j.fill_in_date("Approval lasts until", today() + timedelta(days=90))
    j.press(f"Referral {made['approve']} approved", "Record decision", heading="Kent Police to Kent County Council")
    assert page.locator("h1 .govuk-tag").inner_text().strip() == "Approved"
    decided = page.locator(".govuk-summary-list", has_text="Decided by").inner_text()
    assert "Dana DPO" in decided and re.search(r"\d{1,2} [A-Z][a-z]+ 20\d\d", decided)

    j.follow("Referrals again", "Referrals", heading="Referrals and emergency reviews", exact=True)
    refuse(j, made["refuse"],
           reasons="The county council already holds what it needs; sharing more would not be minimal.")
    assert page.locator("h1 .govuk-tag").inner_text().strip() == "Refused"

    # The emergency disclosure to Bluewater is reviewed after the fact.
    j.follow("Referrals, all decided", "Referrals", heading="Referrals and emergency reviews", exact=True)
    assert "No referral is waiting for your organisation." in page.locator("main").inner_text()
    j.follow("The emergency disclosure", f"Request {made['emergency']}:",
             heading="Kent Police to Bluewater Shopping Centre")
    j.press("The review form", "Review this emergency sharing", heading="Review this emergency sharing")
    assert "threatened to kill" in page.locator("main").inner_text()
    page.get_by_label("Yes, it was justified").check()
    page.get_by_label("What you found").fill(
        "A credible threat to life: the shop's security needed the description at once.")
    j.press("The emergency review recorded", "Record review", heading="Kent Police to Bluewater Shopping Centre")
    review = page.locator(".govuk-summary-list", has_text="Conclusion").inner_text()
    assert "Justified" in review and "Dana DPO" in review

    # The audit workspace: the trail filtered to one request, its decision record and a transfer's timeline.
    j.follow("The audit trail", "Audit", heading="Audit trail", exact=True)
    page.get_by_label("About").select_option("exchange")
    page.get_by_label("Its reference").fill(str(made["approve"]))
    j.press("The trail filtered to one request", "Apply filters", heading="Audit trail")
    rows = page.locator(".accord-audit-events tbody tr")
    actions = rows.locator("td:nth-child(3) code").all_inner_texts()
    assert actions and all(re.match(r"exchange\.", a) for a in actions), actions
    assert {"exchange.recorded", "exchange.referral_approved"} <= set(actions), actions

    j.follow("A decision record", f"Exchange {made['approve']}", heading=f"Request {made['approve']}")
    assert "Decision record" in page.locator(".govuk-caption-l").inner_text()
    assert "Dana DPO" in page.locator("main").inner_text()
    j.follow("Back to the trail", "Audit trail", heading="Audit trail", within=".govuk-breadcrumbs")
    page.get_by_label("About").select_option("exchange")
    page.get_by_label("Its reference").fill(str(made["allowed"]))
    j.press("The trail of the allowed request", "Apply filters", heading="Audit trail")
    j.follow("The allowed request's decision record", f"Exchange {made['allowed']}",
             heading=f"Request {made['allowed']}")
    j.follow("A transfer's timeline", "Transfer sent", heading="Kent Police to Dartford Borough Council")
    timeline = page.locator(".accord-audit-events tbody").inner_text()
    assert "transfer.sent" in timeline
    assert "referral.csv" not in page.locator("main").inner_text(), "a file name can name a person"

    # The evidence, exported for the ICO: the whole trail concerning Kent Police, as CSV and as JSON.
    j.follow("The audit trail again", "Audit trail", heading="Audit trail", within=".govuk-breadcrumbs")
    with page.expect_download() as arrived:
        page.get_by_role("link", name="CSV, for a spreadsheet").click()
    rows = list(csv.DictReader(io.StringIO(Path(arrived.value.path()).read_text(encoding="utf-8-sig"))))
    assert {"exchange.referral_approved", "exchange.referral_refused"} <= {r["action"] for r in rows}
    with page.expect_download() as arrived:
        page.get_by_role("link", name=re.compile("^JSON")).click()
    exported = json.loads(Path(arrived.value.path()).read_text())
    assert "exchange.emergency_reviewed" in {e["action"] for e in exported["events"]}
    assert exported["whole_chain"] is False, "a DPO exports the events concerning their organisation"
    assert len(exported["events"]) == len(rows), "both formats hold the same events"
    j.follow("Start page", "Home", heading="What needs your attention", exact=True)
    assert j.panel_count("Referrals waiting for your decision") == 0
    assert j.panel_count("Emergency sharing to review") == 0
    j.sign_out()


def test_dpo_signs_off_a_new_protocol_version(journey, live_server, demo):
    from app.auth import service as auth

    with live_server.database() as session:
        auth.create_user(session, "set-up", email=COUNTY_DPO, name="Kim County DPO", organisation_code="kent-cc",
                         roles=["dpo"], password=demo)
        session.commit()
    j = journey("dpo-sign-off")
    page = j.sign_in(COUNTY_DPO)
    assert j.panel_count("Protocols awaiting your sign-off") == 1

    j.follow("Protocols", "Protocols awaiting your sign-off", heading="Protocols")
    j.follow("The version awaiting sign-off", "version 3", heading="version 3")
    parties = page.locator("table", has_text="Kent County Council").inner_text()
    assert "Kent County Council" in parties
    j.press("Signing off without confirming", "Sign off", heading="version 3")
    assert j.error_summary(), "confirming is required"
    page.get_by_label("I have read this version and sign it off on behalf of my organisation").check()
    j.press("Signed off", "Sign off", heading="version 3")
    assert "Kent County Council has signed off" in page.locator(".govuk-notification-banner").inner_text()
    assert page.get_by_role("button", name="Sign off").count() == 0
    j.follow("Start page", "Home", heading="What needs your attention", exact=True)
    assert j.panel_count("Protocols awaiting your sign-off") == 0
    j.sign_out()
