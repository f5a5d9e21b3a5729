"""Shared fixtures: settings in a temporary folder, a tiny trained digits model, a client."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import uuid

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app

TEMPLATE_SEED = 7


def make_settings(root, **overrides) -> Settings:
    values = {"MODEL_DIR": root / "models", "DATA_DIR": root / "data", "DEVICE": "cpu"}
    return Settings(**{**values, **overrides})


def synthetic_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten fixed random stroke templates, one per class, with noise: learnable in seconds."""
    templates = np.random.default_rng(TEMPLATE_SEED).random((10, 28, 28)) > 0.8
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = templates[labels].astype(np.float32) * 0.9 + rng.random((count, 28, 28)).astype(np.float32) * 0.1
    return images, labels


def train_args(**overrides) -> argparse.Namespace:
    values = dict(epochs=2, batch_size=32, hidden_units=32, dropout=0.0, learning_rate=0.1,
                  momentum=0.9, max_shift=0, limit=None, seed=1, resume=False, quiet=True)
    return argparse.Namespace(**{**values, **overrides})


def train_tiny_digits(settings: Settings, **overrides) -> int:
    from training.digits import train_on

    data = {"train": synthetic_digits(300, 1), "validation": synthetic_digits(60, 2), "test": synthetic_digits(100, 3)}
    return train_on(data, train_args(**overrides), settings, dataset="synthetic", data_fingerprint="test")


@pytest.fixture(scope="session")
def trained_settings(tmp_path_factory) -> Settings:
    """A store holding one tiny digits model, trained once for the whole session."""
    settings = make_settings(tmp_path_factory.mktemp("trained"))
    train_tiny_digits(settings)
    return settings


@pytest.fixture(scope="session")
def client(trained_settings) -> TestClient:
    with TestClient(create_app(trained_settings)) as test_client:
        yield test_client


def png_bytes(image: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def template_image(label: int) -> bytes:
    """A synthetic 'digit' of class `label` as a PNG, light ink on black like the training data."""
    templates = np.random.default_rng(TEMPLATE_SEED).random((10, 28, 28)) > 0.8
    return png_bytes((templates[label] * 255).astype(np.uint8))


# -- the run registry on every backend ---------------------------------------------------------
PG_SOCKET_DIR = "/var/run/postgresql"


def _psql_as_postgres(sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, timeout=60,
    )


def start_postgres() -> str | None:
    """Start Debian's PostgreSQL cluster and give `root` a superuser role; None if that works, else why not."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        return "PostgreSQL is not installed (no pg_ctlcluster; `apt-get install postgresql`)"
    clusters = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout.split()
    if len(clusters) < 4:
        return "PostgreSQL is installed but has no cluster (pg_lsclusters lists none)"
    version, name, status = clusters[0], clusters[1], clusters[3]
    if os.geteuid() != 0:
        return "the PostgreSQL tests start the server and create a role, which needs root"
    if status != "online":
        started = subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            return f"pg_ctlcluster {version} {name} start failed: {started.stderr.strip()}"
    exists = _psql_as_postgres("SELECT 1 FROM pg_roles WHERE rolname = 'root'")
    if exists.returncode != 0:
        return f"cannot reach PostgreSQL as postgres: {exists.stderr.strip()}"
    if exists.stdout.strip() == "1":
        return None
    created = _psql_as_postgres("CREATE ROLE root SUPERUSER LOGIN")
    if created.returncode != 0 and "already exists" not in created.stderr:  # another session was quicker
        return f"cannot create the role root: {created.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def postgres_schemas():
    """A fresh PostgreSQL test database for the session, and a factory of empty schemas in it,
    each given as a URL whose search_path points there. Skips, saying why, without a server.

    The server is left running afterwards: another test session may be using it.
    """
    reason = start_postgres()
    if reason:
        pytest.skip(reason)
    psycopg = pytest.importorskip("psycopg")
    database = f"labnets_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"host={PG_SOCKET_DIR} dbname=postgres user=root", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    counter = iter(range(1_000_000))

    def new_schema() -> str:
        schema = f"t{next(counter)}"
        with psycopg.connect(f"host={PG_SOCKET_DIR} dbname={database} user=root", autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        return f"postgresql+psycopg://root@/{database}?host={PG_SOCKET_DIR}&options=-csearch_path%3D{schema}"

    yield new_schema
    with psycopg.connect(f"host={PG_SOCKET_DIR} dbname=postgres user=root", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path) -> str:
    """A URL to an empty run registry, once on SQLite and once on PostgreSQL (skipped without one)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.sqlite'}"
    return request.getfixturevalue("postgres_schemas")()
