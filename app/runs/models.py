"""The `runs` table. Schema changes go through Alembic migrations in `migrations/versions`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A moment in UTC, timezone-aware on the way back from every backend.

    SQLite stores no offset and hands back naive datetimes; without this, the API would
    publish times that are not RFC 3339 date-times and comparisons with `now` would fail.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(moment: datetime | None) -> datetime | None:
    """Aware and in UTC; a naive datetime is taken to be UTC already (how we write them)."""
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One training run: its inputs, its progress epoch by epoch, and the version it produced."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    seed: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset: Mapped[str | None] = mapped_column(String(128))
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64))
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    test_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    device: Mapped[str | None] = mapped_column(String(32))
    library_versions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    artifact_path: Mapped[str | None] = mapped_column(String(512))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    plots: Mapped[list[str]] = mapped_column(JSON, default=list)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    label: Mapped[str | None] = mapped_column(String(128))  # a human name for the run, editable
