"""The few functions that write and read run records; training and the service both use them."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.runs.models import Run

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
_DATETIME_FIELDS = ("started_at", "ended_at", "heartbeat_at")


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_run(session: Session, model: str, **fields: Any) -> Run:
    """Open a run in state `running`, owned by this process (so a dead owner can be detected)."""
    now = utcnow()
    run = Run(
        id=uuid.uuid4().hex, model=model, status=RUNNING, started_at=now, heartbeat_at=now,
        host=socket.gethostname(), pid=os.getpid(), history=[], test_metrics={}, plots=[],
        **fields,
    )
    session.add(run)
    session.commit()
    return run


def resume_run(session: Session, run_id: str) -> Run:
    """Take over an interrupted run: it is `running` again, owned by this process."""
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"run {run_id} not found")
    run.status, run.error, run.ended_at = RUNNING, None, None
    run.host, run.pid, run.heartbeat_at = socket.gethostname(), os.getpid(), utcnow()
    session.commit()
    return run


def record_epoch(session: Session, run_id: str, metrics: dict[str, float]) -> None:
    """Append one epoch's metrics; replaces an entry for the same epoch after a resume."""
    run = session.get(Run, run_id)
    epoch = metrics.get("epoch")
    kept = [h for h in (run.history or []) if h.get("epoch") != epoch]
    run.history = [*kept, metrics]
    run.heartbeat_at = utcnow()
    session.commit()


def update_run(session: Session, run_id: str, **fields: Any) -> Run:
    run = session.get(Run, run_id)
    for key, value in fields.items():
        setattr(run, key, value)
    session.commit()
    return run


def _close(session: Session, run_id: str, status: str, **fields: Any) -> Run:
    run = session.get(Run, run_id)
    run.status, run.ended_at = status, utcnow()
    run.duration_s = (run.ended_at - _aware(run.started_at)).total_seconds()
    for key, value in fields.items():
        setattr(run, key, value)
    session.commit()
    return run


def finish_run(session: Session, run_id: str, **fields: Any) -> Run:
    return _close(session, run_id, SUCCEEDED, **fields)


def fail_run(session: Session, run_id: str, error: str) -> Run:
    return _close(session, run_id, FAILED, error=error)


def get_run(session: Session, run_id: str) -> Run | None:
    return session.get(Run, run_id)


def list_runs(
    session: Session, model: str | None = None, status: str | None = None,
    limit: int = 20, offset: int = 0,
) -> tuple[list[Run], int]:
    """Newest first, with the total count for pagination."""
    query = select(Run)
    if model:
        query = query.where(Run.model == model)
    if status:
        query = query.where(Run.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(Run.started_at.desc()).limit(limit).offset(offset))
    return list(rows), int(total or 0)


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_to_record(run: Run) -> dict[str, Any]:
    """A JSON-ready dict of every column: what is written beside a model version."""
    record = {column.name: getattr(run, column.name) for column in Run.__table__.columns}
    for name in _DATETIME_FIELDS:
        if record[name] is not None:
            record[name] = _aware(record[name]).isoformat()
    return record


def import_record(session: Session, record: dict[str, Any]) -> bool:
    """Insert a run written beside a shipped model, unless the registry already has it."""
    if session.get(Run, record["id"]) is not None:
        return False
    columns = {column.name for column in Run.__table__.columns}
    values = {key: value for key, value in record.items() if key in columns}
    for name in _DATETIME_FIELDS:
        if values.get(name):
            values[name] = datetime.fromisoformat(values[name])
    session.add(Run(**values))
    session.commit()
    return True


def delete_run(session: Session, run: Run) -> None:
    session.delete(run)
    session.commit()
