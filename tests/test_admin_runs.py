"""Relabelling and deleting runs through the admin API, on SQLite and on PostgreSQL.

A client runs the app on the trained store with its own registry (`registry_url`), holding the
shipped run of the tiny digits model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session

from app.api.deps import get_db
from app.main import create_app
from app.runs.models import Run

KEY = "s3cret-key"


@pytest.fixture
def admin(trained_settings, tmp_path, registry_url) -> Iterator[TestClient]:
    settings = trained_settings.model_copy(update={
        "DATA_DIR": tmp_path / "data", "DATABASE_URL": registry_url,
        "ADMIN_API_KEY": SecretStr(KEY), "RELOAD_INTERVAL_S": 0,
    })
    app = create_app(settings)
    with TestClient(app, headers={"X-API-Key": KEY}, raise_server_exceptions=False) as client:
        yield client
    app.state.sessions.kw["bind"].dispose()


@pytest.fixture
def run_id(admin) -> str:
    return admin.get("/runs").json()["data"][0]["id"]


def serve_a_session_that_missed_a_delete(client: TestClient, run_id: str) -> Session:
    """Give the routes a session that read the run just before another request deleted it:
    the moment a PATCH or DELETE racing a DELETE is in, made deterministic."""
    sessions = client.app.state.sessions
    stale = sessions()
    seen = stale.get(Run, run_id)  # held: the session's identity map keeps objects only while referenced
    assert seen is not None
    with sessions() as other:
        other.delete(other.get(Run, run_id))
        other.commit()

    def get_stale_db() -> Iterator[Session]:
        assert seen.id == run_id
        yield stale

    client.app.dependency_overrides[get_db] = get_stale_db
    return stale


def test_a_label_is_set_and_cleared(admin, run_id):
    relabelled = admin.patch(f"/admin/runs/{run_id}", json={"label": "baseline MLP"})
    assert relabelled.status_code == 200 and relabelled.json()["label"] == "baseline MLP"
    assert admin.get(f"/runs/{run_id}").json()["label"] == "baseline MLP"
    cleared = admin.patch(f"/admin/runs/{run_id}", json={"label": None})
    assert cleared.status_code == 200 and cleared.json()["label"] is None
    assert admin.get(f"/runs/{run_id}").json()["label"] is None


def test_relabelling_or_deleting_an_unknown_run_is_404(admin):
    assert admin.patch(f"/admin/runs/{'0' * 32}", json={"label": "x"}).status_code == 404
    assert admin.delete(f"/admin/runs/{'0' * 32}").status_code == 404


def test_a_body_without_label_is_refused_and_the_label_kept(admin, run_id):
    """`{}` used to clear the label: only an explicit null does."""
    assert admin.patch(f"/admin/runs/{run_id}", json={"label": "keep me"}).status_code == 200
    response = admin.patch(f"/admin/runs/{run_id}", json={})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "label"]
    assert admin.get(f"/runs/{run_id}").json()["label"] == "keep me"


@pytest.mark.parametrize("label", ["a\u0000b", "two\nlines", "tab\there", "bell\u0007", "del\u007f", "c1\u0085",
                                   "line\u2028separator", "paragraph\u2029separator"])
def test_control_characters_in_a_label_are_refused(admin, run_id, label):
    """PostgreSQL text cannot hold NUL (it was a 500); no control character belongs in a label."""
    response = admin.patch(f"/admin/runs/{run_id}", json={"label": label})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "label"]
    assert admin.get(f"/runs/{run_id}").json()["label"] is None


def test_a_label_is_bounded_but_may_use_any_printable_text(admin, run_id):
    assert admin.patch(f"/admin/runs/{run_id}", json={"label": "x" * 129}).status_code == 422
    label = "é" * 120 + " ≥ 🙂 ok"
    response = admin.patch(f"/admin/runs/{run_id}", json={"label": label})
    assert response.status_code == 200 and response.json()["label"] == label


def test_the_schema_tells_what_a_label_may_be(admin):
    schema = admin.get("/openapi.json").json()["components"]["schemas"]["RunLabel"]
    assert schema["required"] == ["label"]
    text = next(option for option in schema["properties"]["label"]["anyOf"] if option["type"] == "string")
    assert text["maxLength"] == 128 and "pattern" in text


def test_relabelling_a_run_deleted_meanwhile_is_404(admin, run_id):
    """It was a 500: the update of the loaded row matched none (StaleDataError)."""
    stale = serve_a_session_that_missed_a_delete(admin, run_id)
    try:
        response = admin.patch(f"/admin/runs/{run_id}", json={"label": "late"})
    finally:
        stale.close()
    assert response.status_code == 404, response.text
    admin.app.dependency_overrides.clear()
    assert admin.get(f"/runs/{run_id}").status_code == 404


def test_deleting_a_run_deleted_meanwhile_is_404(admin, run_id):
    """Like a second DELETE after the first: the run is not there to delete."""
    stale = serve_a_session_that_missed_a_delete(admin, run_id)
    try:
        response = admin.delete(f"/admin/runs/{run_id}")
    finally:
        stale.close()
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("key", [None, "wrong"])
def test_the_key_is_checked_before_the_body_is_read(admin, run_id, key):
    """FastAPI parses a JSON body before the dependencies run: without the key, a malformed body
    was a 422 telling the caller about its body instead of the 401."""
    headers = {"X-API-Key": key} if key else {}
    client = TestClient(admin.app, headers=headers, raise_server_exceptions=False)
    response = client.patch(f"/admin/runs/{run_id}", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "missing or wrong X-API-Key header"
    with_key = admin.patch(f"/admin/runs/{run_id}", content=b"{not json", headers={"Content-Type": "application/json"})
    assert with_key.status_code == 422
    assert admin.get(f"/runs/{run_id}").status_code == 200


def test_a_json_body_nested_too_deeply_is_a_400_saying_so(admin, run_id):
    """json.loads hits Python's recursion limit: FastAPI answered "There was an error parsing the body"."""
    nested = b'{"label": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = admin.patch(f"/admin/runs/{run_id}", content=nested, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["detail"] == "the JSON body is nested too deeply to read"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_415(admin, run_id, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = admin.patch(f"/admin/runs/{run_id}", content=b'{"label": "x"}', headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["detail"].endswith("send the body as application/json")
    assert admin.get(f"/runs/{run_id}").json()["label"] is None
