"""The audit workspace pages: the trail and its filters, single events, decision records,
transfer timelines, verification, exports, the record of processing and the dashboard.

DPOs, auditors, coordinators and administrators use it (the services refuse anyone else); a DPO
sees what concerns their organisation unless they also hold an overseeing role. The public key
is public: partners need it to check what Accord signs, and it is no secret.
"""
from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, stream_with_context, url_for
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select

from app import database
from app.audit import chain, chart, dashboard, export, forms, keys, processing, service, workspace
from app.audit.models import AuditEvent
from app.clock import today, utcnow
from app.errors import ValidationFailed
from app.extensions import db, login_manager
from app.protocols import service as protocols
from app.registry import service as registry
from app.web.forms import apply_errors

bp = Blueprint("audit", __name__, url_prefix="/audit")

#: Pages anyone may fetch without signing in.
PUBLIC_ENDPOINTS = ("audit.public_key",)


@bp.before_request
def _readers_only():
    """Every page but the public key needs a signed-in audit reader."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    workspace.require_reader(current_user)
    return None


def _filter_form() -> forms.EventFilterForm:
    form = forms.EventFilterForm(formdata=request.args if request.args else None)
    organisations = [(o.code, o.name) for o in registry.list_organisations(db.session)]
    if not workspace.sees_everything(current_user):
        form.organisation.label.text = "Other organisation concerned"
    codes = sorted({(v.version.code, v.version.title) for v in protocols.list_protocols(db.session, today())})
    subgroups = [(s.code, s.name) for s in registry.list_subgroups(db.session)]
    form.fill_choices(organisations, codes, subgroups)
    return form


def _filters_or_errors(form: forms.EventFilterForm) -> workspace.EventFilters | None:
    """The filters the page asks for, or None with the errors on the form."""
    if request.args and not form.validate():
        return None
    try:
        return form.filters()
    except ValidationFailed as exc:
        apply_errors(form, exc)
        return None


@bp.get("/")
def events():
    form = _filter_form()
    filters = _filters_or_errors(form)
    page = None
    if filters is not None:
        page = workspace.search_events(db.session, current_user, filters,
                                       before=request.args.get("before", type=int),
                                       after=request.args.get("after", type=int))
    args = filters.as_args() if filters is not None else {}
    return render_template("audit/events.html", form=form, page=page, filters=filters, args=args,
                           scoped=not workspace.sees_everything(current_user),
                           title="Audit trail"), 200 if filters is not None else 422


@bp.get("/events/<int:seq>")
def event(seq: int):
    item = workspace.get_event(db.session, current_user, seq)
    record = chain.EventRecord(seq=item.seq, occurred_at=item.occurred_at, action=item.action, actor=item.actor,
                               organisation=item.organisation, subject_type=item.subject_type,
                               subject_id=item.subject_id, details=item.details, prev_hash=item.prev_hash,
                               hash=item.hash, mac=item.mac)
    sealed = chain.seal(seq=record.seq, prev_hash=record.prev_hash, occurred_at=record.occurred_at,
                        action=record.action, actor=record.actor, organisation=record.organisation,
                        subject_type=record.subject_type, subject_id=record.subject_id, details=record.details,
                        key=service.audit_key())
    previous, following = workspace.neighbours(db.session, current_user, seq)
    return render_template("audit/event.html", event=item, hash_ok=sealed.hash == item.hash,
                           mac_ok=sealed.mac == item.mac, previous=previous, following=following,
                           title=f"Audit event {seq}")


@bp.get("/exchanges/<int:exchange_id>")
def exchange(exchange_id: int):
    record = workspace.exchange_record(db.session, current_user, exchange_id)
    return render_template("audit/exchange.html", record=record, exchange=record.exchange,
                           decision=record.exchange.decision, now=utcnow(),
                           title=f"Decision record: request {exchange_id}")


@bp.get("/transfers/<transfer_id>")
def transfer(transfer_id: str):
    timeline = workspace.transfer_timeline(db.session, current_user, transfer_id)
    return render_template("audit/transfer.html", timeline=timeline, transfer=timeline.transfer, now=utcnow(),
                           title="Transfer timeline")


@bp.get("/subjects/<subject_type>/<subject_id>")
def subject(subject_type: str, subject_id: str):
    if subject_type == "exchange" and subject_id.isdigit():
        return redirect(url_for("audit.exchange", exchange_id=int(subject_id)))
    if subject_type == "transfer":
        return redirect(url_for("audit.transfer", transfer_id=subject_id))
    items = workspace.subject_events(db.session, current_user, subject_type, subject_id)
    return render_template("audit/subject.html", events=items, subject_type=subject_type, subject_id=subject_id,
                           title=f"Timeline of {subject_type.replace('_', ' ')} {subject_id}")


@bp.get("/verification")
def verification():
    latest = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "audit.verified")
                               .order_by(AuditEvent.seq.desc()).limit(1))
    checkpoint = service.latest_checkpoint(db.session)
    return render_template("audit/verification.html", latest=latest, checkpoint=checkpoint,
                           key_id=chain.key_id_for(keys.public_key()), title="Is the audit trail intact?")


@bp.post("/verification")
def run_verification():
    """Verify in a read-only transaction, then record the result in a short one: on SQLite the
    request's writing transaction would hold the write lock for the whole verification."""
    actor = current_user._get_current_object()
    db.session.rollback()
    with database.read_only():
        report = service.verify_current(db.session)
        db.session.rollback()
    service.record_verification(db.session, report, actor=actor, now=utcnow())
    db.session.commit()
    if report.ok:
        flash(f"The audit trail verifies: {report.checked} events checked.", "success")
    else:
        flash(f"The audit trail does not verify: event {report.first_bad_seq}, {report.problem}.", "important")
    return redirect(url_for("audit.verification"))


@bp.get("/public-key.pem")
def public_key():
    response = Response(keys.public_key_pem(), mimetype="application/x-pem-file")
    response.headers["Content-Disposition"] = 'attachment; filename="accord-audit-public-key.pem"'
    return response


@bp.get("/checkpoint.json")
def checkpoint():
    response = Response(_json(export.checkpoint_document(db.session)), mimetype="application/json")
    response.headers["Content-Disposition"] = 'attachment; filename="accord-audit-checkpoint.json"'
    return response


def _json(value) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)


@bp.get("/export.<any(json, csv):format>")
def export_events(format: str):
    form = _filter_form()
    filters = _filters_or_errors(form)
    if filters is None:
        return render_template("audit/events.html", form=form, page=None, filters=None, args={},
                               scoped=not workspace.sees_everything(current_user), title="Audit trail"), 422
    stamp = utcnow()
    actor = _actor_for_streaming()
    if format == "json":
        body = export.json_export(db.session, actor, filters, now=stamp)
        mimetype = "application/json"
    else:
        body = export.csv_export(db.session, actor, filters)
        mimetype = "text/csv"
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers["Content-Disposition"] = (f'attachment; filename="accord-audit-{stamp:%Y%m%dT%H%M%SZ}'
                                               f'{"" if filters.is_empty else "-filtered"}.{format}"')
    return response


def _actor_for_streaming():
    """The signed-in user with the organisation and roles that scoping reads already loaded: an
    export streams after the request's own session has closed, when nothing more can be loaded."""
    actor = current_user._get_current_object()
    actor.organisation.code, actor.roles  # noqa: B018 - loads both while the session is open
    return actor


@bp.get("/processing")
def processing_register():
    in_force = request.args.get("in_force") == "1"
    activities = processing.register(db.session, current_user, as_of=today(), in_force_only=in_force)
    return render_template("audit/processing.html", activities=activities, in_force=in_force,
                           title="Record of processing: sharing protocols")


@bp.get("/processing.csv")
def processing_csv():
    in_force = request.args.get("in_force") == "1"
    activities = processing.register(db.session, current_user, as_of=today(), in_force_only=in_force)
    response = Response(processing.csv_rows(activities), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="accord-record-of-processing-{today()}.csv"'
    return response


@bp.get("/dashboard")
def dashboard_page():
    figures = dashboard.build(db.session, current_user, as_of=today())
    svg = chart.stacked_bars(
        "Decisions recorded per month, by subgroup",
        f"Stacked bars, one per month from {figures.months[0]} to {figures.months[-1]}, each divided by "
        f"subgroup; {figures.decisions_total} decisions in all. The table below gives the same figures.",
        figures.months, figures.decisions, element_id="decisions-chart")
    return render_template("audit/dashboard.html", figures=figures, chart=Markup(svg),  # noqa: S704  # nosec B704 - built by chart.py, every text escaped
                           scoped=not workspace.sees_everything(current_user), title="Dashboard")
