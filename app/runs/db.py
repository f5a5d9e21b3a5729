"""Engine and schema set-up for the run registry, for SQLite or any SQLAlchemy URL."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATION_LOCK_KEY = 0x6C61626E657473  # "labnets": a PostgreSQL advisory lock id of our own


def make_engine(url: str) -> Engine:
    """An engine whose SQLite connections use WAL, so trainers write while the service reads."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            switch_to_wal(cursor)
            cursor.close()

    return engine


def switch_to_wal(cursor: sqlite3.Cursor, deadline_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
    """WAL mode, which the database file keeps once set. While other processes open a new database
    at the same moment, SQLite can refuse the switch with "database is locked" without waiting on
    the busy timeout, so the switch is retried until the deadline."""
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > give_up:
                raise
            time.sleep(0.05)


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the newest by default); old rows keep their data."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        lock_for_migration(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def lock_for_migration(connection: Connection) -> None:
    """One migrator at a time: the service and trainers starting together on an empty database
    would otherwise all try to create the same tables. The lock lasts until the transaction ends;
    whoever waits then finds the schema already at head."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, waiting up to the busy timeout
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def open_registry(url: str) -> sessionmaker[Session]:
    """Connect, migrate, and return a session factory."""
    engine = make_engine(url)
    upgrade_schema(engine)
    return sessionmaker(engine, expire_on_commit=False)
