"""API fuzzing: schemathesis drives every operation of the service's own OpenAPI schema.

In-process over ASGI (no network), against a tiny trained digits model in a temporary store.
Every response must be a non-5xx whose status, content type, headers and body are the ones the
schema declares, and input the schema forbids must be refused with a 4xx. New routers are
covered as soon as they are in the schema: nothing here lists operations.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from tests.conftest import make_settings, template_image

# Examples per operation: ~11 operations, a few ms each, so the file stays well under a minute of CPU.
# FUZZ_MAX_EXAMPLES=500 digs deeper outside CI.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", 60))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Generous: CI machines are shared; a request that is really stuck still fails the test.
REQUEST_TIMEOUT_S = 60
FIXTURES = Path(__file__).parent / "fixtures"
# Random bytes never get past decoding; these do, so the fuzzer also reaches the models.
IMAGES = [template_image(label) for label in range(10)] + [p.read_bytes() for p in sorted(FIXTURES.glob("*.jpg"))]
STATUSES: Counter[tuple[str, int]] = Counter()

# The schema does not depend on the store, so it is read (without starting the app) at collection,
# which gives one test per operation; the requests go to `fuzzed_app`, whose store holds a model.
# (schemathesis.pytest.from_fixture would defer it, but fails on pytest 9.2: no `Node._nodeid`.)
schema = schemathesis.openapi.from_dict(
    create_app(make_settings(Path("unused"), BENCHMARK_BASELINES=True)).openapi()
)


@pytest.fixture(scope="module")
def fuzzed_app(trained_settings, tmp_path_factory):
    """The service over the tiny trained model, with its own registry and the /baseline twins."""
    settings = trained_settings.model_copy(
        update={"DATA_DIR": tmp_path_factory.mktemp("fuzz-data"), "BENCHMARK_BASELINES": True}
    )
    yield create_app(settings)
    shutdown_lifespans()  # schemathesis started the app's lifespan (store, batchers) on first call


def with_real_images(case, images: list[bytes] | None) -> None:
    """Swap the generated files of a valid upload for real images, when hypothesis says so.

    Only in positive cases: a case meant to violate the schema must stay invalid.
    """
    positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
    if images and positive and isinstance(case.body, dict) and isinstance(case.body.get("file"), list):
        case.body["file"] = images


@schema.parametrize()
@settings(phases=[Phase.explicit], deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_schema_examples_are_answered_within_the_schema(case, fuzzed_app):
    """The examples the schema shows its readers are real requests the service accepts."""
    response = case.call_and_validate(app=fuzzed_app, checks=CHECKS, timeout=REQUEST_TIMEOUT_S)
    STATUSES[(case.operation.label, response.status_code)] += 1


@schema.parametrize()
@schema.given(images=st.none() | st.lists(st.sampled_from(IMAGES), min_size=1, max_size=3))
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.generate, Phase.target, Phase.shrink],  # the schema's own examples: the test above
)
def test_every_operation_answers_within_its_schema(case, images, fuzzed_app):
    with_real_images(case, images)
    response = case.call_and_validate(app=fuzzed_app, checks=CHECKS, timeout=REQUEST_TIMEOUT_S)
    STATUSES[(case.operation.label, response.status_code)] += 1


def test_fuzzing_reached_the_models():
    """Not only refusals: image uploads were classified, and the registry answered."""
    if not STATUSES:
        pytest.skip("the fuzzing tests did not run in this session")
    assert STATUSES[("POST /classify", 200)] > 0, STATUSES
    assert STATUSES[("GET /runs", 200)] > 0, STATUSES
    assert not [key for key in STATUSES if key[1] >= 500]
