"""The accord command: seeding, users and tokens, each one transaction."""
from __future__ import annotations

from sqlalchemy import func, select

from app.auth.models import ApiToken, User
from app.registry.models import Organisation


def test_seed_demo_once_does_not_load_twice(runner, session, demo):
    before = session.scalar(select(func.count()).select_from(Organisation))
    result = runner.invoke(args=["seed", "demo", "--once"])
    assert result.exit_code == 0 and "not loaded again" in result.output
    refused = runner.invoke(args=["seed", "demo"])
    assert refused.exit_code != 0 and "not empty" in refused.output
    assert session.scalar(select(func.count()).select_from(Organisation)) == before


def test_seed_demo_into_an_empty_database_prints_the_sign_ins(runner):
    result = runner.invoke(args=["seed", "demo"])
    assert result.exit_code == 0, result.output
    assert "officer@kent-police.example" in result.output and "accord-demo-2026" in result.output


def test_users_create_validates_and_creates(runner, session, demo):
    bad = runner.invoke(args=["users", "create", "--email", "x@y.example", "--name", "X", "--organisation",
                              "atlantis", "--role", "officer", "--password", "long-enough-password"])
    assert bad.exit_code == 2 and "organisation" in bad.output
    ok = runner.invoke(args=["users", "create", "--email", "Analyst@Kent-Police.example", "--name", "Ana",
                             "--organisation", "kent-police", "--role", "officer", "--role", "dpo",
                             "--password", "long-enough-password"])
    assert ok.exit_code == 0, ok.output
    user = session.scalar(select(User).where(User.email == "analyst@kent-police.example"))
    assert user.roles == {"officer", "dpo"}


def test_tokens_create_prints_the_secret_once_and_stores_only_a_hash(runner, session, demo, client):
    result = runner.invoke(args=["tokens", "create", "--user", "officer@kent-police.example", "--name", "case system",
                                 "--scope", "read"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[0]
    assert secret.startswith("acc_")
    stored = session.scalars(select(ApiToken)).all()
    assert all(secret not in (t.token_hash, t.prefix) for t in stored)
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json["organisation"] == "kent-police"


def test_policies_check_passes_on_the_shipped_policies(runner):
    result = runner.invoke(args=["policies", "check"])
    assert result.exit_code == 0, result.output
