"""Signing in and out, changing a password, and managing users."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth import forms, service, tokens
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


@bp.post("/users/<int:user_id>/unlock")
@login_required
def user_unlock(user_id: int):
    require_admin(current_user, "unlock accounts")
    subject = service.get_user(db.session, user_id)
    if service.unlock(db.session, current_user, subject):
        db.session.commit()
        flash(f"{subject.name} can sign in again.", "success")
    else:
        flash(f"{subject.name}'s account was not locked.", "info")
    return redirect(url_for("auth.user", user_id=subject.id))


@bp.get("/account/tokens")
@login_required
def tokens_page():
    return render_template("auth/tokens.html", tokens=tokens.list_tokens(db.session, current_user), now=utcnow(),
                           token_status=tokens.status, title="Your API tokens")


@bp.route("/account/tokens/new", methods=["GET", "POST"])
@login_required
def token_new():
    form = forms.TokenForm()
    if form.validate_on_submit():
        try:
            issued = tokens.create_token(db.session, current_user, current_user, name=form.name.data,
                                         scopes=form.scopes.data, lifetime=timedelta(days=int(form.expires_in_days.data)),
                                         now=utcnow(), pepper=current_app.config["TOKEN_PEPPER"])
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            # The secret is in this response only: it is stored as a hash and never put in a cookie.
            response = make_response(render_template("auth/token_created.html", token=issued.token,
                                                     plaintext=issued.plaintext, title="Your new API token"))
            response.headers["Cache-Control"] = "no-store"
            return response
    return render_template("auth/token_form.html", form=form, title="Create an API token"), 422 if form.errors else 200


@bp.post("/account/tokens/<int:token_id>/revoke")
@login_required
def token_revoke(token_id: int):
    token = tokens.get_token(db.session, current_user, token_id)
    tokens.revoke(db.session, current_user, token, now=utcnow())
    db.session.commit()
    flash(f"The token {token.name} ({tokens.TOKEN_PREFIX}{token.prefix}) no longer works.", "success")
    own = token.user_id == current_user.id
    return redirect(url_for("auth.tokens_page" if own else "auth.users_tokens"))


@bp.get("/users/tokens")
@login_required
def users_tokens():
    require_admin(current_user, "see every API token")
    return render_template("auth/all_tokens.html", tokens=tokens.list_all_tokens(db.session), now=utcnow(),
                           token_status=tokens.status, title="Every API token")
