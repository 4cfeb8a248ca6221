"""Every endpoint the OpenAPI description lists, fed schemathesis's generated requests (valid and
invalid) against a real balancer process: none may answer 5xx. A new endpoint is covered as
soon as it is described."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.support.balancer import BalancerProcess, farm_config

TOKEN = "fuzz-token-0123456789abcdefghij"
EXAMPLES_PER_OPERATION = 40  # bounded: about 30 s for the whole API
EXCLUDED = ("/api/v1/handoff",)  # would hand the listeners to a new process (tests/component/test_handoff.py)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("admin-fuzz")
    token = tmp / "admin.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    text = farm_config([("TS01", "127.0.0.1:1", 1), ("TS02", "127.0.0.1:2", 2)], tmp / "s.db",
                       extra=f'token_file = "{token}"\n')  # [admin] listens on port 0
    config = tmp / "rdpb.toml"
    config.write_text(text)
    proc = BalancerProcess(config, 0, tmp / "rdpb.log")  # on port 0: its log says which ports it took
    proc.start()  # returns after the start-up line, which the admin API's line precedes
    try:
        yield f"http://127.0.0.1:{proc.admin_port}"
    finally:
        proc.stop()
        log = (tmp / "rdpb.log").read_text()
        assert "Traceback" not in log and "failed\n" not in log, log[-4000:]


@pytest.fixture(scope="module")
def api_schema(admin_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{admin_url}/api/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.exclude(path=list(EXCLUDED)).parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_admin_api_fail(case: schemathesis.Case, admin_url: str) -> None:
    response = case.call(base_url=admin_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])


def test_the_description_lists_every_route(admin_url: str, api_schema: schemathesis.BaseSchema) -> None:
    """A route the description lacks would escape the fuzzing above."""
    from rdpbalancer.admin.api import build_app  # noqa: PLC0415

    described = {path for path in api_schema.raw_schema["paths"]}
    app = build_app(None, None, None, None)  # type: ignore[arg-type]  # only its routes are read
    routed = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    routed -= {"/", "/static"}  # the dashboard and its files, not API
    missing = routed - described - {"/api/v1/{what}"}  # the read-only catch-all: each value is described
    assert not missing, f"routes without an OpenAPI description: {sorted(missing)}"
