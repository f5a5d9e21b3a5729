"""Where versions live on disk, and writing a new one atomically (BentoML-style)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.store.manifest import MANIFEST


def is_version_name(name: str) -> bool:
    """A version folder's name: ASCII digits only ('²' is a digit to `str.isdigit` but not to `int`)."""
    return name.isascii() and name.isdigit()


def version_mark(folder: Path) -> tuple:
    """Size and modification time of each file in a version folder: changes when a file is replaced
    or edited, so a refused version is tried again once it is fixed."""
    try:
        stats = [(entry.name, entry.stat()) for entry in folder.iterdir() if entry.is_file()]
    except OSError:  # the folder went away meanwhile
        return ()
    return tuple(sorted((name, stat.st_size, stat.st_mtime_ns) for name, stat in stats))


def complete_versions(model_dir: Path, name: str) -> list[int]:
    """Version numbers of `name` that are complete; temporary or half-written folders are ignored."""
    root = model_dir / name
    if not root.is_dir():
        return []
    return sorted(
        int(child.name) for child in root.iterdir()
        if is_version_name(child.name) and (child / MANIFEST).is_file()
    )


def model_names(model_dir: Path) -> list[str]:
    if not model_dir.is_dir():
        return []
    return sorted(
        child.name for child in model_dir.iterdir()
        if child.is_dir() and not child.name.startswith(".") and complete_versions(model_dir, child.name)
    )


def version_dir(model_dir: Path, name: str, version: int) -> Path:
    return model_dir / name / str(version)


@contextmanager
def new_version(model_dir: Path, name: str) -> Iterator[tuple[Path, int]]:
    """Yield a temporary folder and the version number it will get; rename it into place on success.

    The folder becomes visible only once complete, so a reader never sees a half-written version;
    on any error it is deleted.
    """
    root = model_dir / name
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(c.name) for c in root.iterdir() if is_version_name(c.name)]
    version = max(taken, default=0) + 1
    staging = root / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        yield staging, version
        if not (staging / MANIFEST).is_file():
            raise RuntimeError(f"version of {name} was written without {MANIFEST}")
        os.rename(staging, root / str(version))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
