"""Register pages: every signed-in user reads; coordinators and administrators change."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.auth.models import Role
from app.auth.permissions import require_register_keeper
from app.clock import today
from app.errors import ValidationFailed
from app.extensions import db
from app.registry import forms, service
from app.web.fields import choices
from app.web.forms import apply_errors

bp = Blueprint("registry", __name__, url_prefix="/register")

STATUS_FILTERS = {
    "due_for_renewal": "Due for renewal",
    "not_current": "Without a current signature",
}


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every register page needs a signed-in user."""


def _can_edit() -> bool:
    return current_user.has_role(Role.ADMIN, Role.COORDINATOR)


def _status(code: int, form) -> int:
    return 422 if form.errors else code


@bp.get("/organisations")
def organisations():
    as_of = today()
    standings = [service.standing(o, as_of) for o in service.list_organisations(db.session)]
    wanted = request.args.get("status")
    if wanted == "due_for_renewal":
        standings = [s for s in standings if s.status is not None and s.status.value == wanted and not s.dissolved]
    elif wanted == "not_current":
        standings = [s for s in standings if not s.dissolved and (s.status is None or not s.status.is_current)]
    return render_template("registry/organisations.html", standings=standings, as_of=as_of, can_edit=_can_edit(),
                           filters=STATUS_FILTERS, current_filter=wanted, title="K-MISA register")


def _organisation_form(existing=None) -> forms.OrganisationForm:
    if existing is not None and request.method == "GET":
        form = forms.OrganisationForm(data={
            "name": existing.name, "kind": existing.kind,
            "is_public_authority": "yes" if existing.is_public_authority else "no",
            "is_competent_authority": "yes" if existing.is_competent_authority else "no",
            "dpo_name": existing.dpo_name, "dpo_email": existing.dpo_email,
            "ico_registration_number": existing.ico_registration_number,
            "ico_registration_expires_on": existing.ico_registration_expires_on,
            "apd_paragraphs": ", ".join(str(p) for p in existing.apd_paragraphs or []),
            "apd_review_on": existing.apd_review_on, "dissolved_on": existing.dissolved_on,
            "successor": existing.successor.code if existing.successor else "",
        })
    else:
        form = forms.OrganisationForm()
    form.successor.choices = choices([("", "None")] + [
        (o.code, o.name) for o in service.list_organisations(db.session) if existing is None or o.id != existing.id])
    return form


@bp.route("/organisations/new", methods=["GET", "POST"])
def organisation_new():
    require_register_keeper(current_user, "add organisations")
    form = _organisation_form()
    if form.validate_on_submit():
        try:
            organisation = service.create_organisation(db.session, current_user, form.service_data())
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash(f"{organisation.name} added to the register.", "success")
            return redirect(url_for("registry.organisation", code=organisation.code))
    return render_template("registry/organisation_form.html", form=form, creating=True,
                           title="Add an organisation"), _status(200, form)


@bp.get("/organisations/<code>")
def organisation(code: str):
    organisation = service.get_organisation(db.session, code)
    as_of = today()
    return render_template("registry/organisation.html", organisation=organisation, as_of=as_of,
                           standing=service.standing(organisation, as_of),
                           signatures=service.signature_views(organisation, as_of),
                           can_edit=_can_edit(), title=organisation.name)


@bp.route("/organisations/<code>/edit", methods=["GET", "POST"])
def organisation_edit(code: str):
    require_register_keeper(current_user, "change the register")
    organisation = service.get_organisation(db.session, code)
    form = _organisation_form(organisation)
    if form.validate_on_submit():
        data = form.service_data()
        data.pop("code")
        try:
            service.update_organisation(db.session, current_user, organisation, data)
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash("Changes saved.", "success")
            return redirect(url_for("registry.organisation", code=organisation.code))
    return render_template("registry/organisation_form.html", form=form, creating=False, organisation=organisation,
                           title=f"Change {organisation.name}"), _status(200, form)


@bp.route("/organisations/<code>/signatures/new", methods=["GET", "POST"])
def signature_new(code: str):
    require_register_keeper(current_user, "record signatures")
    organisation = service.get_organisation(db.session, code)
    form = forms.SignatureForm()
    form.kmisa_version.choices = choices([("", "Select a version")] + [
        (v.label, f"K-MISA {v.label}" + ("" if v.is_valid else " (no longer valid)"))
        for v in service.list_kmisa_versions(db.session)])
    if form.validate_on_submit():
        try:
            service.record_signature(db.session, current_user, organisation, {
                "kmisa_version": form.kmisa_version.data, "signed_on": form.signed_on.data,
                "signed_by_name": form.signed_by_name.data, "signed_by_role": form.signed_by_role.data,
                "expires_on": form.expires_on.data})
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash("Signature recorded.", "success")
            return redirect(url_for("registry.organisation", code=organisation.code))
    return render_template("registry/signature_form.html", form=form, organisation=organisation,
                           title=f"Record a signature for {organisation.name}"), _status(200, form)


@bp.route("/signatures/<int:signature_id>/withdraw", methods=["GET", "POST"])
def signature_withdraw(signature_id: int):
    require_register_keeper(current_user, "record withdrawals")
    signature = service.get_signature(db.session, signature_id)
    form = forms.WithdrawalForm()
    if form.validate_on_submit():
        try:
            service.withdraw_signature(db.session, current_user, signature, withdrawn_on=form.withdrawn_on.data,
                                       reason=form.reason.data)
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash("Withdrawal recorded.", "success")
            return redirect(url_for("registry.organisation", code=signature.organisation.code))
    return render_template("registry/withdraw_form.html", form=form, signature=signature,
                           title="Record a withdrawal"), _status(200, form)


@bp.get("/subgroups")
def subgroups():
    return render_template("registry/subgroups.html", subgroups=service.list_subgroups(db.session),
                           can_edit=_can_edit(), title="Subgroups")


def _subgroup_form(existing=None) -> forms.SubgroupForm:
    if existing is not None and request.method == "GET":
        form = forms.SubgroupForm(data={"name": existing.name, "description": existing.description,
                                        "lead_organisation": existing.lead_organisation.code,
                                        "parent": existing.parent.code if existing.parent else ""})
    else:
        form = forms.SubgroupForm()
    form.lead_organisation.choices = choices([("", "Select an organisation")] + [
        (o.code, o.name) for o in service.list_organisations(db.session)])
    form.parent.choices = choices([("", "None (this is the CSP board)")] + [
        (s.code, s.name) for s in service.list_subgroups(db.session) if existing is None or s.id != existing.id])
    return form


@bp.route("/subgroups/new", methods=["GET", "POST"])
def subgroup_new():
    require_register_keeper(current_user, "add subgroups")
    form = _subgroup_form()
    if form.validate_on_submit():
        try:
            subgroup = service.save_subgroup(db.session, current_user, {
                "code": (form.code.data or "").strip(), "name": form.name.data, "description": form.description.data,
                "lead_organisation": form.lead_organisation.data, "parent": form.parent.data or None})
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash(f"{subgroup.name} added.", "success")
            return redirect(url_for("registry.subgroup", code=subgroup.code))
    return render_template("registry/subgroup_form.html", form=form, creating=True,
                           title="Add a subgroup"), _status(200, form)


@bp.get("/subgroups/<code>")
def subgroup(code: str):
    subgroup = service.get_subgroup(db.session, code)
    return render_template("registry/subgroup.html", subgroup=subgroup, can_edit=_can_edit(), title=subgroup.name)


@bp.route("/subgroups/<code>/edit", methods=["GET", "POST"])
def subgroup_edit(code: str):
    require_register_keeper(current_user, "change subgroups")
    subgroup = service.get_subgroup(db.session, code)
    form = _subgroup_form(subgroup)
    if form.validate_on_submit():
        try:
            service.save_subgroup(db.session, current_user, {
                "name": form.name.data, "description": form.description.data,
                "lead_organisation": form.lead_organisation.data, "parent": form.parent.data or None},
                existing=subgroup)
        except ValidationFailed as exc:
            db.session.rollback()
            apply_errors(form, exc)
        else:
            db.session.commit()
            flash("Changes saved.", "success")
            return redirect(url_for("registry.subgroup", code=subgroup.code))
    return render_template("registry/subgroup_form.html", form=form, creating=False, subgroup=subgroup,
                           title=f"Change {subgroup.name}"), _status(200, form)
