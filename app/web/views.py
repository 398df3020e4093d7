"""The start page and the health check."""
from __future__ import annotations

from flask import Blueprint, jsonify, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy import text

from app.extensions import db

bp = Blueprint("web", __name__)


@bp.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.sign_in"))
    return redirect(url_for("web.home"))


@bp.get("/home")
@login_required
def home():
    from app.web import home as home_service

    return render_template("web/home.html", panels=home_service.panels_for(db.session, current_user))


@bp.get("/healthz")
def healthz():
    """Whether the app is up and its database answers; 503 if the database does not."""
    try:
        db.session.execute(text("SELECT 1"))
        database = {"status": "ok", "dialect": db.engine.dialect.name}
        healthy = True
    except Exception:  # noqa: BLE001 - any failure means "not healthy"; details go to the log only
        db.session.rollback()
        database = {"status": "unavailable"}
        healthy = False
    body = {"status": "ok" if healthy else "unavailable", "app": {"status": "ok", "name": "accord"},
            "database": database}
    return jsonify(body), 200 if healthy else 503


@bp.get("/livez")
def livez():
    """Liveness: the process answers. No database, so a database outage never restarts workers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Readiness: the database answers, its schema is at the migrations' head, and policies are loaded."""
    from app import readiness

    checks = readiness.checks(db.session)
    ready = all(check["ok"] for check in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), 200 if ready else 503
