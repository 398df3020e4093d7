"""The web UI's shared pieces: templates, filters, the home page, health and errors."""
from __future__ import annotations

from flask import Flask
from govuk_frontend_wtf.main import WTFormsHelpers
from jinja2 import ChainableUndefined, ChoiceLoader, PackageLoader, PrefixLoader

from app.web import errors, filters, navigation  # noqa: F401  (errors is registered by create_app)


def register(app: Flask) -> None:
    from app.audit.views import bp as audit_bp
    from app.auth.views import bp as auth_bp
    from app.decisions.views import bp as decisions_bp
    from app.protocols.views import bp as protocols_bp
    from app.registry.views import bp as registry_bp
    from app.reminders.views import bp as reminders_bp
    from app.transfers.views import bp as transfers_bp
    from app.web.views import bp as web_bp

    app.jinja_loader = ChoiceLoader([
        PackageLoader("app", "templates"),
        PrefixLoader({
            "govuk_frontend_jinja": PackageLoader("govuk_frontend_jinja"),
            "govuk_frontend_wtf": PackageLoader("govuk_frontend_wtf"),
        }),
    ])
    # GOV.UK Frontend's base template calls macros without arguments (DESIGN §11).
    app.jinja_env.undefined = ChainableUndefined
    WTFormsHelpers(app)
    filters.register(app)
    app.add_template_global(navigation.navigation_for, "navigation_for")
    for blueprint in (web_bp, auth_bp, registry_bp, decisions_bp, protocols_bp, reminders_bp,
                      transfers_bp, audit_bp):
        app.register_blueprint(blueprint)
