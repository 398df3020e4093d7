"""Accord: information-sharing agreement compliance for Community Safety Partnerships."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask_openapi3 import Info, OpenAPI

from config import Config, config_for


def create_app(config: str | type[Config] | None = None, **overrides: Any) -> OpenAPI:
    """Build the app. Wiring only: it never migrates, seeds or starts the scheduler."""
    from app import cli, database, models, observability, security, web  # noqa: F401  (models: complete metadata)
    from app.api import errors as api_errors
    from app.api import openapi
    from app.extensions import csrf, db, login_manager, migrate

    app = OpenAPI(
        __name__,
        info=Info(title="Accord API", version="1", description=openapi.DESCRIPTION),
        security_schemes=openapi.SECURITY_SCHEMES,
        doc_prefix="/api/v1",
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_model=api_errors.ErrorEnvelope,
        validation_error_callback=api_errors.validation_error_response,
        instance_relative_config=True,
    )
    configure(app, config, overrides)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(app.root_path).parent / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    database.init_app(app)
    security.init_app(app)
    observability.init_app(app)

    web.register(app)
    openapi.register(app)
    cli.register(app)
    web.errors.register(app)
    return app


def configure(app: OpenAPI, config: str | type[Config] | None, overrides: dict[str, Any]) -> None:
    from app import settings

    config_class = config if isinstance(config, type) else config_for(config)
    app.config.from_object(config_class)
    app.config.update(overrides)
    settings.complete(app)
