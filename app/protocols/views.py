"""Protocols: what covers each subgroup, each version rendered, sign-off, and the impact of a change."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.auth.models import Role
from app.auth.permissions import require_role
from app.clock import today, utcnow
from app.decisions import service as decisions
from app.errors import ValidationFailed
from app.extensions import db
from app.policies import loader
from app.protocols import forms, service
from app.registry import service as registry
from app.web.forms import apply_errors

bp = Blueprint("protocols", __name__, url_prefix="/protocols")

#: Largest proposed protocol file accepted for an impact replay.
MAX_PROPOSED_FILE_BYTES = 256 * 1024


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every protocol page needs a signed-in user."""


@bp.get("/")
def index():
    views = service.list_protocols(db.session, today(), subgroup=request.args.get("subgroup") or None)
    return render_template("protocols/index.html", views=views, subgroups=registry.list_subgroups(db.session),
                           current_subgroup=request.args.get("subgroup"), title="Protocols")


@bp.route("/<code>/v<int:version>", methods=["GET", "POST"])
def version(code: str, version: int):
    found = service.get_protocol_version(db.session, code, version)
    siblings = service.list_protocols(db.session, today())
    view = next(v for v in siblings if v.version.id == found.id)
    parsed = service.stored_bundle(db.session).protocol(code, version).protocol
    form = forms.SignOffForm()
    own = current_user.organisation.code
    can_sign = (current_user.has_role(Role.DPO) and own in found.party_codes and own not in found.signed_off_codes
                and not found.is_retired)
    if request.method == "POST":
        require_role(current_user, Role.DPO, action="sign off a protocol")
        if form.validate_on_submit():
            try:
                service.sign_off(db.session, current_user, found, now=utcnow())
            except ValidationFailed as exc:
                db.session.rollback()
                apply_errors(form, exc)
            else:
                db.session.commit()
                flash(f"{current_user.organisation.name} has signed off {found.title} version {found.version}.", "success")
                return redirect(url_for("protocols.version", code=code, version=version))
    organisations = {o.code: o for o in registry.list_organisations(db.session)}
    return render_template("protocols/version.html", view=view, protocol=parsed, form=form, can_sign=can_sign,
                           organisations=organisations, title=f"{found.title} – version {found.version}"), \
        422 if form.errors else 200


@bp.route("/impact", methods=["GET", "POST"])
def impact():
    require_role(current_user, Role.DPO, Role.COORDINATOR, Role.ADMIN, action="replay requests against a proposal")
    form = forms.ImpactForm()
    result = None
    if form.validate_on_submit():
        proposed, problems = {}, []
        for upload in request.files.getlist(form.files.name):
            if not upload or not upload.filename:
                continue
            content = upload.read(MAX_PROPOSED_FILE_BYTES + 1)
            if len(content) > MAX_PROPOSED_FILE_BYTES:
                problems.append(f"{upload.filename} is larger than 256 KB")
                continue
            proposed[_proposed_path(content, upload.filename)] = content
        if not proposed and not problems:
            problems.append("Choose at least one proposed protocol file")
        if problems:
            apply_errors(form, ValidationFailed({"files": "; ".join(problems)}))
        elif form.since.data > form.until.data:
            apply_errors(form, ValidationFailed({"until": "The end of the period must be after its start"}))
        else:
            try:
                result = decisions.impact(db.session, proposed, since=form.since.data, until=form.until.data)
            except ValidationFailed as exc:
                apply_errors(form, ValidationFailed({"files": exc.errors.get("proposed", exc.message)}))
    return render_template("protocols/impact.html", form=form, result=result,
                           title="What a proposed protocol would change"), 422 if form.errors else 200


def _proposed_path(content: bytes, filename: str) -> str:
    """Where a proposed file would live, from its own subgroup, code and version fields."""
    import yaml

    try:
        data = yaml.safe_load(content) or {}
        return f"{loader.PROTOCOLS_DIR}/{data['subgroup']}/{data['code']}-v{data['version']}.yaml"
    except Exception:  # noqa: BLE001 - the loader reports the real problem with its line and field
        return f"{loader.PROTOCOLS_DIR}/proposed/{filename}"
