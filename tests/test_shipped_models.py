"""The models shipped in models/ answer real inputs correctly through the service."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.config import REPO_ROOT
from app.main import create_app
from tests.conftest import make_settings, png_bytes

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("shipped"), MODEL_DIR=REPO_ROOT / "models")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("label", ["2", "4", "7"])
def test_digits_reads_a_photo_of_a_handwritten_digit(shipped, label):
    photo = (FIXTURES / f"digit_photo_{label}.jpg").read_bytes()
    body = shipped.post("/classify?model=digits", files={"file": ("photo.jpg", photo, "image/jpeg")}).json()
    assert body["label"] == label, body
    assert body["top"][0]["probability"] > 0.5


def test_digits_reads_a_pen_drawing_on_white(shipped):
    page = Image.new("RGB", (600, 800), "white")
    draw = ImageDraw.Draw(page)
    draw.line([(200, 200), (420, 200), (280, 620)], fill=(20, 20, 20), width=14)  # a 7
    body = shipped.post("/classify?model=digits", files={"file": ("seven.png", png_bytes(page))}).json()
    assert body["label"] == "7", body


def test_shipped_runs_are_imported_with_their_plots(shipped):
    runs = shipped.get("/runs?model=digits").json()["data"]
    assert runs and runs[0]["status"] == "succeeded"
    served = shipped.get("/models").json()["data"]
    digits = next(m for m in served if m["name"] == "digits")
    assert digits["run_id"] == runs[0]["id"]
    assert digits["test_metrics"]["test_accuracy"] >= 0.985
    plot = shipped.get(runs[0]["plot_urls"][0])
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
