"""The real daemon's API, fuzzed from its own ``/openapi.json``, never answers 5xx.

One ``meshd run`` daemon (manager and runner roles) serves the whole module.
Schemathesis generates requests for every operation in the published
schema, in positive mode (inputs the schema allows) and negative mode
(inputs it forbids), and each response is checked for:

* ``not_a_server_error``: no 5xx, for every operation;
* ``content_type_conformance`` and ``response_schema_conformance``: the
  documented media type and body schema, for every operation;
* ``negative_data_rejection``: a request the schema forbids gets a 4xx;
* ``status_code_conformance``: the status is documented, except for the
  operations in :data:`UNDOCUMENTED_STATUSES`, which answer 400/404 without
  declaring them (a documentation gap, listed there with the reason);
* the API's one error shape ``{"error": {"code", "message"}}`` on every 4xx.

Routes whose request body is parsed by hand and is not in the schema get
hypothesis-generated JSON bodies in a second test, checked for 5xx and the
error shape.  Generation is derandomized, so a run is reproducible.

Every request carries the admin token and ``Content-Type: application/json``
(the API refuses anything else before a route runs; that gate has its own
tests in ``test_api_refuses_web_pages.py``), so the fuzzing reaches the routes.
"""

from __future__ import annotations

import os

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")

import requests  # noqa: E402 - schemathesis' transport; installed with it
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ._daemons import Daemon  # noqa: E402

#: Generated examples per operation and generation mode.  Operations without
#: parameters are exhausted after one; the rest make the total well over 2,000.
#: Examples per operation and mode; `make fuzz` raises it (MESHD_FUZZ_EXAMPLES) for a long run.
EXAMPLES = int(os.environ.get("MESHD_FUZZ_EXAMPLES", "120"))
#: Requests the run must reach; `make fuzz` asks for 5,000 (MESHD_FUZZ_MIN_REQUESTS).
MIN_REQUESTS = int(os.environ.get("MESHD_FUZZ_MIN_REQUESTS", "2000"))

#: Operations that answer a status their OpenAPI entry does not declare:
#: the role routers declare only their success status (and FastAPI's 422).
UNDOCUMENTED_STATUSES = {
    "GET /v1/archive": "404 archivist_disabled when the node has no archivist role",
    "GET /v1/archive/{genesis}": "404 archivist_disabled / 400 bad_cid",
    "GET /v1/archive/{genesis}/{version}": "404 archivist_disabled / 400 bad_cid",
    "GET /v1/pins": "404 archivist_disabled when the node has no archivist role",
    "POST /v1/jobs": "400 for a malformed pipeline (the body is parsed by hand, not in the schema)",
    "GET /v1/jobs/{job}": "400 bad_cid / 404 for an unknown job",
    "POST /v1/engines/trust": "400 bad_publisher / malformed_json (body not in the schema)",
    "POST /v1/engines/allow": "400 bad_cid / malformed_json (body not in the schema)",
    "POST /v1/engines/{cid}/sign": "400 bad_cid / 404 engine_not_found",
    "POST /v1/engines/{cid}/signatures": "400 bad_cid / bad_signature / malformed_json (body not in the schema)",
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the whole module (a daemon per operation would dominate the run time)."""
    d = Daemon(tmp_path_factory.mktemp("schemathesis") / "node").init().start()
    try:
        yield d
    finally:
        d.stop()


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx body is ``{"error": {"code": str, "message": str, ...}}``."""
    if not 400 <= response.status_code < 500:
        return None
    body = json.loads(response.content)
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str), (
        f"{response.status_code} body is not the error shape: {response.content[:300]!r}")
    return True


class Tally:
    """Requests sent per operation, and the first failure of each (operation, mode, check)."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.failures: dict[tuple[str, str, str], str] = {}

    def record(self, key: tuple[str, str, str], message: str) -> None:
        self.failures.setdefault(key, message[:1500])

    def report(self) -> str:
        return "\n\n".join(f"{op} [{mode}] {check}:\n{msg}" for (op, mode, check), msg in sorted(self.failures.items()))


def _checks_for(label: str, mode: GenerationMode) -> list[Callable[..., Any]]:
    checks: list[Callable[..., Any]] = [not_a_server_error, content_type_conformance, response_schema_conformance,
                                        error_shape]
    if label not in UNDOCUMENTED_STATUSES:
        checks.append(status_code_conformance)
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    return checks


def _fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, session: requests.Session,
                    tally: Tally) -> None:
    label = operation.label
    checks = _checks_for(label, mode)

    # Failures are recorded, not raised: no shrinking, every operation runs to its budget.
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        tally.sent[label] += 1
        response = case.call(base_url=base_url, session=session, timeout=60)
        for check in checks:
            try:
                case.validate_response(response, checks=[check],
                                       transport_kwargs={"base_url": base_url, "session": session})
            except schemathesis.errors.FailureGroup as exc:
                tally.record((label, mode.value, check.__name__), str(exc))

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - hypothesis' Unsatisfiable: mode has no inputs here
        if type(exc).__name__ != "Unsatisfiable":
            raise


def test_no_operation_answers_a_server_error_or_breaks_its_schema(daemon: Daemon) -> None:
    schema = schemathesis.openapi.from_url(daemon.url + "/openapi.json", headers=daemon.headers("read"))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    assert set(UNDOCUMENTED_STATUSES) <= {op.label for op in operations}, "a listed operation no longer exists"
    tally = Tally()
    with requests.Session() as session:
        # Bodiless POSTs (sign) still declare JSON; requests sends session headers on every call.
        session.headers.update(daemon.headers(json_body=True))
        for operation in operations:
            # Negative mode has nothing to negate for operations whose only
            # inputs are free-form strings: hypothesis reports Unsatisfiable.
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(operation, mode, daemon.url, session, tally)
    total = sum(tally.sent.values())
    print(f"\nschemathesis: {total} requests over {len(operations)} operations: {dict(tally.sent)}")
    assert not tally.failures, tally.report() + "\n\ndaemon log tail:\n" + daemon.log()
    assert total >= MIN_REQUESTS, f"only {total} requests sent, {MIN_REQUESTS} wanted"


# ----------------------------------------------------------------- hand-parsed bodies

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_CIDISH = st.sampled_from(["bafyreigdmqpykrgxyaxtlafqpqhzrb7qy2rh75nldvfd4tucqmg3uz5qai", "zQm", "z\u00e9", "b", ""]) | st.text(max_size=70)

#: (method, path template, body strategy) for routes whose bodies the schema does not describe.
_HAND_PARSED = [
    ("POST", "/v1/jobs", st.fixed_dictionaries({}, optional={"name": _JSON | st.text(max_size=70), "input": _JSON,
                                                               "stages": st.lists(_JSON, max_size=3) | _JSON})),
    ("POST", "/v1/engines/trust", st.fixed_dictionaries({"publisher": _JSON | _CIDISH})),
    ("POST", "/v1/engines/allow", st.fixed_dictionaries({"cid": _JSON | _CIDISH})),
    ("POST", "/v1/engines/{cid}/signatures", st.fixed_dictionaries({"record": _JSON | st.text(max_size=200)})),
]


@pytest.mark.parametrize(("method", "path", "bodies"), _HAND_PARSED, ids=[p for _, p, _ in _HAND_PARSED])
def test_hand_parsed_bodies_never_cause_server_errors(daemon: Daemon, method: str, path: str, bodies: Any) -> None:
    sent = 0

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(cid=_CIDISH.filter(lambda s: "/" not in s and s not in (".", "..")), body=bodies | _JSON,
           raw=st.sampled_from([None, b"", b"{", b"1" + b"0" * 5000, b"[" * 2000, b"\xff"]))
    def run(cid: str, body: Any, raw: bytes | None) -> None:
        nonlocal sent
        sent += 1
        content = json.dumps(body).encode() if raw is None else raw
        url = daemon.url + path.replace("{cid}", requests.utils.quote(cid, safe="") or "x")
        r = requests.request(method, url, data=content, timeout=60, headers=daemon.headers(json_body=True))
        assert r.status_code < 500, f"{method} {url} {content[:200]!r} -> {r.status_code} {r.text[:300]}"
        if r.status_code >= 400:
            error = r.json().get("error")
            assert isinstance(error, dict) and isinstance(error.get("code"), str), r.text[:300]

    run()
    print(f"\n{method} {path}: {sent} hand-parsed bodies sent")
