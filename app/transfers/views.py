"""Transfer pages: the inbox and outbox, a transfer with its download and destruction
confirmation, and the upload page for an exchange that may proceed.

The upload is a plain multipart form that works without JavaScript; ``transfers-upload.js``
adds a progress bar by sending the same form with XMLHttpRequest. Either way the body is read
here as a stream, never through ``request.form`` or ``request.files`` (which would spool the
plaintext to a temporary file), so the global CSRF check is replaced by the same check made on
the token field, which the form sends before the file.
"""
from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError, validate_csrf
from werkzeug.http import parse_options_header
from wtforms import ValidationError

from app import database
from app.clock import utcnow
from app.decisions import service as decisions
from app.errors import ValidationFailed
from app.extensions import csrf, db
from app.transfers import forms, service, streaming
from app.transfers.keys import keyring_for
from app.transfers.multipart import MalformedUpload, StreamingForm
from app.web.forms import apply_errors

bp = Blueprint("transfers", __name__)


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every page here needs a signed-in user."""


@bp.get("/transfers")
def index():
    now = utcnow()
    inbox = service.list_transfers(db.session, current_user, service.TransferFilters(box="inbox", limit=100), now=now)
    outbox = service.list_transfers(db.session, current_user, service.TransferFilters(box="outbox", limit=100),
                                    now=now)
    return render_template(
        "transfers/index.html", inbox=inbox, outbox=outbox, now=now,
        sendable=service.sendable_exchanges(db.session, current_user, now=now),
        unconfirmed=service.unconfirmed_destructions(db.session, now=now,
                                                     organisation_id=current_user.organisation_id),
        title="Transfers")


@bp.get("/transfers/<transfer_id>")
def transfer(transfer_id: str):
    now = utcnow()
    item = service.get_transfer(db.session, current_user, transfer_id)
    can_confirm = (service.is_recipient(current_user, item) and current_user.has_role(*service.HANDLERS)
                   and item.is_destroyed and item.confirmation_pending)
    return render_template("transfers/transfer.html", transfer=item, now=now, status=item.status(now),
                           may_download=service.may_download(current_user, item),
                           is_recipient=service.is_recipient(current_user, item),
                           confirm_form=forms.ConfirmDestructionForm() if can_confirm else None,
                           title=f"Transfer of {item.filename}")


@bp.get("/transfers/<transfer_id>/download")
def download(transfer_id: str):
    if request.method == "HEAD":
        # A link checker or prefetch asking about the link is neither a download nor audited as one.
        service.get_transfer(db.session, current_user, transfer_id)
        return "", 200
    return streaming.payload_response(streaming.open_download(current_user, transfer_id))


@bp.post("/transfers/<transfer_id>/destruction-confirmation")
def confirm_destruction(transfer_id: str):
    item = service.get_transfer(db.session, current_user, transfer_id)
    form = forms.ConfirmDestructionForm()
    if form.validate_on_submit():
        service.confirm_destruction(db.session, current_user, item, now=utcnow())
        db.session.commit()
        flash("Thank you: the destruction of your copies is recorded.", "success")
    return redirect(url_for("transfers.transfer", transfer_id=item.id), code=303)


@bp.route("/exchanges/<int:exchange_id>/transfer", methods=["GET", "POST"])
@csrf.exempt  # checked below on the token field, before the file is read (see the module docstring)
def upload(exchange_id: int):
    exchange = decisions.get_exchange(db.session, current_user, exchange_id)
    now = utcnow()
    service.require_may_send(current_user, exchange, now=now)
    form = forms.UploadForm(formdata=None)
    max_bytes = streaming.max_payload_bytes()
    if request.method == "POST":
        try:
            transfer = _receive(exchange, max_bytes, now)
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
            if _wants_json():
                return jsonify(error={"code": exc.code, "message": " ".join(exc.errors.values())}), 422
        else:
            database.commit(db.session)
            location = url_for("transfers.transfer", transfer_id=transfer.id)
            # Shown on the transfer's page whether the browser posted the form or sent it by script.
            flash(f"{transfer.filename} was encrypted and sent to {exchange.to_organisation.name}.", "success")
            if _wants_json():
                return jsonify(location=location), 201
            return redirect(location, code=303)
    return render_template("transfers/upload.html", form=form, exchange=exchange, max_bytes=max_bytes,
                           title="Send a file"), 422 if form.errors else 200


def _receive(exchange, max_bytes: int, now):
    # The form's own fields add a few hundred bytes to the file; MAX_FORM_BYTES bounds them.
    streaming.limit_request_body(max_bytes + current_app.config["MAX_FORM_BYTES"])
    kind, options = parse_options_header(request.headers.get("Content-Type", ""))
    if kind != "multipart/form-data" or not options.get("boundary"):
        raise ValidationFailed({"payload": "Select a file to send"})
    body = StreamingForm(request.stream, options["boundary"].encode("latin-1"))
    try:
        part = body.next_file("payload")
        _check_csrf(body.fields.get("csrf_token"))
        if part is None or not part.filename:
            raise ValidationFailed({"payload": "Select a file to send"})
        return service.send(db.session, current_user, exchange, part, filename=part.filename,
                            media_type=part.content_type, now=now, keyring=keyring_for(current_app.config),
                            max_bytes=max_bytes)
    except MalformedUpload:
        raise ValidationFailed({"payload": "The file did not arrive complete. Nothing was stored: try again"}) \
            from None


def _check_csrf(token: str | None) -> None:
    if not current_app.config.get("WTF_CSRF_ENABLED", True):
        return
    try:
        validate_csrf(token)
    except ValidationError as exc:
        raise CSRFError(exc.args[0]) from None


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"
