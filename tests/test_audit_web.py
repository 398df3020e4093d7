"""The DPO's audit workspace in the browser-facing UI: who may use it, what each sees, the
filters and pages, a decision's full record, a transfer's timeline, verification, exports, the
record of processing and the dashboard (whose chart and table must carry the same figures)."""
from __future__ import annotations

import json
import re
from html import unescape

import pytest
from sqlalchemy import func, select

from app.audit import service
from app.audit.models import AuditEvent
from app.decisions import service as decisions
from app.extensions import db
from tests.transfers_support import ALLOWED_REQUEST, record_allowed_exchange, user

AUDITOR = "auditor@dartford.example"
POLICE_DPO = "dpo@kent-police.example"
COUNCIL_DPO = "dpo@dartford.example"
POLICE_OFFICER = "officer@kent-police.example"
COUNCIL_OFFICER = "officer@dartford.example"


def _seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tr class="govuk-table__row" data-seq="(\d+)">', html)]


def _page(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


@pytest.fixture
def exchanges(session, demo):
    """A police-to-council exchange and a council-to-police one, recorded through the service."""
    police = record_allowed_exchange(session, POLICE_OFFICER, "dartford-bc")
    council = record_allowed_exchange(session, COUNCIL_OFFICER, "kent-cc")
    return police, council


def test_only_dpos_auditors_coordinators_and_admins_use_the_workspace(auth, client):
    for email, status in ((POLICE_OFFICER, 403), (AUDITOR, 200), (POLICE_DPO, 200),
                          ("coordinator@dartford.example", 200), ("admin@dartford.example", 200)):
        auth.sign_in(email)
        assert client.get("/audit/").status_code == status, email
        assert client.get("/audit/dashboard").status_code == status, email
        auth.sign_out()
    assert client.get("/audit/").status_code == 302  # signed out: to the sign-in page


def test_the_menu_offers_audit_and_dashboard_to_those_who_may_use_them(auth, client):
    auth.sign_in(AUDITOR)
    home = _page(client, "/audit/")
    assert 'href="/audit/"' in home and 'href="/audit/dashboard"' in home
    auth.sign_out()
    auth.sign_in(POLICE_OFFICER)
    assert 'href="/audit/dashboard"' not in _page(client, "/register/organisations")


def test_an_auditor_sees_every_event_newest_first_in_keyset_pages(auth, client, session):
    total = session.scalar(select(func.count()).select_from(AuditEvent))
    auth.sign_in(AUDITOR)
    total += 1  # the sign-in itself
    first = _page(client, "/audit/")
    seqs = _seqs(first)
    assert seqs == list(range(total, total - 50, -1))
    older = re.search(r'href="(/audit/\?before=\d+)"', first).group(1)
    second = _seqs(_page(client, unescape(older)))
    assert second == list(range(total - 50, max(total - 100, 0), -1))
    newer = re.search(r'href="(/audit/\?after=\d+)"', _page(client, unescape(older))).group(1)
    assert _seqs(_page(client, unescape(newer))) == seqs


def test_filters_narrow_the_trail_and_keep_their_values_in_the_links(auth, client, exchanges):
    police, council = exchanges
    auth.sign_in(AUDITOR)
    html = _page(client, "/audit/?action=exchange.recorded&organisation=kent-police")
    assert _seqs(html) and all(seq for seq in _seqs(html))
    recorded = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "exchange.recorded")).all()
    expected = sorted((e.seq for e in recorded if "kent-police" in (e.organisation, e.counterparty)), reverse=True)
    assert _seqs(html) == expected and len(expected) == 1  # the council exchange went to kent-cc
    assert "action=exchange.recorded" in html and "organisation=kent-police" in html  # export links keep them
    by_protocol = _seqs(_page(client, "/audit/?protocol=vcs-safeguarding&outcome=allow"))
    assert by_protocol == sorted((e.seq for e in recorded), reverse=True)
    assert _seqs(_page(client, "/audit/?outcome=deny")) == []
    subject = _seqs(_page(client, f"/audit/?subject_type=exchange&subject_id={police.id}"))
    assert subject == [e.seq for e in recorded if e.subject_id == str(police.id)]


def test_bad_filters_are_shown_as_errors_with_422(auth, client):
    auth.sign_in(AUDITOR)
    response = client.get("/audit/?since=31&since=2&since=2026")
    assert response.status_code == 422 and "must be a real date" in response.get_data(as_text=True)
    response = client.get("/audit/?since=2&since=2&since=2026&until=1&until=2&until=2026")
    assert response.status_code == 422 and "must be the same as or after" in response.get_data(as_text=True)
    response = client.get("/audit/?organisation=nowhere")
    assert response.status_code == 422


def test_a_dpo_sees_only_events_concerning_their_organisation(auth, client, exchanges):
    police, council = exchanges
    auth.sign_in(COUNCIL_DPO)
    seqs = _seqs(_page(client, "/audit/?action=exchange.recorded"))
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.seq.in_(seqs))).all()
    assert events and all("dartford-bc" in (e.organisation, e.counterparty) for e in events)
    assert {e.subject_id for e in events} == {str(police.id), str(council.id)}  # received and sent
    all_seqs = _seqs(_page(client, "/audit/"))
    others = db.session.scalars(select(AuditEvent).where(AuditEvent.seq.in_(all_seqs))).all()
    assert all("dartford-bc" in (e.organisation, e.counterparty) for e in others)
    # Another organisation's event and decision record are simply not found.
    foreign = db.session.scalar(select(AuditEvent.seq).where(AuditEvent.organisation == "kent-cc").limit(1))
    assert client.get(f"/audit/events/{foreign}").status_code == 404
    auth.sign_out()
    auth.sign_in(POLICE_DPO)
    assert client.get(f"/audit/exchanges/{council.id}").status_code == 404
    assert client.get(f"/audit/exchanges/{police.id}").status_code == 200
    narrowed = _seqs(_page(client, "/audit/?organisation=dartford-bc&action=exchange.recorded"))
    assert [db.session.get(AuditEvent, s).subject_id for s in narrowed] == [str(police.id)]


def test_an_event_page_shows_its_content_and_that_it_matches_its_hash(auth, client, exchanges):
    police, _ = exchanges
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.subject_type == "exchange",
                                                       AuditEvent.subject_id == str(police.id)))
    auth.sign_in(AUDITOR)
    html = _page(client, f"/audit/events/{event.seq}")
    assert "Matches its hash" in html and "Sealed with the audit key" in html and event.hash in html
    assert "vcs-safeguarding:v2" in html and f"/audit/subjects/exchange/{police.id}" in html
    assert client.get("/audit/events/999999").status_code == 404


def test_a_decision_record_has_the_request_every_finding_and_its_events_in_order(auth, client, session, exchanges):
    police, _ = exchanges
    from app.transfers import service as transfers
    from app.transfers.keys import keyring_for
    import io

    app = client.application
    exchange = decisions.get_exchange(session, user(session, POLICE_OFFICER), police.id)
    transfer = transfers.send(session, user(session, POLICE_OFFICER), exchange, io.BytesIO(b"a,b\n1,2\n"),
                              filename="Jane Doe case notes.csv", media_type="text/csv",
                              now=service.utcnow(), keyring=keyring_for(app.config),
                              max_bytes=app.config["MAX_PAYLOAD_BYTES"])
    session.commit()
    auth.sign_in(AUDITOR)
    html = _page(client, f"/audit/exchanges/{police.id}")
    for field in ALLOWED_REQUEST:
        assert field.replace("_", " ").capitalize() in html, field
    findings = police.decision["findings"]
    for finding in findings:
        assert f"<code>{finding['rule']}</code>" in html
    events = db.session.scalars(select(AuditEvent).where(
        ((AuditEvent.subject_type == "exchange") & (AuditEvent.subject_id == str(police.id)))
        | ((AuditEvent.subject_type == "transfer") & (AuditEvent.subject_id == transfer.id)))
        .order_by(AuditEvent.seq)).all()
    assert [e.action for e in events] == ["exchange.recorded", "transfer.sent"]
    assert _seqs(html) == [e.seq for e in events]
    timeline = _page(client, f"/audit/transfers/{transfer.id}")
    assert _seqs(timeline) == [e.seq for e in events] and transfer.sha256 in timeline
    assert "Jane Doe" not in timeline  # the file name can name a person; the digest is enough
    assert client.get(f"/audit/subjects/transfer/{transfer.id}").status_code == 302
    auth.sign_out()
    auth.sign_in("dpo@kent-police.example")
    assert client.get(f"/audit/transfers/{transfer.id}").status_code == 200
    auth.sign_out()
    session.rollback()
    from app.auth import service as auth_service

    auth_service.create_user(session, "test", email="dpo@kent-cc.example", name="KCC DPO",
                             organisation_code="kent-cc", roles=["dpo"], password="a-long-enough-password")
    session.commit()
    auth.sign_in("dpo@kent-cc.example", "a-long-enough-password")
    assert client.get(f"/audit/transfers/{transfer.id}").status_code == 404


def test_a_generic_subject_timeline(auth, client):
    auth.sign_in(AUDITOR)
    html = _page(client, "/audit/subjects/protocol_version/vcs-safeguarding:v2")
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.subject_type == "protocol_version",
                                                         AuditEvent.subject_id == "vcs-safeguarding:v2")
                                .order_by(AuditEvent.seq)).all()
    assert _seqs(html) == [e.seq for e in events] and events


def test_verification_runs_from_the_page_and_its_result_is_recorded(auth, client, session):
    auth.sign_in(AUDITOR)
    html = _page(client, "/audit/verification")
    assert "has not been verified here yet" in html
    response = client.post("/audit/verification")
    assert response.status_code == 302
    html = _page(client, "/audit/verification")
    assert "The audit trail verifies" in html and "Intact" in html
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "audit.verified"))
    assert event.actor == AUDITOR and event.details["ok"] is True
    # Tamper, and the page names the event and the problem.
    from sqlalchemy import text

    session.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3"))
    session.commit()
    client.post("/audit/verification")
    html = _page(client, "/audit/verification")
    assert "Not intact" in html and 'href="/audit/events/3"' in html and "Hash mismatch" in html


def test_the_public_key_is_public_and_checks_the_checkpoint(client, session, demo):
    from app.audit import chain, keys

    row = service.create_checkpoint(session, now=service.utcnow(), signing_key=keys.signing_key())
    session.commit()
    response = client.get("/audit/public-key.pem")
    assert response.status_code == 200 and response.mimetype == "application/x-pem-file"
    public = chain.load_public_key_pem(response.data)
    assert chain.verify_checkpoint(public, service.as_checkpoint(row))
    assert client.get("/audit/checkpoint.json").status_code == 302  # the rest needs a sign-in


def test_exports_stream_the_view_with_the_checkpoint_and_key(auth, client, session, exchanges, tmp_path):
    from app.audit import chain, keys

    service.create_checkpoint(session, now=service.utcnow(), signing_key=keys.signing_key())
    session.commit()
    auth.sign_in(AUDITOR)
    response = client.get("/audit/export.json")
    assert response.status_code == 200 and response.is_streamed
    document = json.loads(response.get_data(as_text=True))
    assert document["whole_chain"] and document["checkpoint"]["seq"] <= document["events"][-1]["seq"]
    path = tmp_path / "trail.json"
    path.write_text(json.dumps(document))
    assert chain.main(["verify", str(path)]) == 0
    filtered = json.loads(client.get("/audit/export.json?outcome=allow").get_data(as_text=True))
    assert not filtered["whole_chain"] and len(filtered["events"]) == 2
    csv = client.get("/audit/export.csv?outcome=allow").get_data(as_text=True).strip().splitlines()
    assert len(csv) == 3 and "exchange.recorded" in csv[1]
    auth.sign_out()
    auth.sign_in(COUNCIL_DPO)
    scoped = json.loads(client.get("/audit/export.json").get_data(as_text=True))
    assert not scoped["whole_chain"]  # a DPO's whole view is still only part of the chain
    assert all("dartford-bc" in (e["organisation"], e["details"].get("to_org")) for e in scoped["events"])


def test_the_record_of_processing_lists_each_protocol_version_as_an_activity(auth, client):
    auth.sign_in(POLICE_DPO)
    html = _page(client, "/audit/processing")
    assert 'id="activity-vcs-safeguarding-v2"' in html and 'id="activity-ocg-disruption-v1"' in html
    for heading in ("Purposes", "Lawful bases", "Special category conditions", "Criminal offence data",
                    "Data subjects", "Recipients", "Retention", "Transfer methods", "DPIA"):
        assert f'<dt class="govuk-summary-list__key">{heading}</dt>' in html
    assert "Art 6(1)(e) public task" in html
    in_force = _page(client, "/audit/processing?in_force=1")
    assert in_force.count("govuk-summary-card__title") < html.count("govuk-summary-card__title")
    csv = client.get("/audit/processing.csv").get_data(as_text=True).splitlines()
    assert csv[0].startswith("Protocol,Version,Processing activity") and len(csv) == 1 + html.count(
        "govuk-summary-card__title\"")


def _chart_figures(html: str) -> dict[tuple[str, str], int]:
    svg = html[html.index("<svg"):html.index("</svg>")]
    figures = {}
    for bar in re.finditer(r'<g class="accord-chart__bar" data-category="([^"]+)" data-total="(\d+)">(.*?)</g>', svg):
        category = bar.group(1)
        for series, value in re.findall(r'data-series="([^"]+)" data-value="(\d+)"', bar.group(3)):
            figures[(unescape(series), category)] = int(value)
    return figures


def _table_figures(html: str) -> dict[tuple[str, str], int]:
    table = html[html.index('id="decisions-table"'):]
    table = table[:table.index("</table>")]
    months = re.findall(r'govuk-table__header--numeric">([^<]+)</th>', table)
    figures = {}
    for series, cells in re.findall(r'data-series="([^"]+)"><th[^>]*>[^<]*</th>(.*?)</tr>', table, re.S):
        for month, value in zip(months, re.findall(r'>(\d+)</td>', cells)):
            if int(value):
                figures[(unescape(series), month)] = int(value)
    return figures


def test_the_dashboard_chart_and_its_table_carry_the_same_figures(auth, client, session, exchanges):
    police = user(session, POLICE_OFFICER)
    one_off = {"purpose": "safeguarding_children", "data_categories": ["identity"], "subject_types": ["child"],
               "transfer_method": "accord_transfer", "lawful_basis": "e", "one_off": True, "retention_months": 6,
               "from_org": "kent-police", "to_org": "dartford-bc"}
    decisions.record(session, police, one_off, now=service.utcnow())
    session.commit()
    auth.sign_in(AUDITOR)
    html = _page(client, "/audit/dashboard")
    assert 'role="img"' in html and '<title id="decisions-chart-title">' in html
    chart, table = _chart_figures(html), _table_figures(html)
    assert chart == table and sum(chart.values()) == 3
    month = re.findall(r'data-category="([^"]+)"', html)[-1]
    assert chart[("One-off sharing (no protocol)", month)] == 1
    from app.registry import service as registry

    assert chart[(registry.get_subgroup(session, "vcs-group").name, month)] == 2
    assert "Referrals waiting for a DPO: 1" in html
    assert 'id="signatures"' in html and "Due for renewal" in html and 'id="due"' in html
    auth.sign_out()
    auth.sign_in(COUNCIL_DPO)
    scoped = _page(client, "/audit/dashboard")
    assert _chart_figures(scoped) == _table_figures(scoped)
    assert sum(_chart_figures(scoped).values()) == 3  # all three involve Dartford Borough Council
