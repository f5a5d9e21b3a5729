"""The framework comparison: every implementation of the digits network learns (a few full-batch steps
on a small synthetic set lower its loss), and the benchmark's bookkeeping is right."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from app.config import REPO_ROOT
from benchmarks.frameworks import IMPLEMENTATIONS, Implementation
from benchmarks.frameworks.__main__ import run_one
from benchmarks.frameworks.common import batch_order, initial_weights, learning_rate
from benchmarks.frameworks.harness import load_implementation, smoke_losses
from benchmarks.frameworks.report import BEGIN, END, lines_of_code, write_into

STEPS = 10


def require(name: str) -> None:
    if missing := IMPLEMENTATIONS[name].missing():
        pytest.skip(f"{name}: {', '.join(missing)} not installed (pip install '.[compare]')")


def assert_learns(losses: list[float]) -> None:
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses)
    assert 1.5 < losses[0] < 3.5  # about ln(10) = 2.3: ten classes, untrained
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize("name", ["tensorflow", "torch", "pytensor"])
def test_plain_framework_lowers_its_loss(name):
    require(name)
    assert_learns(smoke_losses(load_implementation(name), steps=STEPS))


@pytest.mark.parametrize("name", ["keras-tensorflow", "keras-jax", "keras-torch"])
def test_keras_backend_lowers_its_loss(name):
    """In a subprocess: Keras fixes its backend when first imported."""
    require(name)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **IMPLEMENTATIONS[name].env}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.frameworks.harness", name, "--smoke", "--steps", str(STEPS)],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["versions"]["keras"] and result["backend"] == IMPLEMENTATIONS[name].env["KERAS_BACKEND"]
    assert_learns(result["losses"])


def test_shared_weights_have_the_digits_model_shape():
    from training.digits import build_model

    model = build_model()
    assert [tuple(w.shape) for w in model.get_weights()] == [w.shape for w in initial_weights(0).values()]


def test_every_framework_sees_the_same_batches_and_learning_rates():
    batches = batch_order(1000, epoch=1, seed=42)
    assert [len(b) for b in batches] == [128] * 7 + [104]
    assert sorted(int(i) for b in batches for i in b) == list(range(1000))
    assert all((a == b).all() for a, b in zip(batches, batch_order(1000, epoch=1, seed=42), strict=True))
    assert not (batches[0] == batch_order(1000, epoch=2, seed=42)[0]).all()
    assert learning_rate(0, 100) == pytest.approx(0.05)
    assert learning_rate(50, 100) == pytest.approx(0.05 * (0.99 * 0.5 + 0.01))
    assert learning_rate(100, 100) == pytest.approx(0.0005)


def test_a_missing_framework_is_skipped_with_the_reason(monkeypatch, tmp_path):
    absent = Implementation("absent", "Absent", "torch_plain", ("no_such_framework_here",))
    monkeypatch.setitem(IMPLEMENTATIONS, "absent", absent)
    assert run_one("absent", tmp_path / "unused.npz", epochs=1, seed=0) == {
        "skipped": "no_such_framework_here not installed"}


def test_lines_of_code_leave_out_the_docstring_comments_and_blanks(tmp_path):
    source = tmp_path / "impl.py"
    source.write_text('"""Doc\nstring."""\n\n# a comment\nimport os\n\nx = 1  # counted\n')
    assert lines_of_code(source) == 2


def test_results_replace_only_the_marked_section(tmp_path):
    doc = tmp_path / "frameworks.md"
    doc.write_text(f"# Study\n\n{BEGIN}\nold table\n{END}\n\nAfter.\n")
    write_into(doc, "new table")
    assert doc.read_text() == f"# Study\n\n{BEGIN}\nnew table\n{END}\n\nAfter.\n"
