"""Property-based fuzzing of every endpoint in /openapi.json with schemathesis.

The app runs in-process over the embedded local cluster with stand-in WRF.
Each operation gets a bounded number of generated requests, sent with a
valid token. A response fails the test when its status is 5xx, or when its
status, content type or body is not what the OpenAPI document declares.
"""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed: "
                                   "pip install -e '.[test]'")
from hypothesis import HealthCheck, settings  # noqa: E402
from service_support import add_user, make_settings  # noqa: E402

from wrfbatch.service import create_app  # noqa: E402
from wrfbatch.standin import install_standin  # noqa: E402

# Examples per operation: enough to reach every parameter's edge cases within seconds.
MAX_EXAMPLES = 25
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


def _build_app():  # type: ignore[no-untyped-def]
    """Build one app for the module: schemathesis reads its schema at import time."""
    root = Path(__import__("tempfile").mkdtemp(prefix="wrfbatch-fuzz-"))
    installs = {v: str(install_standin(root / "wrf" / v, v)) for v in ("3.8.1", "3.9")}
    app = create_app(make_settings(root / "data", installs), poll=False)
    token = add_user(app.state.context.store, "fuzzer")
    return app, token


APP, TOKEN = _build_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_fuzz(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
