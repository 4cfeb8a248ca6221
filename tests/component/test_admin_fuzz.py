"""Every endpoint the OpenAPI description lists, fed schemathesis's generated requests (valid and
invalid) against a real balancer process: none may answer 5xx. A new endpoint is covered as
soon as it is described."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.support.balancer import BalancerProcess, farm_config, free_port, wait_for_listener

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
    admin_port = free_port()  # the admin API's address is not logged: reserved beforehand
    text = farm_config([("TS01", "127.0.0.1:1", 1), ("TS02", "127.0.0.1:2", 2)], tmp / "s.db")
    text = text.replace('[admin]\nlisten = "127.0.0.1:0"\n',
                        f'[admin]\nlisten = "127.0.0.1:{admin_port}"\ntoken_file = "{token}"\n')
    config = tmp / "rdpb.toml"
    config.write_text(text)
    proc = BalancerProcess(config, 0, tmp / "rdpb.log")  # on port 0: its start-up line says which
    proc.start()
    assert proc.proc is not None
    wait_for_listener(proc.proc, ("127.0.0.1", admin_port), tmp / "rdpb.log", 15)
    try:
        yield f"http://127.0.0.1:{admin_port}"
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
