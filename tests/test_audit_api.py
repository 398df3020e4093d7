"""The audit trail through /api/v1: events with filters and keyset pages, verification and the
latest checkpoint; a `read` token of an auditor or a DPO, a DPO seeing their organisation's."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from app.audit import chain, keys, service
from app.audit.models import AuditEvent
from tests.transfers_support import record_allowed_exchange

AUDITOR = "auditor@dartford.example"
POLICE_DPO = "dpo@kent-police.example"


def test_the_audit_operations_are_documented(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    for path in ("/api/v1/audit/events", "/api/v1/audit/verify", "/api/v1/audit/checkpoints/latest"):
        assert path in paths and "get" in paths[path]
    responses = paths["/api/v1/audit/events"]["get"]["responses"]
    assert {"200", "401", "403", "422"} <= set(responses)


@pytest.mark.parametrize(("email", "scopes", "status"), [
    (AUDITOR, ("read",), 200), (POLICE_DPO, ("read",), 200), ("officer@kent-police.example", ("read",), 403),
    ("coordinator@dartford.example", ("read",), 403), (AUDITOR, ("check",), 403),
])
def test_auditors_and_dpos_with_a_read_token_may_read(client, api_token, email, scopes, status):
    response = client.get("/api/v1/audit/events", headers=api_token(email, *scopes))
    assert response.status_code == status and (status == 200 or "error" in response.json)
    assert client.get("/api/v1/audit/events").status_code == 401


def test_events_page_newest_first_with_keyset_cursors(client, api_token, session):
    headers = api_token(AUDITOR, "read")
    total = session.scalar(select(func.count()).select_from(AuditEvent))
    first = client.get("/api/v1/audit/events?limit=10", headers=headers).json
    seqs = [e["seq"] for e in first["events"]]
    assert seqs == list(range(total, total - 10, -1)) and first["newer"] is None and first["older"] == seqs[-1]
    second = client.get(f"/api/v1/audit/events?limit=10&before={first['older']}", headers=headers).json
    assert [e["seq"] for e in second["events"]] == list(range(total - 10, total - 20, -1))
    back = client.get(f"/api/v1/audit/events?limit=10&after={second['newer']}", headers=headers).json
    assert [e["seq"] for e in back["events"]] == seqs
    event = first["events"][0]
    assert set(event) >= {"seq", "occurred_at", "action", "details", "prev_hash", "hash", "mac", "counterparty"}


def test_filters_and_the_dpos_scope(client, api_token, session):
    exchange = record_allowed_exchange(session, "officer@dartford.example", "kent-cc")
    police = record_allowed_exchange(session, "officer@kent-police.example", "dartford-bc")
    auditor = api_token(AUDITOR, "read")
    found = client.get("/api/v1/audit/events?action=exchange.recorded&outcome=allow&protocol=vcs-safeguarding",
                       headers=auditor).json["events"]
    assert sorted(e["subject_id"] for e in found) == sorted([str(exchange.id), str(police.id)])
    dpo = client.get("/api/v1/audit/events?action=exchange.recorded&limit=500",
                     headers=api_token(POLICE_DPO, "read")).json["events"]
    assert [e["subject_id"] for e in dpo] == [str(police.id)]
    everything = client.get("/api/v1/audit/events?limit=500", headers=api_token(POLICE_DPO, "read")).json["events"]
    assert everything and all("kent-police" in (e["organisation"], e["counterparty"]) for e in everything)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "before=abc", "limit=true", "colour=red",
                                   "since=2026-02-30", "outcome=maybe", "since=2026-03-02&until=2026-03-01"])
def test_bad_queries_are_422_in_the_envelope(client, api_token, query):
    response = client.get(f"/api/v1/audit/events?{query}", headers=api_token(AUDITOR, "read"))
    assert response.status_code == 422 and response.json["error"]["code"] == "validation_failed"


def test_verify_reports_the_chain_and_names_the_first_bad_event(client, api_token, session):
    headers = api_token(AUDITOR, "read")
    service.create_checkpoint(session, now=service.utcnow(), signing_key=keys.signing_key())
    session.commit()
    report = client.get("/api/v1/audit/verify", headers=headers).json
    assert report["ok"] and report["checkpoint_verified"] and report["checkpoint_seq"] == report["head_seq"] - 1
    session.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 4"))
    session.commit()
    report = client.get("/api/v1/audit/verify", headers=headers).json
    assert not report["ok"] and report["first_bad_seq"] == 4 and report["problem"] == "hash_mismatch"


def test_the_latest_checkpoint_comes_with_the_key_that_checks_it(client, api_token, session):
    headers = api_token(POLICE_DPO, "read")
    assert client.get("/api/v1/audit/checkpoints/latest", headers=headers).json["checkpoint"] is None
    row = service.create_checkpoint(session, now=service.utcnow(), signing_key=keys.signing_key())
    session.commit()
    body = client.get("/api/v1/audit/checkpoints/latest", headers=headers).json
    checkpoint = chain.Checkpoint.from_dict(body["checkpoint"])
    assert checkpoint.seq == row.seq and body["key_id"] == row.key_id
    assert chain.verify_checkpoint(chain.load_public_key_pem(body["public_key_pem"]), checkpoint)
