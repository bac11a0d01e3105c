"""Bad input never crashes the service: mutated CDS Hooks requests get 200, 400 or 412, never 500.

Hypothesis replaces one node of a valid request (anywhere: context, prefetch resources,
codings, values, times) with arbitrary JSON, or deletes it, and the answer must be a
well-formed CDS Hooks response or an OperationOutcome, without a stack trace.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.app import create_app
from cds_service.store import migrate
from tests.integration.hooks_support import SERVICE, check_response, positive_control

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of the JSON document."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


BASES = {hook: positive_control(hook) for hook in ("patient-view", "order-sign")}
BASES["order-sign"]["context"]["draftOrders"]["entry"] = [{"resource": {
    "resourceType": "MedicationRequest", "id": "draft-mg", "status": "draft", "intent": "order",
    "subject": {"reference": "Patient/" + BASES["order-sign"]["context"]["patientId"]},
    "medicationCodeableConcept": {"text": "Magnesium sulfate 2 g IV", "coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6585"}]},
}}]  # fmt: skip
PATHS = {hook: [p for p in paths(base) if p] for hook, base in BASES.items()}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'cds.db'}"
    migrate(url)
    app = create_app({"CDS_DATABASE_URL": url, "CDS_AUTH": "off", "CDS_SECRET": "fuzz"})
    yield app.test_client()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), replacement=JSON, delete=st.booleans())
@pytest.mark.parametrize("hook", sorted(BASES))
def test_mutated_requests_never_fail_the_service(
    client: FlaskClient, hook: str, data: st.DataObject, replacement: Any, delete: bool
) -> None:
    body = copy.deepcopy(BASES[hook])
    path = data.draw(st.sampled_from(PATHS[hook]))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    resp = client.post(SERVICE + hook, data=json.dumps(body), content_type="application/json")
    text = resp.get_data(as_text=True)
    assert resp.status_code in (200, 400, 412), (path, resp.status_code, text[:500])
    assert "Traceback" not in text
    doc = resp.get_json()
    if resp.status_code == 200:
        check_response(doc)
    else:
        assert doc["resourceType"] == "OperationOutcome"
