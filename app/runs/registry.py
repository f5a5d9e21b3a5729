"""The few functions that write and read run records; training and the service both use them."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.runs.models import Run, as_utc

log = logging.getLogger(__name__)

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
    """Append one epoch's metrics; replaces the entry for the same (stage, epoch) after a resume."""
    run = session.get(Run, run_id)
    key = (metrics.get("stage"), metrics.get("epoch"))
    kept = [h for h in (run.history or []) if (h.get("stage"), h.get("epoch")) != key]
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
    run.duration_s = (run.ended_at - as_utc(run.started_at)).total_seconds()
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
    """Newest first, with the total count for pagination.

    The count rides along with the page in one statement, so both come from the same snapshot
    while trainers write (two statements could disagree: a total smaller than the page).
    """
    query = select(Run)
    if model:
        query = query.where(Run.model == model)
    if status:
        query = query.where(Run.status == status)
    page = session.execute(
        query.add_columns(func.count().over().label("total"))
        .order_by(Run.started_at.desc(), Run.id)
        .limit(limit)
        .offset(offset)
    ).all()
    if page:
        return [row.Run for row in page], int(page[0].total)
    total = session.scalar(select(func.count()).select_from(query.subquery()))  # a page past the end
    return [], int(total or 0)


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # Linux: the state letter follows the parenthesised command name
        return stat.read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_reason(run: Run, now: datetime, stale_after_s: float, host: str) -> str | None:
    """Why a `running` run is no longer running, or None if it may still be."""
    if run.host == host and run.pid is not None and not process_alive(run.pid):
        return f"stale: its process {run.pid} on {host} is gone"
    last_sign = run.heartbeat_at or run.started_at
    if now - as_utc(last_sign) > timedelta(seconds=stale_after_s):
        return f"stale: no heartbeat since {as_utc(last_sign).isoformat()} (over {stale_after_s:g} s)"
    return None


def mark_stale_runs(session: Session, stale_after_s: float) -> list[str]:
    """Mark failed every `running` run whose process died; returns their ids.

    On this host a run is stale when its process is gone; on any host, when its heartbeat
    (written each epoch) is older than `stale_after_s`. A host name is taken to mean one
    process namespace. Each update only applies if the run is unchanged since it was read,
    so a trainer that just wrote an epoch or resumed the run is never overwritten.
    """
    now, host = utcnow(), socket.gethostname()
    marked = []
    for run in session.scalars(select(Run).where(Run.status == RUNNING)).all():
        reason = stale_reason(run, now, stale_after_s, host)
        if reason is None:
            continue
        ended = as_utc(run.heartbeat_at or run.started_at)  # its last sign of life
        result = session.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == RUNNING, _same(Run.pid, run.pid),
                   _same(Run.host, run.host), _same(Run.heartbeat_at, run.heartbeat_at))
            .values(status=FAILED, error=reason, ended_at=ended,
                    duration_s=(ended - as_utc(run.started_at)).total_seconds())
            .execution_options(synchronize_session="fetch")  # loaded Run objects see the change
        )
        if result.rowcount:
            marked.append(run.id)
            log.warning("run %s (%s) marked failed: %s", run.id, run.model, reason)
    session.commit()
    return marked


def _same(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


def run_to_record(run: Run) -> dict[str, Any]:
    """A JSON-ready dict of every column: what is written beside a model version."""
    record = {column.name: getattr(run, column.name) for column in Run.__table__.columns}
    for name in _DATETIME_FIELDS:
        if record[name] is not None:
            record[name] = as_utc(record[name]).isoformat()
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


def relabel_run(session: Session, run_id: str, label: str | None) -> Run | None:
    """Set a run's label; None if no run has that id (any more).

    One conditional UPDATE, not load-change-flush: a run deleted by another request after it was
    loaded would make the flush fail with StaleDataError; here it is a plain miss.
    """
    run = session.scalars(
        update(Run).where(Run.id == run_id).values(label=label).returning(Run),
        execution_options={"populate_existing": True},
    ).one_or_none()
    session.commit()
    return run


def delete_run(session: Session, run_id: str) -> bool:
    """Delete a run; False if no run has that id (any more, e.g. a concurrent delete was first).

    One conditional DELETE whose row count answers; deleting a loaded object whose row has gone
    meanwhile would only warn, and report success.
    """
    deleted = session.execute(delete(Run).where(Run.id == run_id)).rowcount
    session.commit()
    return deleted > 0
