"""Health, liveness, readiness and request ids: what operators and load balancers rely on."""
from __future__ import annotations

import json
import logging

from app.observability import JsonFormatter, RequestIdFilter


def test_liveness_needs_no_database(client):
    assert client.get("/livez").json == {"status": "ok"}


def test_readiness_requires_migrations_at_head_and_policies(client, session, demo):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json["checks"]["migrations"]["ok"] is True
    from sqlalchemy import text

    session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    session.commit()
    behind = client.get("/readyz")
    assert behind.status_code == 503 and behind.json["checks"]["migrations"]["ok"] is False


def test_readiness_without_policies_is_not_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["checks"]["policies"]["ok"] is False


def test_every_response_carries_a_request_id_and_keeps_a_sane_one(client):
    generated = client.get("/livez").headers["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/livez", headers={"X-Request-ID": "abc12345-lb"}).headers["X-Request-ID"] == "abc12345-lb"
    hostile = client.get("/livez", headers={"X-Request-ID": "forged\" level=error"}).headers["X-Request-ID"]
    assert hostile != "forged\" level=error" and len(hostile) == 32


def test_json_log_lines_carry_the_request_id(app):
    record = logging.LogRecord("accord.access", logging.INFO, __file__, 1, "GET %s %s", ("/x", 200), None)
    record.status = 200
    with app.test_request_context("/x"):
        from flask import g

        g.request_id = "req-00000001"
        RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-00000001" and line["message"] == "GET /x 200" and line["status"] == 200
