"""Reminder pages: notifications for everyone, what is due and its calendar feed for coordinators
and DPOs, the outbox for coordinators and administrators."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth.permissions import require_role
from app.clock import today, utcnow
from app.errors import NotFound, ValidationFailed
from app.extensions import db
from app.reminders import calendar, forms, service
from app.web.forms import apply_errors

bp = Blueprint("reminders", __name__, url_prefix="/reminders")

#: How far ahead the calendar feed looks (the page shows 90 days).
FEED_DAYS = 365


@bp.before_request
def _signed_in():
    """Every page needs a signed-in user, except the feed, which carries its own secret."""
    if request.endpoint == "reminders.calendar_feed":
        return None
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    return None


def _page_number(value: str | None) -> int:
    """A page number from the address or a form; anything that is not one is a clear error."""
    if value in (None, ""):
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ValidationFailed({"page": "Pages are numbered from 1."}, f"There is no page {value!r}: pages are "
                                                                       "numbered from 1.")
    return int(value)


def _to_last_page(endpoint: str, pages: int):
    """Where a page beyond the last one goes (its last reminders were dealt with): the last page."""
    return redirect(url_for(endpoint, page=pages if pages > 1 else None))


@bp.get("/due")
def due():
    as_of = today()
    page = _page_number(request.args.get("page"))
    due_page = service.what_is_due(db.session, current_user, as_of, days=90, page=page)
    if page > due_page.pages:
        return _to_last_page("reminders.due", due_page.pages)
    return render_template("reminders/due.html", due_page=due_page, as_of=as_of, title="What is due")


@bp.get("/notifications")
def notifications():
    as_of = today()
    page = _page_number(request.args.get("page"))
    lists = service.list_notifications(db.session, current_user, as_of, page=page)
    if page > lists.pages:
        return _to_last_page("reminders.notifications", lists.pages)
    return render_template("reminders/notifications.html", lists=lists, as_of=as_of, title="Notifications")


@bp.post("/notifications/<int:claim_id>/acknowledge")
def acknowledge(claim_id: int):
    notification = service.acknowledge(db.session, current_user, claim_id, now=utcnow())
    db.session.commit()
    flash(f"Acknowledged: {notification.title}", "success")
    page = _page_number(request.form.get("page"))
    return redirect(url_for("reminders.notifications", page=page if page > 1 else None))


@bp.route("/notifications/<int:claim_id>/snooze", methods=["GET", "POST"])
def snooze(claim_id: int):
    notification = service.get_notification(db.session, current_user, claim_id)
    form = forms.SnoozeForm()
    if form.validate_on_submit():
        try:
            service.snooze(db.session, current_user, claim_id, until=form.until.data, as_of=today(),
                           now=utcnow())
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash(f"Snoozed until {form.until.data.day} {form.until.data:%B %Y}: {notification.title}", "success")
            return redirect(url_for("reminders.notifications"))
    return render_template("reminders/snooze.html", form=form, notification=notification,
                           title="Snooze a reminder"), 422 if form.errors else 200


@bp.get("/outbox")
def outbox():
    view = service.outbox_view(db.session, current_user)
    mail_configured = bool(current_app.config.get("MAIL_SERVER"))
    return render_template("reminders/outbox.html", view=view, mail_configured=mail_configured, title="Outbox")


@bp.post("/outbox/retry")
def outbox_retry():
    count = service.retry_failed(db.session, current_user, now=utcnow())
    db.session.commit()
    flash(f"{count} failed e-mail{'' if count == 1 else 's'} queued to be sent again.", "success")
    return redirect(url_for("reminders.outbox"))


def _calendar_page(feed_url: str | None = None):
    require_role(current_user, *service.DUE_READERS, action="subscribe to the calendar of due dates")
    token = service.feed_token(db.session, current_user)
    return render_template("reminders/calendar.html", token=token, feed_url=feed_url,
                           title="Calendar of due dates")


@bp.get("/calendar")
def calendar_page():
    return _calendar_page()


@bp.post("/calendar")
def calendar_create():
    plaintext = service.create_feed_token(db.session, current_user, now=utcnow(),
                                          pepper=current_app.config["TOKEN_PEPPER"])
    db.session.commit()
    # Shown in this response only: the secret is stored as a hash and never put in a cookie.
    response = current_app.make_response(
        _calendar_page(url_for("reminders.calendar_feed", token=plaintext, _external=True)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/calendar/revoke")
def calendar_revoke():
    count = service.revoke_feed_tokens(db.session, current_user, now=utcnow())
    db.session.commit()
    flash("Your calendar address no longer works." if count else "You had no calendar address.", "success")
    return redirect(url_for("reminders.calendar_page"))


@bp.get("/calendar/<token>.ics")
def calendar_feed(token: str):
    """The due dates as text/calendar, for the holder of a live feed secret; anyone else gets 404."""
    user = service.user_for_feed(db.session, token, pepper=current_app.config["TOKEN_PEPPER"])
    if user is None:
        raise NotFound("There is no such calendar")
    items = service.due_for(db.session, user, today(), days=FEED_DAYS)
    body = calendar.render_feed(items, now=utcnow(),
                                calendar_name=f"{current_app.config['SERVICE_NAME']}: what is due")
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Type"] = "text/calendar; charset=utf-8"
    response.headers["Content-Disposition"] = 'inline; filename="accord-due.ics"'
    response.headers["Cache-Control"] = "private, no-store"
    return response
