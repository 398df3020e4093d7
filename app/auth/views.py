"""Signing in and out, changing a password, and managing users."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth import forms, service
from app.auth.permissions import require_admin
from app.clock import utcnow
from app.errors import ValidationFailed
from app.extensions import db
from app.registry import service as registry
from app.web.fields import choices
from app.web.forms import apply_errors

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only follow a ``next`` that stays on this site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("web.home")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    if current_user.is_authenticated:
        return redirect(url_for("web.home"))
    form = forms.SignInForm()
    problem = None
    if form.validate_on_submit():
        config = current_app.config
        result = service.sign_in(db.session, email=form.email.data, password=form.password.data, now=utcnow(),
                                 max_failures=config["LOGIN_MAX_FAILURES"],
                                 lockout=timedelta(minutes=config["LOGIN_LOCKOUT_MINUTES"]))
        db.session.commit()
        if result.user is not None:
            login_user(result.user)
            return redirect(_safe_next(request.args.get("next")))
        problem = result.problem
        form.password.errors = [problem]
    status = 200 if not form.errors else 422 if problem is None else 401
    return render_template("auth/sign_in.html", form=form, title="Sign in"), status


@bp.post("/sign-out")
@login_required
def sign_out():
    service.sign_out(db.session, current_user._get_current_object())
    db.session.commit()
    logout_user()
    flash("You have signed out.", "success")
    return redirect(url_for("auth.sign_in"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    form = forms.ChangePasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            service.change_password(db.session, user, current=form.current_password.data, new=form.new_password.data)
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            login_user(user)  # this session continues under the new session version; all others end
            flash("Your password has been changed. Other sessions have been signed out.", "success")
            return redirect(url_for("web.home"))
    return render_template("auth/change_password.html", form=form, title="Change your password"), 422 if form.errors else 200


@bp.get("/users")
@login_required
def users():
    require_admin(current_user, "manage users")
    return render_template("auth/users.html", users=service.list_users(db.session), title="Users")


@bp.route("/users/new", methods=["GET", "POST"])
@login_required
def user_new():
    require_admin(current_user, "create users")
    form = forms.UserForm()
    form.organisation.choices = choices([("", "Select an organisation")] + [
        (o.code, o.name) for o in registry.list_organisations(db.session)])
    if form.validate_on_submit():
        try:
            user = service.create_user(db.session, current_user, email=form.email.data, name=form.name.data,
                                       organisation_code=form.organisation.data, roles=form.roles.data,
                                       password=form.password.data)
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash(f"User {user.email} created.", "success")
            return redirect(url_for("auth.user", user_id=user.id))
    return render_template("auth/user_form.html", form=form, title="Add a user"), 422 if form.errors else 200


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@login_required
def user(user_id: int):
    require_admin(current_user, "manage users")
    subject = service.get_user(db.session, user_id)
    form = forms.RolesForm(data={"roles": sorted(subject.roles)} if request.method == "GET" else None)
    if form.validate_on_submit():
        try:
            service.set_roles(db.session, current_user, subject, form.roles.data)
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash("Roles saved. The user's existing sessions have ended.", "success")
            return redirect(url_for("auth.user", user_id=subject.id))
    return render_template("auth/user.html", subject=subject, form=form, title=subject.name), 422 if form.errors else 200
