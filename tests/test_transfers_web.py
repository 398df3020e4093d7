"""Transfers in the browser-facing UI: upload without JavaScript, the inbox, download, destruction."""
from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.clock import as_utc
from app.transfers import service
from app.transfers.models import Transfer, TransferDownload
from tests.transfers_support import (
    CANARY,
    COUNCIL_DPO,
    COUNCIL_OFFICER,
    POLICE_OFFICER,
    audit_actions,
    counts,
    payload,
    record_allowed_exchange,
    send,
)


@pytest.fixture
def exchange(session, demo):
    return record_allowed_exchange(session, POLICE_OFFICER, "dartford-bc")


@pytest.fixture
def no_spooling(app, monkeypatch):
    """Fail if Werkzeug's form parser is asked for a file to spool an upload into."""
    def refuse(*args, **kwargs):
        raise AssertionError("the upload was spooled by the form parser")

    monkeypatch.setattr(app.request_class, "_get_file_stream", refuse)


def form_with_file(data: bytes, filename: str = "referral.csv", token: str = "") -> dict:
    # The token first, as the page puts it: the server checks it before reading the file.
    return {"csrf_token": token, "payload": (io.BytesIO(data), filename, "text/csv")}


def test_upload_without_javascript_then_download_by_the_recipient(auth, client, session, exchange, no_spooling):
    data = payload(200_000)
    auth.sign_in(POLICE_OFFICER)
    start = client.get("/transfers").get_data(as_text=True)
    assert f'href="/exchanges/{exchange.id}/transfer"' in start
    page = client.get(f"/exchanges/{exchange.id}/transfer")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in html and 'name="payload"' in html
    assert html.index('name="csrf_token"') < html.index('name="payload"')
    assert "transfers-upload.js" in html and "<script>" not in html

    sent = client.post(f"/exchanges/{exchange.id}/transfer", data=form_with_file(data),
                       content_type="multipart/form-data")
    assert sent.status_code == 303, sent.data
    transfer = session.scalars(select(Transfer)).one()
    assert sent.headers["Location"].endswith(f"/transfers/{transfer.id}")
    assert transfer.size == len(data) and transfer.filename == "referral.csv" and transfer.media_type == "text/csv"
    mine = client.get(f"/transfers/{transfer.id}").get_data(as_text=True)
    assert "only Dartford Borough Council can download it" in mine and "Download the file" not in mine
    auth.sign_out()

    auth.sign_in(COUNCIL_OFFICER)
    inbox = client.get("/transfers").get_data(as_text=True)
    assert "referral.csv" in inbox and "Kent Police" in inbox and ">Sent</strong>" in inbox
    detail = client.get(f"/transfers/{transfer.id}").get_data(as_text=True)
    assert "Download the file" in detail and transfer.sha256 in detail
    assert client.head(f"/transfers/{transfer.id}/download").status_code == 200
    assert audit_actions(session, transfer.id) == ["transfer.sent"]  # a HEAD is not a download
    download = client.get(f"/transfers/{transfer.id}/download")
    assert download.status_code == 200 and download.data == data
    assert download.headers["X-Content-SHA256"] == transfer.sha256
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert audit_actions(session, transfer.id) == ["transfer.sent", "transfer.downloaded", "transfer.receipt"]
    assert ">Downloaded</strong>" in client.get("/transfers").get_data(as_text=True)


def test_the_progress_bar_path_gets_json(auth, client, session, exchange):
    auth.sign_in(POLICE_OFFICER)
    sent = client.post(f"/exchanges/{exchange.id}/transfer", data=form_with_file(b"abc"),
                       content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert sent.status_code == 201 and sent.json["location"].startswith("/transfers/")
    empty = client.post(f"/exchanges/{exchange.id}/transfer", data=form_with_file(b""),
                        content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert empty.status_code == 422 and "empty" in empty.json["error"]["message"]


def test_the_script_is_a_static_module(client):
    with client.get("/static/transfers-upload.js") as script:
        assert script.status_code == 200
        assert b"XMLHttpRequest" in script.data and b"upload.addEventListener" in script.data


def test_no_file_chosen_is_422_with_the_error_beside_the_field(auth, client, session, exchange):
    auth.sign_in(POLICE_OFFICER)
    before = counts(session)
    response = client.post(f"/exchanges/{exchange.id}/transfer", data=form_with_file(b"", filename=""),
                           content_type="multipart/form-data")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "There is a problem" in html and "Select a file to send" in html and 'href="#payload"' in html
    assert counts(session) == before


def test_a_body_that_ends_early_is_refused_and_nothing_is_stored(auth, client, session, exchange):
    auth.sign_in(POLICE_OFFICER)
    before = counts(session)
    boundary = "accordboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\nx\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"payload\"; filename=\"a.csv\"\r\n"
            f"Content-Type: text/csv\r\n\r\n").encode() + payload(100_000)  # no closing boundary
    response = client.post(f"/exchanges/{exchange.id}/transfer", data=body,
                           content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 422 and b"did not arrive complete" in response.data
    assert counts(session) == before


def test_the_csrf_token_is_checked_before_the_file_is_read(app, auth, client, session, exchange):
    auth.sign_in(POLICE_OFFICER)
    app.config["WTF_CSRF_ENABLED"] = True
    before = counts(session)
    refused = client.post(f"/exchanges/{exchange.id}/transfer", data=form_with_file(b"data", token="forged"),
                          content_type="multipart/form-data")
    assert refused.status_code == 400
    assert counts(session) == before
    page = client.get(f"/exchanges/{exchange.id}/transfer").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    accepted = client.post(f"/exchanges/{exchange.id}/transfer", data=form_with_file(b"data", token=token),
                           content_type="multipart/form-data")
    assert accepted.status_code == 303


def test_an_oversized_upload_is_refused_before_anything_is_stored(app, auth, client, session, exchange):
    auth.sign_in(POLICE_OFFICER)
    app.config["MAX_PAYLOAD_BYTES"] = 50_000
    before = counts(session)
    response = client.post(f"/exchanges/{exchange.id}/transfer", data=form_with_file(payload(60_000)),
                           content_type="multipart/form-data")
    assert response.status_code == 413 and b"larger than" in response.data
    assert counts(session) == before


def test_the_upload_page_needs_an_exchange_that_may_proceed_and_a_sender(auth, client, session, demo):
    from app.clock import utcnow
    from app.decisions import service as decisions
    from tests.transfers_support import ALLOWED_REQUEST, user

    denied = decisions.record(session, user(session, POLICE_OFFICER),
                              {**ALLOWED_REQUEST, "from_org": "kent-police", "to_org": "dartford-bc",
                               "retention_months": 60}, now=utcnow())
    allowed = record_allowed_exchange(session, POLICE_OFFICER, "dartford-bc")
    session.commit()
    auth.sign_in(POLICE_OFFICER)
    assert client.get(f"/exchanges/{denied.id}/transfer").status_code == 409
    assert f"/exchanges/{denied.id}/transfer" not in client.get("/transfers").get_data(as_text=True)
    auth.sign_out()
    auth.sign_in(COUNCIL_OFFICER)
    assert client.get(f"/exchanges/{allowed.id}/transfer").status_code == 403
    assert client.post(f"/exchanges/{allowed.id}/transfer", data=form_with_file(b"x"),
                       content_type="multipart/form-data").status_code == 403
    assert session.scalar(select(func.count()).select_from(Transfer)) == 0


def test_transfers_is_in_the_menu_for_officers_and_dpos_only(auth, client, demo):
    for email, shown in ((POLICE_OFFICER, True), (COUNCIL_DPO, True), ("auditor@dartford.example", False),
                         ("coordinator@dartford.example", False)):
        auth.sign_in(email)
        home = client.get("/home").get_data(as_text=True)
        assert ('href="/transfers"' in home) is shown, email
        auth.sign_out()


def test_the_recipient_confirms_destruction_of_copies_on_the_transfer_page(app, auth, client, session, exchange):
    transfer = send(app, session, POLICE_OFFICER, exchange, CANARY)
    auth.sign_in(COUNCIL_DPO)
    assert client.get(f"/transfers/{transfer.id}/download").data == CANARY
    deadline = as_utc(transfer.retention_until)
    service.purge_expired(session, now=deadline)
    session.commit()

    page = client.get(f"/transfers/{transfer.id}").get_data(as_text=True)
    assert "Confirm your copies are destroyed" in page and "Download the file" not in page
    assert client.get(f"/transfers/{transfer.id}/download").status_code == 410
    confirmed = client.post(f"/transfers/{transfer.id}/destruction-confirmation")
    assert confirmed.status_code == 303
    page = client.get(f"/transfers/{transfer.id}").get_data(as_text=True)
    assert "the destruction of your copies is recorded" in page and "Confirmed by" in page
    assert "Confirm your copies are destroyed" not in page
    assert session.scalar(select(func.count()).select_from(TransferDownload)) == 1


def test_an_unconfirmed_destruction_is_flagged_on_the_transfers_page(app, auth, client, session, exchange,
                                                                    monkeypatch):
    transfer = send(app, session, POLICE_OFFICER, exchange, b"data")
    auth.sign_in(COUNCIL_OFFICER)
    client.get(f"/transfers/{transfer.id}/download")
    requested = as_utc(transfer.retention_until)
    service.purge_expired(session, now=requested)
    session.commit()
    import app.transfers.views as views

    monkeypatch.setattr(views, "utcnow", lambda: requested + timedelta(days=8))
    page = client.get("/transfers").get_data(as_text=True)
    assert "still need the recipient to confirm" in page or "still needs the recipient to confirm" in page
    assert ">Destruction unconfirmed</strong>" in page
