"""Processes that use the run registry at the same time, for tests/test_registry.py.

Kept apart from the tests so that spawned processes import only SQLAlchemy, not TensorFlow.
Each returns the errors it met as text instead of raising, so the parent can show them all.
"""

from __future__ import annotations

import time
import traceback

from app.runs import registry
from app.runs.db import open_registry


def write_runs(url: str, model: str, runs: int, epochs: int) -> list[str]:
    """Open the registry (migrating it, like every trainer does), then train `runs` fake runs."""
    try:
        sessions = open_registry(url)
        for _ in range(runs):
            with sessions() as session:
                run_id = registry.create_run(session, model, seed=1, params={"runs": runs}).id
            for epoch in range(1, epochs + 1):
                with sessions() as session:
                    registry.record_epoch(session, run_id, {"epoch": epoch, "loss": 1.0 / epoch})
            with sessions() as session:
                registry.finish_run(session, run_id, version=1, test_metrics={"accuracy": 0.5})
        sessions.kw["bind"].dispose()
        return []
    except Exception:
        return [traceback.format_exc()]


def read_runs(url: str, expected: int, timeout: float) -> tuple[int, list[str]]:
    """List and fetch runs in a loop, like the service answering /runs, until `expected` runs
    have succeeded (or `timeout` seconds pass); also sweeps for stale runs, as the service does."""
    reads, errors = 0, []
    sessions = open_registry(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sessions() as session:
                runs, total = registry.list_runs(session, limit=100)
                for run in runs[:5]:
                    registry.get_run(session, run.id)
                registry.mark_stale_runs(session, 3600)
                _, finished = registry.list_runs(session, status=registry.SUCCEEDED, limit=1)
            assert total >= len(runs), f"count {total} is below the {len(runs)} runs listed"
            reads += 1
            if finished >= expected:
                break
        except Exception:
            errors.append(traceback.format_exc())
        time.sleep(0.005)
    sessions.kw["bind"].dispose()
    return reads, errors
