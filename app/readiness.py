"""What must be true before a load balancer sends an instance traffic."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


@lru_cache(maxsize=1)
def migration_heads() -> frozenset[str]:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def checks(session: Session) -> dict[str, dict[str, object]]:
    from app.protocols.models import PolicyDocument

    result: dict[str, dict[str, object]] = {}
    try:
        session.execute(text("SELECT 1"))
        result["database"] = {"ok": True}
    except Exception:  # noqa: BLE001 - any failure means not ready; details go to the log only
        session.rollback()
        return {"database": {"ok": False}}
    try:
        current = set(session.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except Exception:  # noqa: BLE001 - no version table: never migrated
        session.rollback()
        current = set()
    heads = set(migration_heads())
    result["migrations"] = {"ok": current == heads, "database": sorted(current), "code": sorted(heads)}
    if result["migrations"]["ok"]:
        loaded = session.scalar(select(func.count()).select_from(PolicyDocument)) or 0
        result["policies"] = {"ok": loaded > 0}
    return result
