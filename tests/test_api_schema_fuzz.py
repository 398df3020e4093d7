"""schemathesis (v4) against every operation of the OpenAPI document, with a token that has every
scope for a user with every role: valid and invalid requests generated from the document itself.

No request may cause a server error, and every response must be one the document promises, in
the shape it promises (status, content type, headers, body). At least 1,000 cases in total.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.summary import report

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
#: Per operation and generation mode; about 27 operations x 2 modes x 20 gives well over 1,000 cases.
EXAMPLES = 25
MINIMUM_CASES = 1000


@pytest.fixture
def superuser_token(app, session, demo):
    """A user with every role at Kent Police, and a token with every scope: the most any caller can do."""
    from app.auth import service, tokens
    from app.clock import utcnow

    user = service.create_user(session, "test", email="everything@kent-police.example", name="Every Role",
                               organisation_code="kent-police",
                               roles=["admin", "coordinator", "dpo", "officer", "auditor"],
                               password="fuzzing-password-not-secret")
    issued = tokens.create_token(session, "test", user, name="fuzz", scopes=list(tokens.SCOPES),
                                 lifetime=timedelta(days=1), now=utcnow(), pepper=app.config["TOKEN_PEPPER"])
    session.commit()
    return issued.plaintext


@pytest.mark.slow
def test_every_operation_answers_as_documented(app, superuser_token, request):
    from app.api import ratelimit

    app.config["API_RATE_LIMIT"] = None  # thousands of requests a minute with one token
    ratelimit.init_app(app)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    auth = {"Authorization": f"Bearer {superuser_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    cases = {"total": 0}
    failures: list[str] = []

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                cases["total"] += 1
                case.headers = {**(case.headers or {}), **auth}
                response = case.call()
                try:
                    case.validate_response(response, checks=checks, headers=auth)
                except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is a BaseExceptionGroup
                    failures.append(f"{operation.label} ({mode.value}): {str(exc)[:1500]}")
                    raise

            try:
                run()
            except (Exception, BaseExceptionGroup):  # recorded in `failures`: carry on with the next operation
                pass

    message = f"schemathesis: {cases['total']} generated cases over {len(operations)} operations"
    print(message)
    report(request.config, f"{message} ({request.node.callspec.params.get('backend', '')})")
    assert not failures, "\n\n".join(failures)
    assert cases["total"] >= MINIMUM_CASES
