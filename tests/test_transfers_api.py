"""Encrypted transfers through /api/v1: send and download round trip, receipts, scoping, size limits."""
from __future__ import annotations

import hashlib
import io
import tracemalloc
from urllib.parse import quote

import pytest
from openapi_spec_validator import validate
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.reminders.models import OutboxMessage
from app.transfers.models import Transfer, TransferChunk, TransferDownload
from tests.transfers_support import (
    CANARY,
    COUNCIL_DPO,
    COUNCIL_OFFICER,
    POLICE_DPO,
    POLICE_OFFICER,
    Reader,
    audit_actions,
    counts,
    payload,
    record_allowed_exchange,
)

ALL_SCOPES = ("read", "check", "submit", "transfer")


@pytest.fixture
def exchange(session, demo):
    """Kent Police to Dartford Borough Council, allowed under vcs-safeguarding v2."""
    return record_allowed_exchange(session, POLICE_OFFICER, "dartford-bc")


def chunked(data: bytes) -> dict:
    """A body of unknown length (a chunked upload, which the server de-chunks and terminates)."""
    return {"environ_overrides": {"wsgi.input": Reader(data), "wsgi.input_terminated": True}}


def upload(client, headers, exchange_id, data, *, filename="referral list.csv", media_type="text/csv", sha256=None):
    extra = {"X-Content-SHA256": sha256} if sha256 else {}
    return client.post(f"/api/v1/exchanges/{exchange_id}/transfer", data=data, headers={
        **headers, "Content-Type": media_type, "X-Accord-Filename": quote(filename), **extra})


def test_send_and_download_round_trip_with_digest_audit_and_receipt(client, session, api_token, exchange):
    data = payload(300_000)
    sender = api_token(POLICE_OFFICER, *ALL_SCOPES)
    sent = upload(client, sender, exchange.id, data, sha256=hashlib.sha256(data).hexdigest())
    assert sent.status_code == 201, sent.json
    body = sent.json
    assert body["status"] == "sent" and body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["filename"] == "referral list.csv" and body["media_type"] == "text/csv"
    assert body["from_org"] == "kent-police" and body["to_org"] == "dartford-bc"
    assert body["payload_available"] is False  # the sender holds the original
    assert sent.headers["Location"].endswith(f"/api/v1/transfers/{body['id']}")
    transfer_id = body["id"]
    assert len(transfer_id) == 36 and transfer_id.count("-") == 4

    recipient = api_token(COUNCIL_OFFICER, *ALL_SCOPES)
    listed = client.get("/api/v1/transfers?box=inbox", headers=recipient)
    assert [t["id"] for t in listed.json["transfers"]] == [transfer_id]
    assert listed.json["transfers"][0]["payload_available"] is True

    downloaded = client.get(f"/api/v1/transfers/{transfer_id}/payload", headers=recipient)
    assert downloaded.status_code == 200
    assert downloaded.data == data
    assert downloaded.headers["X-Content-SHA256"] == hashlib.sha256(data).hexdigest()
    assert downloaded.headers["Content-Length"] == str(len(data))
    assert downloaded.headers["Content-Type"] == "text/csv"
    assert downloaded.headers["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''referral%20list.csv" in downloaded.headers["Content-Disposition"]
    assert "sandbox" in downloaded.headers["Content-Security-Policy"]

    assert audit_actions(session, transfer_id) == ["transfer.sent", "transfer.downloaded", "transfer.receipt"]
    download = session.scalars(select(TransferDownload).where(TransferDownload.transfer_id == transfer_id)).one()
    assert download.user.email == COUNCIL_OFFICER and download.bytes == len(data)
    receipt = session.scalars(select(OutboxMessage).where(OutboxMessage.to_address == POLICE_OFFICER)).one()
    assert transfer_id in receipt.body and "Dartford Borough Council" in receipt.subject

    seen_by_sender = client.get(f"/api/v1/transfers/{transfer_id}", headers=sender).json
    assert seen_by_sender["status"] == "downloaded"
    assert [d["downloaded_by"] for d in seen_by_sender["downloads"]] == [COUNCIL_OFFICER]


def test_audit_events_never_hold_the_payload_or_the_file_name(client, session, api_token, exchange):
    data = payload(10_000)
    sent = upload(client, api_token(POLICE_OFFICER, "transfer"), exchange.id, data, filename="Jane Doe referral.csv")
    client.get(f"/api/v1/transfers/{sent.json['id']}/payload", headers=api_token(COUNCIL_DPO, "transfer"))
    events = session.scalars(select(AuditEvent).where(AuditEvent.subject_id == sent.json["id"])).all()
    assert {e.action for e in events} == {"transfer.sent", "transfer.downloaded", "transfer.receipt"}
    for event in events:
        text = repr(event.details)
        assert CANARY.decode() not in text and "Jane Doe" not in text
    assert events[0].details["sha256"] == hashlib.sha256(data).hexdigest()
    assert events[0].details["size"] == len(data) and events[0].details["key_id"]


def test_the_sender_sees_metadata_but_not_the_payload(client, api_token, exchange):
    sent = upload(client, api_token(POLICE_OFFICER, "transfer"), exchange.id, b"some data")
    for email in (POLICE_OFFICER, POLICE_DPO):
        headers = api_token(email, *ALL_SCOPES)
        assert client.get(f"/api/v1/transfers/{sent.json['id']}", headers=headers).status_code == 200
        refused = client.get(f"/api/v1/transfers/{sent.json['id']}/payload", headers=headers)
        assert refused.status_code == 403 and b"some data" not in refused.data


def test_a_head_request_is_not_a_download(client, session, api_token, exchange):
    sent = upload(client, api_token(POLICE_OFFICER, "transfer"), exchange.id, b"0123456789")
    head = client.head(f"/api/v1/transfers/{sent.json['id']}/payload", headers=api_token(COUNCIL_OFFICER, "transfer"))
    assert head.status_code == 200 and head.headers["Content-Length"] == "10" and head.data == b""
    assert audit_actions(session, sent.json["id"]) == ["transfer.sent"]


@pytest.mark.parametrize(("email", "scopes", "status"), [
    (POLICE_OFFICER, ("read",), 403),            # the token lacks the transfer scope
    (COUNCIL_OFFICER, ("transfer",), 403),       # the recipient cannot send under the sender's exchange
    ("auditor@dartford.example", ("transfer",), 403),
    ("admin@dartford.example", ("transfer",), 403),
])
def test_only_officers_and_dpos_of_the_sender_may_send(client, session, api_token, exchange, email, scopes, status):
    before = counts(session)
    response = upload(client, api_token(email, *scopes), exchange.id, b"data")
    assert response.status_code == status, response.json
    assert counts(session)["Transfer"] == before["Transfer"]


def test_nothing_can_be_sent_under_an_exchange_that_may_not_proceed(client, session, api_token, demo):
    from app.decisions import service as decisions
    from app.clock import utcnow
    from tests.transfers_support import ALLOWED_REQUEST, user

    officer = user(session, POLICE_OFFICER)
    denied = decisions.record(session, officer, {**ALLOWED_REQUEST, "from_org": "kent-police", "to_org": "dartford-bc",
                                                 "retention_months": 60}, now=utcnow())
    session.commit()
    assert denied.outcome == "deny"
    response = upload(client, api_token(POLICE_OFFICER, "transfer"), denied.id, b"data")
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    assert counts(session)["Transfer"] == 0


def test_a_missing_file_name_or_empty_body_or_wrong_digest_is_422_and_nothing_is_stored(client, session, api_token,
                                                                                       exchange):
    headers = api_token(POLICE_OFFICER, "transfer")
    before = counts(session)
    nameless = client.post(f"/api/v1/exchanges/{exchange.id}/transfer", data=b"data",
                           headers={**headers, "Content-Type": "text/plain"})
    assert nameless.status_code == 422 and nameless.json["error"]["fields"][0]["field"] == "filename"
    empty = upload(client, headers, exchange.id, b"")
    assert empty.status_code == 422 and empty.json["error"]["fields"][0]["field"] == "payload"
    wrong = upload(client, headers, exchange.id, b"data", sha256="0" * 64)
    assert wrong.status_code == 422 and wrong.json["error"]["fields"][0]["field"] == "sha256"
    assert counts(session) == before


def test_the_file_name_from_content_disposition_is_sanitised(client, api_token, exchange):
    sent = client.post(f"/api/v1/exchanges/{exchange.id}/transfer", data=b"x", headers={
        **api_token(POLICE_OFFICER, "transfer"), "Content-Type": "application/pdf; charset=binary",
        "Content-Disposition": "attachment; filename*=UTF-8''..%2F..%2Fetc%2Fcaf%C3%A9%3Cscript%3E.pdf"})
    assert sent.status_code == 201, sent.json
    assert sent.json["filename"] == "café_script_.pdf" and sent.json["media_type"] == "application/pdf"


def test_a_declared_length_over_the_limit_is_refused_before_reading_and_nothing_is_stored(app, client, session,
                                                                                           api_token, exchange):
    app.config["MAX_PAYLOAD_BYTES"] = 100_000
    headers = api_token(POLICE_OFFICER, "transfer")
    before = counts(session)
    response = client.post(f"/api/v1/exchanges/{exchange.id}/transfer",
                           environ_overrides={"wsgi.input": Reader(b"", forbid_reading=True),
                                              "CONTENT_LENGTH": "100001"},
                           headers={**headers, "Content-Type": "text/plain", "X-Accord-Filename": "big.txt"})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"
    assert "Nothing was stored" in response.json["error"]["message"]
    assert counts(session) == before


def test_a_stream_that_runs_over_the_limit_is_refused_and_nothing_is_stored(app, client, session, api_token, exchange):
    app.config["MAX_PAYLOAD_BYTES"] = 1_000_000
    headers = api_token(POLICE_OFFICER, "transfer")
    before = counts(session)
    response = client.post(f"/api/v1/exchanges/{exchange.id}/transfer", **chunked(payload(1_500_000)),
                           headers={**headers, "Content-Type": "text/plain", "X-Accord-Filename": "big.txt",
                                    "Transfer-Encoding": "chunked"})
    assert response.status_code == 413, response.json
    assert response.json["error"]["code"] == "payload_too_large"
    assert counts(session) == before


def test_a_payload_at_the_limit_is_accepted(app, client, api_token, exchange):
    app.config["MAX_PAYLOAD_BYTES"] = 200_000
    response = client.post(f"/api/v1/exchanges/{exchange.id}/transfer", **chunked(payload(200_000)),
                           headers={**api_token(POLICE_OFFICER, "transfer"), "Content-Type": "text/plain",
                                    "X-Accord-Filename": "fits.txt", "Transfer-Encoding": "chunked"})
    assert response.status_code == 201 and response.json["size"] == 200_000


def test_ordinary_requests_keep_the_small_body_limit(app, client, api_token, demo):
    too_big = b'{"code": "x", "padding": "' + b"a" * (app.config["MAX_FORM_BYTES"] + 10) + b'"}'
    response = client.post("/api/v1/organisations", data=too_big, headers={
        **api_token("coordinator@dartford.example", "submit"), "Content-Type": "application/json"})
    assert response.status_code == 413


def test_upload_and_download_use_bounded_memory(app, client, session, api_token, exchange):
    size = 12 * 1024 * 1024
    data = payload(size)
    headers = api_token(POLICE_OFFICER, "transfer")
    recipient = api_token(COUNCIL_OFFICER, "transfer")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        sent = client.post(f"/api/v1/exchanges/{exchange.id}/transfer", input_stream=io.BytesIO(data),
                           headers={**headers, "Content-Type": "application/octet-stream",
                                    "X-Accord-Filename": "large.bin", "Content-Length": str(size)})
        upload_peak = tracemalloc.get_traced_memory()[1] - baseline
        assert sent.status_code == 201

        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        response = client.get(f"/api/v1/transfers/{sent.json['id']}/payload", headers=recipient, buffered=False)
        digest, received = hashlib.sha256(), 0
        for piece in response.response:
            digest.update(piece)
            received += len(piece)
        response.close()
        download_peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert received == size and digest.hexdigest() == hashlib.sha256(data).hexdigest()
    # The payload (12 MiB, held by the test itself before measuring) never has a second copy in memory.
    assert upload_peak < 4 * 1024 * 1024, upload_peak
    assert download_peak < 4 * 1024 * 1024, download_peak


def test_the_api_document_describes_the_transfer_operations(client):
    document = client.get("/api/v1/openapi.json").json
    validate(document)
    upload_operation = document["paths"]["/api/v1/exchanges/{exchange_id}/transfer"]["post"]
    assert "application/octet-stream" in upload_operation["requestBody"]["content"]
    assert {"201", "401", "403", "404", "409", "413", "422"} <= set(upload_operation["responses"])
    assert {p["name"] for p in upload_operation["parameters"]} >= {"X-Accord-Filename", "X-Content-SHA256"}
    payload_operation = document["paths"]["/api/v1/transfers/{transfer_id}/payload"]["get"]
    assert {"200", "401", "403", "404", "409", "410", "422"} <= set(payload_operation["responses"])
    assert "application/octet-stream" in payload_operation["responses"]["200"]["content"]
    for path in ("/api/v1/transfers", "/api/v1/transfers/{transfer_id}",
                 "/api/v1/transfers/{transfer_id}/destruction-confirmation"):
        assert path in document["paths"]


def test_list_filters_by_box_status_and_exchange(client, session, api_token, exchange):
    headers = api_token(POLICE_OFFICER, *ALL_SCOPES)
    first = upload(client, headers, exchange.id, b"first").json["id"]
    second = upload(client, headers, exchange.id, b"second").json["id"]
    client.get(f"/api/v1/transfers/{first}/payload", headers=api_token(COUNCIL_OFFICER, "transfer"))
    outbox = client.get("/api/v1/transfers?box=outbox", headers=headers).json["transfers"]
    assert {t["id"] for t in outbox} == {first, second}
    assert client.get("/api/v1/transfers?box=inbox", headers=headers).json["transfers"] == []
    downloaded = client.get("/api/v1/transfers?status=downloaded", headers=headers).json["transfers"]
    assert [t["id"] for t in downloaded] == [first]
    sent = client.get("/api/v1/transfers?status=sent", headers=headers).json["transfers"]
    assert [t["id"] for t in sent] == [second]
    by_exchange = client.get(f"/api/v1/transfers?exchange_id={exchange.id}", headers=headers).json["transfers"]
    assert len(by_exchange) == 2
    assert client.get("/api/v1/transfers?box=elsewhere", headers=headers).status_code == 422
    assert client.get("/api/v1/transfers?limit=true", headers=headers).status_code == 422
    assert session.scalar(select(Transfer.id).where(Transfer.id == first)) == first
    assert session.scalars(select(TransferChunk.transfer_id).where(TransferChunk.transfer_id == second)).all()
