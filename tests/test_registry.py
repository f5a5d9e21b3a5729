"""The run registry on SQLite and on PostgreSQL: records, concurrency, stale runs, migrations.

Every test runs once per backend (`registry_url`); the PostgreSQL ones are skipped, with the
reason, when no server can be started (see `postgres_databases` in conftest.py).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.runs import registry
from app.runs.db import make_engine, open_registry, upgrade_schema
from app.runs.models import Run
from tests.registry_workers import read_runs, write_runs

WRITERS, RUNS_EACH, EPOCHS = 4, 4, 8


@pytest.fixture
def sessions(registry_url):
    factory = open_registry(registry_url)
    yield factory
    factory.kw["bind"].dispose()


def test_a_run_is_recorded_from_start_to_finish(sessions):
    with sessions() as session:
        run = registry.create_run(session, "digits", seed=3, params={"epochs": 2}, dataset="mnist")
        for epoch in (1, 2, 2):  # epoch 2 again: a resumed run rewrites it
            registry.record_epoch(session, run.id, {"epoch": epoch, "loss": 1.0 / epoch})
        registry.finish_run(session, run.id, version=4, test_metrics={"accuracy": 0.99})
    with sessions() as session:
        stored = registry.get_run(session, run.id)
        runs, total = registry.list_runs(session, model="digits", status="succeeded")
    assert [row["epoch"] for row in stored.history] == [1, 2]
    assert stored.status == "succeeded" and stored.version == 4 and stored.test_metrics == {"accuracy": 0.99}
    assert stored.started_at.tzinfo is not None and stored.ended_at >= stored.started_at
    assert stored.duration_s >= 0 and stored.label is None
    assert total == 1 and runs[0].id == run.id


def test_a_record_round_trips_through_run_json(sessions):
    with sessions() as session:
        run = registry.create_run(session, "digits", seed=1, params={"a": [1, 2]})
        registry.update_run(session, run.id, label="baseline MLP")
        record = registry.run_to_record(registry.finish_run(session, run.id, version=1))
    with sessions() as session:
        session.execute(sa.delete(Run))
        session.commit()
        assert registry.import_record(session, record) is True
        assert registry.import_record(session, record) is False  # already there
        again = registry.run_to_record(registry.get_run(session, run.id))
    assert again == record and again["label"] == "baseline MLP"


def test_writers_in_several_processes_and_a_reader_lose_nothing(registry_url):
    """Trainers in four processes create, record and finish runs while the service reads.

    All start at once on an empty database, so they also race to create the schema.
    """
    context = multiprocessing.get_context("spawn")  # children import SQLAlchemy only, never TensorFlow
    with context.Pool(WRITERS + 1) as pool:
        reader = pool.apply_async(read_runs, (registry_url, WRITERS * RUNS_EACH, 120.0))
        writers = [pool.apply_async(write_runs, (registry_url, f"model{i}", RUNS_EACH, EPOCHS)) for i in range(WRITERS)]
        errors = [error for writer in writers for error in writer.get(timeout=300)]
        reads, read_errors = reader.get(timeout=300)
    assert errors == [] and read_errors == [], "\n".join(errors + read_errors)
    assert reads > 0
    factory = open_registry(registry_url)
    with factory() as session:
        runs = session.scalars(sa.select(Run)).all()
    factory.kw["bind"].dispose()
    assert len(runs) == WRITERS * RUNS_EACH
    assert {run.status for run in runs} == {"succeeded"}
    assert all([row["epoch"] for row in run.history] == list(range(1, EPOCHS + 1)) for run in runs)
    assert sorted({run.model for run in runs}) == [f"model{i}" for i in range(WRITERS)]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_runs_whose_process_died_or_went_silent_are_marked_failed(sessions):
    now = registry.utcnow()
    with sessions() as session:
        registry.create_run(session, "a")  # this process: alive, fresh heartbeat
        died = registry.create_run(session, "b")
        registry.update_run(session, died.id, pid=dead_pid())
        elsewhere = registry.create_run(session, "c")  # another host: only its heartbeat tells
        registry.update_run(session, elsewhere.id, host="trainer-2", pid=1,
                            heartbeat_at=now - timedelta(hours=7))
        recent = registry.create_run(session, "d")
        registry.update_run(session, recent.id, host="trainer-2", pid=1, heartbeat_at=now - timedelta(hours=1))
        done = registry.create_run(session, "e")
        registry.update_run(session, done.id, pid=dead_pid())
        registry.finish_run(session, done.id)
        marked = registry.mark_stale_runs(session, stale_after_s=6 * 3600)
        assert registry.mark_stale_runs(session, stale_after_s=6 * 3600) == []  # idempotent
    assert sorted(marked) == sorted([died.id, elsewhere.id])
    with sessions() as session:
        status = {run.model: run for run in session.scalars(sa.select(Run))}
    assert status["a"].status == "running" and status["d"].status == "running" and status["e"].status == "succeeded"
    assert status["b"].status == "failed" and "process" in status["b"].error and "is gone" in status["b"].error
    assert status["c"].status == "failed" and "no heartbeat since" in status["c"].error
    assert status["c"].ended_at == now - timedelta(hours=7)  # ended at its last sign of life
    assert status["c"].duration_s == pytest.approx((status["c"].ended_at - status["c"].started_at).total_seconds())


def test_a_stale_run_can_be_resumed(sessions):
    with sessions() as session:
        run = registry.create_run(session, "digits")
        registry.update_run(session, run.id, pid=dead_pid())
        assert registry.mark_stale_runs(session, 3600) == [run.id]
        resumed = registry.resume_run(session, run.id)
    assert resumed.status == "running" and resumed.error is None and resumed.pid == os.getpid()


def test_a_killed_trainer_is_found_dead(tmp_path):
    """A zombie (killed, not yet reaped by its parent) counts as dead too."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert registry.process_alive(child.pid)
    child.kill()
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left as a zombie
        assert not registry.process_alive(child.pid)
    finally:
        child.wait()
    assert not registry.process_alive(child.pid)
    assert registry.process_alive(os.getpid()) and socket.gethostname()


def test_migrating_from_0001_keeps_old_rows(registry_url):
    """A database made by revision 0001, holding a run, upgrades to head with the run intact."""
    engine = make_engine(registry_url)
    upgrade_schema(engine, "0001")
    columns = {column["name"] for column in sa.inspect(engine).get_columns("runs")}
    assert "label" not in columns
    row = {
        "id": "a" * 32, "model": "digits", "version": 1, "status": "succeeded", "seed": 7,
        "params": {"epochs": 5}, "history": [{"epoch": 1, "loss": 0.5}], "test_metrics": {"accuracy": 0.98},
        "started_at": registry.utcnow() - timedelta(minutes=5), "ended_at": registry.utcnow(),
        "duration_s": 300.0, "plots": ["loss.png"], "host": "old-host", "pid": 42,
    }
    runs_0001 = sa.Table("runs", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(runs_0001.insert().values(**row))
    engine.dispose()

    factory = open_registry(registry_url)  # what the service and every trainer call: upgrades to head
    with factory() as session:
        run = registry.get_run(session, row["id"])
        version = session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        registry.update_run(session, run.id, label="relabelled")
    factory.kw["bind"].dispose()
    assert version == "0002"
    for key, value in row.items():
        assert getattr(run, key) == value, key
    assert run.label == "relabelled"
