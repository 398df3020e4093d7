"""One app context and one transaction around a piece of work: how every job runs."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask
from sqlalchemy.orm import Session

from app.extensions import db

T = TypeVar("T")


def in_transaction(app: Flask, work: Callable[[Session], T]) -> T:
    """Run ``work(session)`` in its own app context; commit if it returns, roll back if it raises."""
    with app.app_context():
        try:
            result = work(db.session)
            db.session.commit()
            return result
        except BaseException:
            db.session.rollback()
            raise
